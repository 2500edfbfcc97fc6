"""The lung-nodule follow-up decision: track nodules over the exams, apply the guideline that
fits the order, and say it in words (draft report, ORU observations, SR comparison lines).

Pure: the flow gives it the findings of the current exam and of the priors it could read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from pacsflow.domain import Finding, InferenceResult, Priority, TriageDecision
from pacsflow.hl7.records import CodedValue, Observation
from pacsflow.hl7.tables import AbnormalFlag
from pacsflow.pathways.lungrads import (
    choose_guideline,
    fleischner,
    lungrads,
    next_exam_due,
)
from pacsflow.pathways.nodule_tracking import Exam, TrackedNodule, track_history
from pacsflow.pathways.series_selection import SelectionRules
from pacsflow.pathways.validation import CHEST_DESCRIPTION

__all__ = ["CHEST_SERIES", "Exam", "FollowupAssessment", "assess_followup"]

# Thin soft-tissue axials: the nodule model reads 1.5 mm voxels; sharp (lung) kernels are
# left out as the stroke pathway leaves out bone kernels.
CHEST_SERIES = SelectionRules(target_thickness_mm=1.25, min_instances=20)

# Lung-RADS categories whose management is a diagnostic work-up: urgent on the worklist.
URGENT_CATEGORIES = {"4B", "4X"}
ACTIONABLE_CATEGORIES = {"3", "4A", "4B", "4X"}
WORKUP_DUE_DAYS = 30
SCREENING_HIGH_RISK = re.compile(r"(?i)\b(high[- ]risk|smok\w*|pack[- ]?years?)\b")


def is_chest_prior(prior: dict[str, str]) -> bool:
    """A prior study worth comparing: a chest CT by its description (or no description,
    when the series check of the prior decides)."""
    text = prior.get("description", "")
    return not text or bool(CHEST_DESCRIPTION.search(text))


@dataclass
class FollowupAssessment:
    guideline: str  # "lung-rads" | "fleischner" | "none"
    category: str | None  # Lung-RADS category; None under Fleischner
    recommendation: str
    follow_up_months: int | None
    due: date | None
    priority: Priority
    reasons: list[str]
    findings: list[Finding]  # the current exam's findings with tracking and comparison notes
    nodules: list[TrackedNodule] = field(default_factory=list)
    comparison: list[str] = field(default_factory=list)  # one line per prior compared


def _notes(nodule: TrackedNodule) -> list[str]:
    notes = []
    first, previous = nodule.first_seen, nodule.previous
    if previous is None:
        notes.append("New since the prior exam" if nodule.has_priors else "Baseline")
        return notes
    notes.append(
        f"Prior {previous.study_date.isoformat()}: mean diameter "
        f"{previous.mean_diameter_mm:.1f} mm ({nodule.diameter_change_mm:+.1f} mm)"
    )
    since_first = nodule.growth_vs_first
    if since_first is not None and first is not previous:
        notes.append(
            f"Mean diameter change since {first.study_date.isoformat()}: "
            f"{since_first.mean_diameter_change_mm:+.1f} mm"
        )
    if nodule.volume_change_pct is not None:
        notes.append(
            f"Volume change since {first.study_date.isoformat()}: {nodule.volume_change_pct:+.0f}%"
        )
    if nodule.doubling_time_days is not None:
        notes.append(f"Volume doubling time: {nodule.doubling_time_days:.0f} days")
    else:
        notes.append("No measurable growth")
    return notes


def assess_followup(
    current: Exam,
    priors: Sequence[Exam],
    *,
    patient_id: str,
    indication: str | None,
    age_years: int | None = None,
    workup_due_days: int = WORKUP_DUE_DAYS,
) -> FollowupAssessment:
    """``workup_due_days``: when a category calls for a diagnostic work-up instead of a
    follow-up CT (Lung-RADS 4B/4X give no interval), the coordinator's Task is due this many
    days after the exam: a site policy, not part of Lung-RADS."""
    exams = sorted([*priors, current], key=lambda e: e.study_date)
    tracked = track_history(exams, patient_id=patient_id)
    findings = []
    for nodule in tracked:
        if nodule.current is None:
            continue  # seen before, not now: resolved, nothing to report on
        findings.append(
            nodule.current.finding.model_copy(
                update={
                    "tracking_id": nodule.tracking_id,
                    "tracking_uid": nodule.tracking_uid,
                    "notes": _notes(nodule),
                }
            )
        )
    comparison = [
        f"{p.study_date.isoformat()} study {p.study_uid}"
        for p in sorted(priors, key=lambda e: e.study_date, reverse=True)
    ]
    states = [n.state for n in tracked if n.current is not None]
    guideline = choose_guideline(indication, age_years=age_years)
    reasons: list[str] = []
    if guideline == "lung-rads":
        result = lungrads(states, baseline=not priors)
        category: str | None = result.category
        recommendation, months = result.recommendation, result.follow_up_months
        reasons = [f"Lung-RADS {result.category}", *result.reasons]
        priority = Priority.URGENT if result.category in URGENT_CATEGORIES else Priority.ROUTINE
    elif guideline == "fleischner":
        high_risk = bool(indication and SCREENING_HIGH_RISK.search(indication))
        advice = fleischner(states, high_risk=high_risk)
        category = None
        recommendation = advice.recommendation
        months = advice.follow_up_months_range[0] if advice.follow_up_months_range else None
        reasons = ["Fleischner 2017 (incidental nodule)", *advice.reasons]
        priority = Priority.ROUTINE
    else:
        category, recommendation, months = None, "no nodule guideline applies", None
        reasons = ["no nodule guideline applies to this patient or indication"]
        priority = Priority.ROUTINE
    due = next_exam_due(current.study_date, months) if months else None
    if due is None and category in URGENT_CATEGORIES:
        due = current.study_date + timedelta(days=workup_due_days)
        reasons.append(f"work-up to be arranged within {workup_due_days} days (site policy)")
    return FollowupAssessment(
        guideline=guideline,
        category=category,
        recommendation=recommendation,
        follow_up_months=months,
        due=due,
        priority=priority,
        reasons=reasons,
        findings=findings,
        nodules=tracked,
        comparison=comparison,
    )


def followup_report(
    result: InferenceResult | None,
    decision: TriageDecision,
    assessment: FollowupAssessment | None,
) -> str:
    """The preliminary draft: findings, comparison with dates, category, recommendation."""
    lines = ["AI-GENERATED PRELIMINARY RESULT - to be confirmed by a radiologist."]
    if result is None or assessment is None:
        lines.append("Study not analysed: " + "; ".join(decision.reasons))
        return "\n".join(lines)
    if assessment.category is not None:
        lines.append(f"Lung-RADS {assessment.category}: {assessment.recommendation}")
    else:
        lines.append(f"Recommendation: {assessment.recommendation}")
    lines.append(
        "Comparison: " + ("; ".join(assessment.comparison) if assessment.comparison else "none")
    )
    if not assessment.findings:
        lines.append("No lung nodule detected by the algorithm.")
    for f in assessment.findings:
        size = f"{f.mean_diameter_mm:.1f} mm" if f.mean_diameter_mm is not None else "size n/a"
        where = f.location.region or f.location.side or "location not determined"
        lines.append(
            f"Nodule {f.tracking_id}: {f.subtype or 'nodule'}, mean diameter {size}, {where}. "
            + " ".join(n.rstrip(".") + "." for n in f.notes)
        )
    if assessment.due is not None:
        lines.append(f"Next exam due: {assessment.due.isoformat()}.")
    lines.append(f"Algorithm: {result.model.name} version {result.model.version}.")
    return "\n".join(lines)


def followup_observations(
    result: InferenceResult | None,
    decision: TriageDecision,
    assessment: FollowupAssessment | None,
) -> list[Observation]:
    """OBX list of the ORU: category, recommendation, due date, then per nodule its size."""
    actionable = assessment is not None and assessment.category in ACTIONABLE_CATEGORIES
    flag = AbnormalFlag.ABNORMAL if actionable else AbnormalFlag.NORMAL
    obs = [
        Observation(
            identifier=CodedValue(code="TRIAGE", text="AI triage priority", system="L"),
            value_type="ST",
            value=decision.priority.value,
        )
    ]
    if assessment is None or result is None:
        return obs
    if assessment.category is not None:
        obs.append(
            Observation(
                identifier=CodedValue(code="LUNGRADS", text="Lung-RADS category", system="L"),
                value_type="ST",
                value=assessment.category,
                abnormal_flag=flag,
            )
        )
    obs.append(
        Observation(
            identifier=CodedValue(code="RECOMMEND", text="Follow-up recommendation", system="L"),
            value_type="TX",
            value=assessment.recommendation,
        )
    )
    if assessment.due is not None:
        obs.append(
            Observation(
                identifier=CodedValue(code="NEXTEXAM", text="Next exam due", system="L"),
                value_type="ST",
                value=assessment.due.strftime("%Y%m%d"),
            )
        )
    for f in assessment.findings:
        if f.mean_diameter_mm is None:
            continue
        obs.append(
            Observation(
                identifier=CodedValue(code="NODDIAM", text="Nodule mean diameter", system="L"),
                sub_id=f.tracking_id,
                value_type="NM",
                value=round(f.mean_diameter_mm, 1),
                units="mm",
                abnormal_flag=flag,
            )
        )
    return obs
