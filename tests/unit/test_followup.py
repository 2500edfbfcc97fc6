"""The follow-up decision over tracked nodules: guideline, category, notes, draft, OBX list."""

from __future__ import annotations

from datetime import date

from pacsflow.domain import Finding, InferenceResult, Location, ModelRef, Priority, TriageDecision
from pacsflow.pathways.followup import (
    assess_followup,
    followup_observations,
    followup_report,
    is_chest_prior,
)
from pacsflow.pathways.nodule_tracking import Exam

MODEL = ModelRef(name="pacsflow-nodule", version="3")
SCREENING = "Annual lung cancer screening LDCT"


def _nodule(mean_mm: float, at: tuple[float, float, float], kind: str = "solid") -> Finding:
    volume_mm3 = 3.14159 / 6 * mean_mm**3
    return Finding(
        kind="nodule",
        subtype=kind,
        probability=0.99,
        diameter_mm=mean_mm + 0.5,
        mean_diameter_mm=mean_mm,
        volume_ml=volume_mm3 / 1000.0,
        centroid_mm=at,
        location=Location(side="right", compartment="lung", region="right upper lobe"),
    )


def _exam(uid: str, when: date, *findings: Finding) -> Exam:
    return Exam(study_uid=uid, study_date=when, findings=list(findings))


def test_growing_solid_nodule_in_screening_is_4b_and_urgent() -> None:
    shift = (3.0, -2.0, 15.0)  # the patient lay differently last year
    prior = _exam(
        "1.1", date(2025, 3, 1), _nodule(7.0, (-60 + shift[0], 20 + shift[1], -150 + shift[2]))
    )
    now = _exam("1.2", date(2026, 3, 1), _nodule(9.5, (-60.0, 20.0, -150.0)))
    a = assess_followup(now, [prior], patient_id="P1", indication=SCREENING)
    assert (a.guideline, a.category, a.priority) == ("lung-rads", "4B", Priority.URGENT)
    (finding,) = a.findings
    assert finding.tracking_id and finding.tracking_uid
    assert any(
        n.startswith("Prior 2025-03-01: mean diameter 7.0 mm (+2.5 mm)") for n in finding.notes
    )
    assert any(n.startswith("Volume doubling time") for n in finding.notes)
    assert a.comparison == ["2025-03-01 study 1.1"]
    assert a.follow_up_months is None  # 4B: work-up, not an interval ...
    assert a.due == date(2026, 3, 31)  # ... arranged within 30 days (site policy)


def test_baseline_screening_nodule_gets_an_interval_and_due_date() -> None:
    now = _exam("2.1", date(2026, 1, 31), _nodule(7.0, (-60.0, 20.0, -150.0)))
    a = assess_followup(now, [], patient_id="P2", indication=SCREENING)
    assert (a.category, a.follow_up_months, a.due) == ("3", 6, date(2026, 7, 31))
    assert a.findings[0].notes == ["Baseline"]
    report = followup_report(
        InferenceResult(
            study_uid="2.1",
            series_uid="2.1.1",
            model=MODEL,
            study_probability=0.99,
            findings=a.findings,
        ),
        TriageDecision(priority=a.priority, reasons=a.reasons),
        a,
    )
    assert "Lung-RADS 3" in report and "Comparison: none" in report
    assert "Next exam due: 2026-07-31." in report


def test_incidental_nodule_follows_fleischner_and_obx_carry_the_sizes() -> None:
    now = _exam("3.1", date(2026, 1, 10), _nodule(7.0, (-60.0, 20.0, -150.0)))
    a = assess_followup(now, [], patient_id="P3", indication="Cough, rule out pneumonia")
    assert a.guideline == "fleischner" and a.category is None
    assert a.follow_up_months == 6 and a.due == date(2026, 7, 10)
    result = InferenceResult(
        study_uid="3.1",
        series_uid="3.1.1",
        model=MODEL,
        study_probability=0.99,
        findings=a.findings,
    )
    obx = followup_observations(result, TriageDecision(priority=a.priority), a)
    codes = [o.identifier.code for o in obx]
    assert codes == ["TRIAGE", "RECOMMEND", "NEXTEXAM", "NODDIAM"]
    assert obx[-1].value == 7.0 and obx[-1].units == "mm"


def test_priors_are_chest_studies_or_undescribed() -> None:
    assert is_chest_prior({"description": "CT THORAX LOW DOSE"})
    assert is_chest_prior({"description": ""})
    assert not is_chest_prior({"description": "CT Head w/o"})
