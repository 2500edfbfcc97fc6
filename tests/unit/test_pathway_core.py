"""Series selection, header validation, triage decisions, audit chain: pure logic."""

from __future__ import annotations

from pathlib import Path

import pytest

from pacsflow.config.settings import TriageSettings
from pacsflow.db.session import make_engine, make_sessionmaker, upgrade
from pacsflow.db.tables import AuditEntry
from pacsflow.domain import Finding, InferenceResult, ModelRef, Priority
from pacsflow.governance.audit import AuditLog
from pacsflow.pathways.headers import InstanceHeader
from pacsflow.pathways.series_selection import HEAD_SERIES, select_series
from pacsflow.pathways.triage import decide
from pacsflow.pathways.validation import CHEST_CT_SUITE, validate_headers

AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def _series(
    uid: str,
    n: int,
    *,
    desc: str,
    kernel: str = "STANDARD",
    thickness: float = 5.0,
    localizer: bool = False,
    contrast: str = "",
    body: str = "HEAD",
    orientation: list[float] | None = None,
) -> list[InstanceHeader]:
    return [
        InstanceHeader(
            study_uid="1.2",
            series_uid=uid,
            sop_uid=f"{uid}.{i}",
            modality="CT",
            image_type=["ORIGINAL", "PRIMARY", "LOCALIZER" if localizer else "AXIAL"],
            series_description=desc,
            kernel=kernel,
            slice_thickness=thickness,
            orientation=orientation or AXIAL,
            position=[0.0, 0.0, thickness * i],
            pixel_spacing=[0.45, 0.45],
            contrast_agent=contrast,
            body_part=body,
        )
        for i in range(n)
    ]


def test_selects_soft_tissue_axial_series_near_target_thickness() -> None:
    headers = (
        _series("1.1", 1, desc="Scout", localizer=True, orientation=[0, 1, 0, 0, 0, -1])
        + _series("1.2", 36, desc="Head 5mm", kernel="H31s")
        + _series("1.3", 36, desc="Head 5mm bone", kernel="H70h")
        + _series("1.4", 150, desc="Head 1.25mm", kernel="H31s", thickness=1.25)
    )
    choice = select_series(headers)
    assert choice.series_uid == "1.2"
    assert "localizer" in choice.rejected["1.1"]
    assert "bone" in choice.rejected["1.3"]
    assert "further from the target" in choice.rejected["1.4"]
    assert "36 slices" in choice.explain()


def test_the_head_rule_reads_the_thinnest_soft_tissue_series_else_the_5_mm_one() -> None:
    thick = _series("1.2", 36, desc="Head 5mm", kernel="H31s")
    bone = _series("1.3", 300, desc="Head 0.6mm bone", kernel="H70h", thickness=0.6)
    thin = _series("1.4", 150, desc="Head 1.25mm", kernel="H31s", thickness=1.25)
    assert select_series(thick + bone + thin, HEAD_SERIES).series_uid == "1.4"
    only_thick = select_series(thick + bone, HEAD_SERIES)
    assert only_thick.series_uid == "1.2" and "bone" in only_thick.rejected["1.3"]


def test_no_eligible_series_is_explained() -> None:
    choice = select_series(_series("1.1", 1, desc="Scout", localizer=True))
    assert choice.series_uid is None and choice.reasons


def test_validation_passes_a_plain_head_ct_and_names_each_failure() -> None:
    assert validate_headers(_series("1.2", 36, desc="Head 5mm")).passed
    contrast = validate_headers(_series("1.2", 36, desc="CTA head", contrast="Omnipaque 350"))
    assert not contrast.passed and any("contrast" in r for r in contrast.reasons)
    chest = validate_headers(_series("1.2", 36, desc="Thorax", body="CHEST"))
    assert any("head" in r for r in chest.reasons)
    inferred = validate_headers(_series("1.2", 36, desc="Routine BRAIN", body=""))
    assert inferred.passed  # body part missing, inferred from the description
    thick = validate_headers(_series("1.2", 20, desc="Head", thickness=10.0))
    assert any("thickness" in r for r in thick.reasons)


def test_chest_suite_accepts_contrast_and_thin_slices_but_not_a_head() -> None:
    chest = _series("1.2", 200, desc="Thorax 1.25", body="CHEST", thickness=1.25)
    assert validate_headers(chest, CHEST_CT_SUITE).passed
    enhanced = _series("1.2", 200, desc="CT chest", body="", thickness=1.25, contrast="Iomeron")
    assert validate_headers(enhanced, CHEST_CT_SUITE).passed  # region from the description
    head = validate_headers(_series("1.2", 200, desc="Head", thickness=1.25), CHEST_CT_SUITE)
    assert head.reasons == ["body part is not chest and cannot be inferred from the descriptions"]
    thick = validate_headers(_series("1.2", 40, desc="Chest", body="CHEST"), CHEST_CT_SUITE)
    assert any("thickness" in r for r in thick.reasons)


MODEL = ModelRef(name="pacsflow-ich", version="1")


def _result(p: float, volume: float | None) -> InferenceResult:
    findings = (
        [] if volume is None else [Finding(kind="hemorrhage", probability=p, volume_ml=volume)]
    )
    return InferenceResult(
        study_uid="1", series_uid="2", model=MODEL, study_probability=p, findings=findings
    )


@pytest.mark.parametrize(
    ("p", "volume", "expected"),
    [
        (0.97, 25.0, Priority.CRITICAL),
        (0.95, 0.4, Priority.URGENT),
        (0.55, 0.4, Priority.REVIEW),
        (0.10, None, Priority.ROUTINE),
    ],
)
def test_triage_thresholds(p: float, volume: float | None, expected: Priority) -> None:
    assert decide(_result(p, volume), TriageSettings()).priority == expected


def test_audit_chain_detects_edit_and_delete(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    upgrade(url)
    sessions = make_sessionmaker(make_engine(url))
    log = AuditLog(sessions)
    for i in range(4):
        log.append("user:dr.a", "result.view", f"study-{i}", {"n": i})
    assert log.verify() == []
    with sessions() as s:
        s.get(AuditEntry, 2).detail = {"n": 99}
        s.commit()
    assert any("entry 2" in p and "edited" in p for p in log.verify())
    with sessions() as s:
        s.get(AuditEntry, 2).detail = {"n": 1}
        s.delete(s.get(AuditEntry, 3))
        s.commit()
    problems = log.verify()
    assert any("missing" in p for p in problems)
