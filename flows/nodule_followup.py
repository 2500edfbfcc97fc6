"""Lung-nodule follow-up: chest CT -> nodule model -> priors -> growth -> Lung-RADS / Fleischner
-> SR with the comparison, ORU draft, FHIR report + coordinator Task, worklist priority.

Every prior chest CT of the patient in the archive is compared, newest first: its stored
pacsflow SR is reused when there is one, else the model reads it now. Nodules keep their
tracking identifier and UID from the exam where they were first seen.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows._outcome import await_writebacks, now, record_failure
from pacsflow.domain import InferenceResult, ModelRef, Priority, TriageDecision
from pacsflow.errors import NotAnalysableError
from pacsflow.fhir.resources import build_task
from pacsflow.governance.audit import AuditLog
from pacsflow.pathways.followup import (
    CHEST_SERIES,
    Exam,
    FollowupAssessment,
    assess_followup,
    followup_observations,
    followup_report,
    is_chest_prior,
)
from pacsflow.pathways.outcomes import record_outcome
from pacsflow.pathways.validation import CHEST_CT_SUITE
from pacsflow.writeback.writers import StudyIds
from tasks import writeback
from tasks._runtime import env
from tasks.infer import NODULE_MODEL, champion, infer_nodule
from tasks.priors import PriorExam, prior_findings
from tasks.retrieve import choose_series, study_context, validate_series

PATHWAY = "nodule_followup"


def _run_name() -> str:
    params = flow_run.parameters or {}
    ident = params.get("accession_number") or str(params.get("study_uid", ""))[-12:]
    return f"nodule-followup-{ident}"


def _date(dicom_date: str) -> date:
    return (
        datetime.strptime(dicom_date, "%Y%m%d").date() if dicom_date else datetime.now(UTC).date()
    )


@flow(name="nodule-followup", flow_run_name=_run_name, log_prints=False, persist_result=False)
def nodule_followup(
    study_uid: str,
    accession_number: str | None = None,
    received_at: str | None = None,
    closed_at: str | None = None,
    priority: str | None = None,
    requested_by: str | None = None,
) -> dict[str, Any]:
    """Follow up the lung nodules of one chest CT. Parameters are identifiers and times only."""
    e = env()
    audit = AuditLog(e.sessions)
    timings: dict[str, Any] = {"received": received_at, "closed": closed_at, "started": now()}
    run_id = str(flow_run.id) if flow_run.id else None
    model: ModelRef | None = None
    try:
        model = champion(NODULE_MODEL)
        return _followup(study_uid, accession_number, model, timings, run_id, audit)
    except Exception as exc:
        record_failure(
            pathway=PATHWAY,
            study_uid=study_uid,
            accession_number=accession_number,
            model_version=model.version if model else "",
            timings=timings,
            run_id=run_id,
            audit=audit,
            error=exc,
        )
        raise


def _read_current(
    study_uid: str, series_uid: str | None, model: ModelRef
) -> tuple[InferenceResult | None, list[str]]:
    if series_uid is None:
        return None, ["no axial soft-tissue chest CT series"]
    check = validate_series(study_uid, series_uid, CHEST_CT_SUITE)
    if not check.passed:
        return None, check.reasons
    inferred = infer_nodule(study_uid, series_uid, model, return_state=True)
    if not inferred.is_completed():
        error = inferred.result(raise_on_failure=False)
        if isinstance(error, NotAnalysableError):
            return None, error.reasons
        inferred.result()
    return inferred.result(), []


def _followup(
    study_uid: str,
    accession_number: str | None,
    model: ModelRef,
    timings: dict[str, Any],
    run_id: str | None,
    audit: AuditLog,
) -> dict[str, Any]:
    log = get_run_logger()
    ctx = study_context(study_uid, accession_number)
    audit.append(
        "pacsflow",
        "study.received",
        study_uid,
        {"accession": ctx.accession_number, "flow_run": run_id},
    )
    selection = choose_series(study_uid, CHEST_SERIES.target_thickness_mm)
    result, not_analysed = _read_current(study_uid, selection.series_uid, model)
    timings["inferred"] = now()
    ids = StudyIds(
        study_uid=study_uid,
        series_uid=selection.series_uid,
        accession_number=ctx.accession_number,
        patient_id=ctx.patient_id,
    )
    if result is None:
        decision = TriageDecision(priority=Priority.NOT_ANALYSED, reasons=not_analysed)
        return _finish(ids, None, decision, None, model, timings, run_id, audit, ctx.order)

    audit.append(
        "model:" + model.name,
        "inference",
        study_uid,
        {"version": model.version, "findings": len(result.findings)},
    )
    priors: list[PriorExam] = []
    for prior in ctx.priors:  # newest first
        if prior["study_uid"] == study_uid or not is_chest_prior(prior):
            continue
        priors.append(prior_findings(prior, model, CHEST_SERIES, CHEST_CT_SUITE))
    timings["priors_done"] = now()
    order = ctx.order
    assessment = assess_followup(
        Exam(study_uid=study_uid, study_date=_date(ctx.study_date), findings=result.findings),
        [
            Exam(study_uid=p.study_uid, study_date=_date(p.study_date), findings=p.findings)
            for p in priors
            if p.source != "unreadable"
        ],
        patient_id=ctx.patient_id,
        indication=order.indication if order else None,
    )
    result = result.model_copy(update={"findings": assessment.findings})
    decision = TriageDecision(priority=assessment.priority, reasons=assessment.reasons)
    log.info(
        "study %s: %s %s, %d nodule(s), %d prior(s)",
        ctx.accession_number or study_uid,
        assessment.guideline,
        assessment.category or "-",
        len(assessment.findings),
        len(priors),
    )
    return _finish(ids, result, decision, assessment, model, timings, run_id, audit, order, priors)


def _finish(
    ids: StudyIds,
    result: InferenceResult | None,
    decision: TriageDecision,
    assessment: FollowupAssessment | None,
    model: ModelRef,
    timings: dict[str, Any],
    run_id: str | None,
    audit: AuditLog,
    order: Any,
    priors: list[PriorExam] | None = None,
) -> dict[str, Any]:
    e = env()
    priors = priors or []
    report = followup_report(result, decision, assessment)
    summary = report.splitlines()[1] if len(report.splitlines()) > 1 else report
    compared = [p for p in priors if p.evidence is not None]
    futures: dict[str, Any] = {
        "worklist": writeback.update_worklist.submit(
            ids, result, decision, model, summary, order, PATHWAY
        ),
        "ris": writeback.send_oru.submit(
            ids,
            result,
            decision,
            model,
            report,
            order,
            followup_observations(result, decision, assessment),
        ),
        "ehr": writeback.send_fhir.submit(
            ids,
            result,
            decision,
            model,
            report,
            "nodule",
            _coordinator_task(ids, model, assessment),
        ),
    }
    if ids.series_uid is not None:
        futures["archive"] = writeback.store_sr_seg.submit(
            ids,
            result,
            decision,
            model,
            "nodule",
            assessment.comparison if assessment else [],
            [(p.study_uid, *p.evidence) for p in compared if p.evidence],
        )
    written, failures = await_writebacks(futures, timings)
    outcome = decision.priority.value if not failures else "failed"
    features: dict[str, Any] = {
        "series_uid": ids.series_uid,
        "priors": len(priors),
        "model_name": model.name,
        "validation_passed": result is not None,
    }
    if result is not None:
        features |= result.features
        timings["inference_s"], timings["inference_cpu_s"] = result.seconds, result.cpu_seconds
    if assessment is not None:
        features |= {
            "guideline": assessment.guideline,
            "category": assessment.category,
            "follow_up_due": assessment.due.isoformat() if assessment.due else None,
            "nodules": len(assessment.findings),
        }
    record_outcome(
        e.sessions,
        study_uid=ids.study_uid,
        pathway=PATHWAY,
        model_version=model.version,
        outcome=outcome,
        reasons=decision.reasons + failures,
        timings=timings,
        features=features,
        score=result.study_probability if result else None,
        flow_run_id=run_id,
    )
    audit.append(
        "pacsflow",
        "pathway.outcome",
        ids.study_uid,
        {"outcome": outcome, "written": sorted(written), "failures": failures},
    )
    if failures:
        raise RuntimeError("writeback failed after retries: " + "; ".join(failures))
    return {
        "study_uid": ids.study_uid,
        "priority": decision.priority.value,
        "category": assessment.category if assessment else None,
        "reasons": decision.reasons,
        "written": written,
        "timings": timings,
    }


def _coordinator_task(
    ids: StudyIds, model: ModelRef, assessment: FollowupAssessment | None
) -> list[dict[str, Any]]:
    """The screening coordinator's Task, due when the next exam is (none without one)."""
    if assessment is None or assessment.due is None:
        return []
    return [
        build_task(
            study_uid=ids.study_uid,
            patient_id=ids.patient_id,
            model=model,
            description=f"Lung nodule follow-up: {assessment.recommendation}",
            due=assessment.due,
            authored_on=datetime.now(UTC),
            task_key="nodule-follow-up",
            priority="urgent" if assessment.priority == Priority.URGENT else "routine",
        )
    ]
