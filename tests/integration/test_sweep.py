"""Archive sweeps against a real Orthanc: every study once, filters, interrupt and resume."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid

from pacsflow.config import Settings
from pacsflow.dicom.dicomweb import Archive
from pacsflow.errors import ConfigError
from pacsflow.pathways.sweep import (
    SweepProgress,
    SweepSpec,
    SweepStudy,
    checkpoint_path,
    load_checkpoint,
    reset_sweep,
    sweep_studies,
)
from pacsflow.synth.population import screening_population
from pacsflow.testing.dicom_factory import tiny_ct

pytestmark = [pytest.mark.orthanc]

# Dates no other test uses, so the sweeps see only the studies stored here.
FIRST = date(1997, 3, 1)
LAST = date(1997, 3, 7)  # 1997-03-04 stays empty: an empty window
DATES = [FIRST + timedelta(days=d) for d in (0, 1, 2, 4, 5, 6)]
KINDS = [  # (modality, description, body part)
    ("CT", "CT CHEST LOW DOSE SCREENING", "CHEST"),
    ("CT", "CT HEAD W/O CONTRAST", "HEAD"),
    ("CT", "Chest CT w/o", ""),  # body part left empty, as some sites do
    ("MR", "MR BRAIN", "HEAD"),
    ("CT", "CT ABDOMEN PELVIS", "ABDOMEN"),
]


@dataclass(frozen=True)
class Stored:
    uid: str
    day: date
    modality: str
    description: str
    body_part: str


@pytest.fixture(scope="module")
def stored(orthanc: Settings) -> list[Stored]:
    """30 one-slice studies over 6 of 7 days, 5 per day, stored by STOW-RS."""
    archive = Archive(orthanc.orthanc)
    studies, datasets = [], []
    for d, day in enumerate(DATES):
        for k, (modality, description, body_part) in enumerate(KINDS):
            uid = generate_uid()
            ds = tiny_ct(
                study_uid=uid,
                series_uid=generate_uid(),
                index=0,
                patient_id=f"SWEEP-{d}-{k}",
                accession=f"SW{d}{k}",
                sop_class_uid=MRImageStorage if modality == "MR" else CTImageStorage,
            )
            ds.StudyDate = f"{day:%Y%m%d}"
            ds.Modality = modality
            ds.StudyDescription = description
            ds.BodyPartExamined = body_part
            datasets.append(ds)
            studies.append(Stored(uid, day, modality, description, body_part))
    archive.store(datasets)
    return studies


@pytest.fixture(scope="module")
def archive(orthanc: Settings) -> Archive:
    return Archive(orthanc.orthanc)


def spec(name: str, **kw: object) -> SweepSpec:
    values: dict[str, object] = {"name": name, "start": FIRST, "end": LAST, "page_size": 2}
    values.update(kw)
    return SweepSpec.model_validate(values)


def uids(studies: list[SweepStudy]) -> list[str]:
    return [s.study_uid for s in studies]


def test_every_study_is_yielded_once(
    archive: Archive, stored: list[Stored], tmp_path: Path
) -> None:
    progress: list[SweepProgress] = []
    got = list(sweep_studies(archive, spec("all"), tmp_path, on_progress=progress.append))
    assert sorted(uids(got)) == sorted(s.uid for s in stored)
    by_uid = {s.uid: s for s in stored}
    for study in got:
        assert study.study_date == by_uid[study.study_uid].day
        assert study.modalities == (by_uid[study.study_uid].modality,)
        assert study.patient_id and study.patient_id.startswith("SWEEP-")
    last = progress[-1]
    assert (last.done, last.estimated_total, last.yielded) == (30, 30, 30)
    assert last.days_done == last.days_total == 7
    assert [p.done for p in progress] == sorted(p.done for p in progress)
    # Finished: running it again yields nothing.
    assert list(sweep_studies(archive, spec("all"), tmp_path)) == []
    checkpoint = load_checkpoint(tmp_path, "all")
    assert checkpoint is not None and checkpoint.window_start == LAST + timedelta(days=1)
    assert [p.name for p in tmp_path.iterdir()] == ["all.json"]  # no temp file left


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"modality": "CT"}, lambda s: s.modality == "CT"),
        ({"modality": "MR"}, lambda s: s.modality == "MR"),
        ({"description_pattern": r"chest"}, lambda s: "chest" in s.description.lower()),
        ({"body_parts": frozenset({"chest"})}, lambda s: s.body_part == "CHEST"),
        (
            {"modality": "CT", "body_parts": frozenset({"HEAD", "ABDOMEN"})},
            lambda s: s.modality == "CT" and s.body_part in ("HEAD", "ABDOMEN"),
        ),
        (
            {"modality": "CT", "description_pattern": r"^ct (chest|head)\b"},
            lambda s: s.description.startswith(("CT CHEST", "CT HEAD")),
        ),
    ],
    ids=["ct", "mr", "chest-description", "chest-body-part", "ct-head-or-abdomen", "regex"],
)
def test_filters(
    archive: Archive,
    stored: list[Stored],
    tmp_path: Path,
    filters: dict[str, object],
    expected: object,
) -> None:
    want = sorted(s.uid for s in stored if expected(s))  # type: ignore[operator]
    assert want, "the filter should select something"
    got = list(sweep_studies(archive, spec("filtered", window_days=3, **filters), tmp_path))
    assert sorted(uids(got)) == want
    if "body_parts" in filters:
        assert all(study.body_parts for study in got)


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("processed", [0, 1, 9, 10, 11, 29])
def test_interrupted_sweep_resumes_with_exactly_the_rest(
    archive: Archive, stored: list[Stored], tmp_path: Path, processed: int
) -> None:
    handled: list[str] = []
    with pytest.raises(Interrupted):
        for study in sweep_studies(archive, spec("resume"), tmp_path):
            if len(handled) == processed:
                raise Interrupted  # dies holding a study it has not processed
            handled.append(study.study_uid)
    rest = uids(list(sweep_studies(archive, spec("resume"), tmp_path)))
    assert len(handled) == processed
    assert not set(handled) & set(rest)
    assert sorted(handled + rest) == sorted(s.uid for s in stored)
    assert len(rest) == len(set(rest))


def test_resume_mid_window_with_another_page_size(
    archive: Archive, stored: list[Stored], tmp_path: Path
) -> None:
    handled = []
    for study in sweep_studies(archive, spec("pages", page_size=2), tmp_path):
        handled.append(study.study_uid)
        if len(handled) == 3:
            break  # the third was processed, but never acknowledged: it comes again
    checkpoint = load_checkpoint(tmp_path, "pages")
    assert checkpoint is not None
    assert checkpoint.window_start == FIRST and len(checkpoint.done_in_window) == 2
    assert checkpoint.offset == 2
    rest = uids(list(sweep_studies(archive, spec("pages", page_size=50), tmp_path)))
    assert rest[0] == handled[2]
    assert sorted(handled[:2] + rest) == sorted(s.uid for s in stored)


def test_skip_predicate(archive: Archive, stored: list[Stored], tmp_path: Path) -> None:
    already = {s.uid for s in stored if s.modality == "MR"}
    progress: list[SweepProgress] = []
    got = uids(
        list(
            sweep_studies(
                archive,
                spec("skip"),
                tmp_path,
                skip=lambda study: study.study_uid in already,
                on_progress=progress.append,
            )
        )
    )
    assert sorted(got) == sorted(s.uid for s in stored if s.uid not in already)
    assert (progress[-1].yielded, progress[-1].skipped, progress[-1].done) == (24, 6, 30)


def test_end_may_grow_but_the_selection_may_not_change(
    archive: Archive, stored: list[Stored], tmp_path: Path
) -> None:
    early = uids(list(sweep_studies(archive, spec("nightly", end=DATES[2]), tmp_path)))
    assert sorted(early) == sorted(s.uid for s in stored if s.day <= DATES[2])
    later = uids(list(sweep_studies(archive, spec("nightly"), tmp_path)))
    assert sorted(later) == sorted(s.uid for s in stored if s.day > DATES[2])
    with pytest.raises(ConfigError, match="another selection"):
        next(sweep_studies(archive, spec("nightly", modality="CT"), tmp_path))
    reset_sweep(tmp_path, "nightly")
    assert len(list(sweep_studies(archive, spec("nightly", modality="CT"), tmp_path))) == 24


def test_checkpoint_is_plain_json(archive: Archive, stored: list[Stored], tmp_path: Path) -> None:
    sweep = sweep_studies(archive, spec("json"), tmp_path)
    next(sweep)
    next(sweep)  # acknowledges the first
    data = json.loads(checkpoint_path(tmp_path, "json").read_text())
    assert data["sweep"] == "json" and data["window_start"] == FIRST.isoformat()
    assert len(data["done_in_window"]) == 1 and data["yielded"] == 1
    sweep.close()


def test_corrupt_checkpoint_is_refused(archive: Archive, tmp_path: Path) -> None:
    checkpoint_path(tmp_path, "broken").write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable"):
        next(sweep_studies(archive, spec("broken"), tmp_path))


def test_sweep_finds_the_screening_population_chest_cts(archive: Archive, tmp_path: Path) -> None:
    population = screening_population(20, seed=9, as_of=date(2026, 6, 1))
    truths = population.write_studies(tmp_path / "studies")
    archive.store([pydicom.dcmread(f) for f in sorted((tmp_path / "studies").rglob("*.dcm"))])
    days = [p.study_date for p in population.patients]
    chest = spec(
        "population", start=min(days), end=max(days), window_days=60, page_size=10, modality="CT"
    )
    got = [
        s
        for s in sweep_studies(archive, chest, tmp_path)
        if s.patient_id and s.patient_id.startswith("SCR9-")  # the archive is shared
    ]
    assert sorted(uids(got)) == sorted(t.study_uid for t in truths)
