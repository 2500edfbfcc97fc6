"""Archive sweep: walk the archive's studies by QIDO-RS, window by window, resumable.

A sweep covers StudyDate ``start`` .. ``end`` (inclusive) in windows of ``window_days``
days, oldest first. Within a window it pages QIDO-RS with ``limit``/``offset`` (PS3.18
8.3.4.4) until the archive answers an empty page, so an archive that silently caps a page
loses nothing. Filters are applied here, on the study results: the modality against
ModalitiesInStudy (Orthanc 1.10 with DICOMweb 1.7 answers nothing past offset 0 when
``ModalitiesInStudy`` is a query key, so sending it would lose studies), the study
description pattern (a regular expression, case-insensitive) because wildcards sent through
dicomweb-client reach Orthanc percent-encoded and match nothing; body parts need one
series-level QIDO per candidate study (BodyPartExamined is a series attribute), so they are
asked last.

Checkpoint: ``<checkpoint_dir>/<name>.json``, rewritten atomically (temp file, fsync,
rename, fsync of the directory) after every study handled. It holds the first window not yet
completed, the QIDO offset reached in it and the UIDs already handled in it. A study counts
as handled once it was skipped (the ``skip`` predicate said so) or once the consumer asks for
the next study after it: a consumer killed or raising while it holds a study gets that study
again on the next run. Resuming re-reads the unfinished window from offset 0 and leaves out
the UIDs handled, which stays right when the archive's order changes between runs.

The checkpoint remembers the selection (start, modality, pattern, body parts); resuming
with a different selection under the same name is refused. ``end`` may grow: a sweep run
nightly with ``end`` = yesterday continues with the new days. Known limits: a study stored
later with a StudyDate in an already completed window is not seen by that sweep; studies
without a StudyDate match no date range and are never swept.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pacsflow.dicom.dicomweb import Archive
from pacsflow.durable import replace_durably
from pacsflow.errors import ConfigError, InvalidInputError

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1
_STUDY_FIELDS = ("StudyDescription", "ModalitiesInStudy", "NumberOfStudyRelatedInstances")


class QidoSource(Protocol):
    """The QIDO-RS queries a sweep needs (any DICOMweb archive)."""

    def search_studies(self, **filters: Any) -> list[dict[str, Any]]: ...

    def search_series(self, study_uid: str, fields: Sequence[str] = ()) -> list[dict[str, Any]]: ...


class ArchiveQido:
    """`QidoSource` over pacsflow's `Archive`, with its transient/permanent error mapping."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive

    def search_studies(self, **filters: Any) -> list[dict[str, Any]]:
        return self.archive.search_studies(**filters)

    def search_series(self, study_uid: str, fields: Sequence[str] = ()) -> list[dict[str, Any]]:
        # Archive.search_series takes no includefield; BodyPartExamined is not a default
        # series return attribute (PS3.18 Table 6.7.1-2a), so ask for it explicitly.
        return self.archive._call(  # type: ignore[no-any-return]
            "QIDO series",
            self.archive.client.search_for_series,
            study_instance_uid=study_uid,
            fields=list(fields) or None,
        )


class SweepSpec(BaseModel):
    """Which studies a sweep visits, and how it pages."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    start: date
    end: date
    window_days: int = Field(1, ge=1, le=366)
    page_size: int = Field(100, ge=1, le=10_000)
    modality: str | None = Field(None, pattern=r"^[A-Z0-9]{1,16}$")
    description_pattern: str | None = None
    body_parts: frozenset[str] | None = None

    @field_validator("description_pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @field_validator("body_parts")
    @classmethod
    def _upper(cls, value: frozenset[str] | None) -> frozenset[str] | None:
        return None if value is None else frozenset(v.strip().upper() for v in value)

    @model_validator(mode="after")
    def _ordered(self) -> SweepSpec:
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self

    def selection_fingerprint(self) -> str:
        """What a checkpoint must agree on to be resumed (not end, window or page size)."""
        chosen = {
            "start": self.start.isoformat(),
            "modality": self.modality,
            "description_pattern": self.description_pattern,
            "body_parts": sorted(self.body_parts) if self.body_parts is not None else None,
        }
        return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:16]


class SweepStudy(BaseModel):
    """One study a sweep hands out: identifiers and what the filters looked at, no PHI."""

    model_config = ConfigDict(frozen=True)

    study_uid: str
    patient_id: str | None = None
    accession_number: str | None = None
    study_date: date | None = None
    study_description: str = ""
    modalities: tuple[str, ...] = ()
    body_parts: tuple[str, ...] = ()  # filled only when the sweep filters on body part
    number_of_instances: int | None = None


class SweepCheckpoint(BaseModel):
    version: int = CHECKPOINT_VERSION
    sweep: str
    selection: str
    window_start: date  # first window not yet completed
    offset: int = 0  # QIDO results of that window read so far (matching or not)
    done_in_window: list[str] = Field(default_factory=list)
    matched_in_completed: int = 0  # studies that passed the filters in completed windows
    yielded: int = 0
    skipped: int = 0
    updated_at: datetime


class SweepProgress(BaseModel):
    """``done`` of an ``estimated_total`` matching studies (extrapolated from days swept)."""

    sweep: str
    done: int
    estimated_total: int
    yielded: int
    skipped: int
    days_done: int
    days_total: int
    window_start: date


# ---- checkpoint file ---------------------------------------------------------------------


def checkpoint_path(checkpoint_dir: Path, name: str) -> Path:
    return Path(checkpoint_dir) / f"{name}.json"


def load_checkpoint(checkpoint_dir: Path, name: str) -> SweepCheckpoint | None:
    path = checkpoint_path(checkpoint_dir, name)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        checkpoint = SweepCheckpoint.model_validate_json(raw)
    except ValidationError as exc:
        raise ConfigError(f"sweep checkpoint {path} is unreadable: {exc}") from None
    if checkpoint.version != CHECKPOINT_VERSION:
        raise ConfigError(f"sweep checkpoint {path} has version {checkpoint.version}")
    return checkpoint


def save_checkpoint(checkpoint_dir: Path, checkpoint: SweepCheckpoint) -> None:
    """A crash leaves the old or the new checkpoint, never a torn one."""
    path = checkpoint_path(Path(checkpoint_dir), checkpoint.sweep)
    replace_durably(path, checkpoint.model_dump_json(indent=1).encode())


def reset_sweep(checkpoint_dir: Path, name: str) -> None:
    """Forget a sweep's progress: the next run starts again from its start date."""
    with contextlib.suppress(FileNotFoundError):
        checkpoint_path(checkpoint_dir, name).unlink()


# ---- DICOM JSON --------------------------------------------------------------------------


def _values(item: dict[str, Any], tag: str) -> list[Any]:
    return list((item.get(tag) or {}).get("Value") or [])


def _first(item: dict[str, Any], tag: str) -> Any:
    values = _values(item, tag)
    return values[0] if values else None


def _da(value: Any) -> date | None:
    try:
        return datetime.strptime(str(value)[:8], "%Y%m%d").date() if value else None
    except ValueError:
        return None


def study_from_qido(item: dict[str, Any]) -> SweepStudy:
    """A SweepStudy from one QIDO-RS study result (DICOM JSON, PS3.18 F.2)."""
    uid = _first(item, "0020000D")
    if not uid:
        raise InvalidInputError("QIDO study result without StudyInstanceUID")
    count = _first(item, "00201208")
    return SweepStudy(
        study_uid=str(uid),
        patient_id=_first(item, "00100020"),
        accession_number=_first(item, "00080050"),
        study_date=_da(_first(item, "00080020")),
        study_description=str(_first(item, "00081030") or ""),
        modalities=tuple(str(m) for m in _values(item, "00080061")),
        number_of_instances=int(count) if count is not None else None,
    )


def _da_range(first: date, last: date) -> str:
    return f"{first:%Y%m%d}-{last:%Y%m%d}"


# ---- the sweep ---------------------------------------------------------------------------


def _matches_header(spec: SweepSpec, pattern: re.Pattern[str] | None, study: SweepStudy) -> bool:
    if spec.modality and spec.modality not in study.modalities:
        return False
    return pattern is None or bool(pattern.search(study.study_description))


def _with_body_parts(source: QidoSource, study: SweepStudy) -> SweepStudy:
    series = source.search_series(study.study_uid, fields=["BodyPartExamined"])
    parts = sorted({str(p).upper() for s in series for p in _values(s, "00180015") if p})
    return study.model_copy(update={"body_parts": tuple(parts)})


def sweep_studies(
    source: QidoSource | Archive,
    spec: SweepSpec,
    checkpoint_dir: Path,
    *,
    skip: Callable[[SweepStudy], bool] | None = None,
    on_progress: Callable[[SweepProgress], None] | None = None,
) -> Iterator[SweepStudy]:
    """Every matching study in ``spec``'s date range once, resuming from the checkpoint.

    ``skip(study)`` True: the study is recorded as handled and not yielded (e.g. already
    processed by the same model version). ``on_progress`` is called after each study and
    each window. Archive errors propagate (PeerUnavailableError: retry later, the
    checkpoint keeps the place).
    """
    qido: QidoSource = ArchiveQido(source) if isinstance(source, Archive) else source
    selection = spec.selection_fingerprint()
    checkpoint = load_checkpoint(checkpoint_dir, spec.name)
    if checkpoint is None:
        checkpoint = SweepCheckpoint(
            sweep=spec.name,
            selection=selection,
            window_start=spec.start,
            updated_at=datetime.now(UTC),
        )
    elif checkpoint.selection != selection:
        raise ConfigError(
            f"sweep {spec.name!r} has a checkpoint for another selection of studies; "
            "reset it or give this sweep another name"
        )
    pattern = re.compile(spec.description_pattern, re.I) if spec.description_pattern else None
    days_total = (spec.end - spec.start).days + 1

    def save() -> None:
        checkpoint.updated_at = datetime.now(UTC)
        save_checkpoint(checkpoint_dir, checkpoint)

    def report() -> None:
        if on_progress is None:
            return
        days_done = (checkpoint.window_start - spec.start).days
        done = checkpoint.yielded + checkpoint.skipped
        estimate = (
            round(checkpoint.matched_in_completed * days_total / days_done) if days_done else 0
        )
        on_progress(
            SweepProgress(
                sweep=spec.name,
                done=done,
                estimated_total=max(estimate, done),
                yielded=checkpoint.yielded,
                skipped=checkpoint.skipped,
                days_done=min(days_done, days_total),
                days_total=days_total,
                window_start=checkpoint.window_start,
            )
        )

    while checkpoint.window_start <= spec.end:
        first = checkpoint.window_start
        last = min(spec.end, first + timedelta(days=spec.window_days - 1))
        done = set(checkpoint.done_in_window)
        matched = len(done)
        seen: set[str] = set()
        offset = 0
        while True:
            filters: dict[str, Any] = {
                "StudyDate": _da_range(first, last),
                "limit": spec.page_size,
                "offset": offset,
                "includefield": list(_STUDY_FIELDS),
            }
            page = qido.search_studies(**filters)
            if not page:
                break
            for position, item in enumerate(page, start=offset + 1):
                study = study_from_qido(item)
                if study.study_uid in seen or study.study_uid in done:
                    continue
                seen.add(study.study_uid)
                if not _matches_header(spec, pattern, study):
                    continue
                if spec.body_parts is not None:
                    study = _with_body_parts(qido, study)
                    if not spec.body_parts.intersection(study.body_parts):
                        continue
                matched += 1
                if skip is not None and skip(study):
                    checkpoint.skipped += 1
                else:
                    yield study  # the consumer asking for the next one acknowledges it
                    checkpoint.yielded += 1
                done.add(study.study_uid)
                checkpoint.done_in_window.append(study.study_uid)
                checkpoint.offset = max(checkpoint.offset, position)
                save()
                report()
            offset += len(page)
        checkpoint.matched_in_completed += matched
        checkpoint.window_start = last + timedelta(days=1)
        checkpoint.offset = 0
        checkpoint.done_in_window = []
        save()
        report()
        log.info("sweep %s: window %s..%s done (%d matching)", spec.name, first, last, matched)
