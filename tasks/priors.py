"""Prior exams of a follow-up pathway: what pacsflow already said about each, or a fresh read.

For each earlier study of the patient the pathway needs the findings of the same model:
a stored pacsflow SR of that model (any version) is reused, since re-reading a study that
was already read costs minutes on a CPU and gives the reader a second, possibly different
opinion; only a prior without one is read by the model now.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from pydantic import BaseModel, Field

from pacsflow.dicom.sr import SrFinding, SrSummary, read_sr_summary
from pacsflow.domain import Finding, Location, ModelRef
from pacsflow.errors import InvalidInputError
from pacsflow.pathways.series_selection import SelectionRules, select_series
from pacsflow.pathways.validation import HeaderSuite, validate_headers
from tasks._runtime import ARCHIVE_RETRY_DELAYS, env, transient_only
from tasks.infer import run_model

SR_MODALITY = "SR"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


class PriorExam(BaseModel):
    """One earlier exam and the model's findings on it (none when it could not be read)."""

    study_uid: str
    study_date: str
    description: str = ""
    source: str  # "sr" (stored result reused) | "model" (read now) | "unreadable"
    findings: list[Finding] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list)
    # One instance of the exam (series, SOP class, SOP instance) for the SR's evidence list.
    evidence: tuple[str, str, str] | None = None


def _value(item: dict[str, Any], tag: str) -> str:
    values = item.get(tag, {}).get("Value") or [""]
    return str(values[0])


def finding_from_sr(found: SrFinding) -> Finding:
    """The domain finding as a stored SR recorded it (enough to compare and track)."""
    side = next((s for s in ("Left", "Right") if any(s in site for site in found.sites)), None)
    return Finding(
        kind=found.kind or "nodule",
        subtype=found.subtype,
        probability=found.probability if found.probability is not None else 1.0,
        volume_ml=found.volume_ml,
        diameter_mm=found.diameter_mm,
        mean_diameter_mm=found.mean_diameter_mm,
        solid_diameter_mm=found.solid_diameter_mm,
        centroid_mm=found.centroid_mm,
        location=Location(side=side.lower() if side else None),
        tracking_id=found.tracking_id,
        tracking_uid=found.tracking_uid,
    )


def stored_result(study_uid: str, model_name: str) -> SrSummary | None:
    """The newest pacsflow SR of ``model_name`` in the study, if the archive has one."""
    archive = env().source.archive
    best: SrSummary | None = None
    for series in archive.search_series(study_uid):
        if _value(series, "00080060") != SR_MODALITY:
            continue
        for ds in archive.retrieve_series(study_uid, _value(series, "0020000E")):
            try:
                summary = read_sr_summary(ds)
            except InvalidInputError:
                continue  # a report from someone else
            if summary.algorithm_name != model_name or summary.finding_present is None:
                continue
            if best is None or (summary.algorithm_version or "") > (best.algorithm_version or ""):
                best = summary
    return best


@task(
    name="prior-findings",
    retries=len(ARCHIVE_RETRY_DELAYS),
    retry_delay_seconds=ARCHIVE_RETRY_DELAYS,
    retry_condition_fn=transient_only,
)
def prior_findings(
    prior: dict[str, str],
    model: ModelRef,
    rules: SelectionRules,
    suite: HeaderSuite,
) -> PriorExam:
    study_uid = prior["study_uid"]
    base = {
        "study_uid": study_uid,
        "study_date": prior.get("study_date", ""),
        "description": prior.get("description", ""),
    }
    stored = stored_result(study_uid, model.name)
    if stored is not None:
        return PriorExam(
            **base,
            source="sr",
            findings=[finding_from_sr(f) for f in stored.findings if f.kind == "nodule"],
            evidence=(stored.series_instance_uid, SR_STORAGE_CLASS, stored.sop_instance_uid),
        )
    headers = env().source.headers(study_uid)
    choice = select_series(headers, rules)
    if choice.series_uid is None:
        return PriorExam(**base, source="unreadable", reasons=choice.reasons)
    series = [h for h in headers if h.series_uid == choice.series_uid]
    check = validate_headers(series, suite)
    if not check.passed:
        return PriorExam(**base, source="unreadable", reasons=check.reasons)
    result = run_model(study_uid, choice.series_uid, model)
    first = series[0]
    return PriorExam(
        **base,
        source="model",
        findings=result.findings,
        evidence=(first.series_uid, first.sop_class_uid or CT_IMAGE_STORAGE, first.sop_uid),
    )


SR_STORAGE_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR Storage
