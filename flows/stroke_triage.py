"""Stroke triage: non-contrast head CT -> ICH model -> SR + SEG, ORU, worklist, FHIR, alert.

A DAG of tasks; every step appends to the audit trail and the run ends with an explicit
outcome row (critical / urgent / routine / review / not analysed / failed) with per-stage
timings, so time-to-flag is measured from the last instance received.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows._outcome import await_writebacks, now, record_failure
from models.registry import CHALLENGER
from pacsflow.domain import InferenceResult, ModelRef, Priority, TriageDecision
from pacsflow.errors import NotAnalysableError
from pacsflow.governance.audit import AuditLog
from pacsflow.governance.drift import inference_features
from pacsflow.pathways.outcomes import record_outcome
from pacsflow.pathways.report import draft_report
from pacsflow.pathways.series_selection import HEAD_SERIES
from pacsflow.pathways.triage import decide
from pacsflow.writeback.writers import StudyIds
from tasks import writeback
from tasks._runtime import env
from tasks.infer import champion, infer_ich
from tasks.retrieve import choose_series, study_context, validate_series
from tasks.shadow import has_reading, model_ref, shadow_read

PATHWAY = "stroke_triage"


def _run_name() -> str:
    params = flow_run.parameters or {}
    ident = params.get("accession_number") or str(params.get("study_uid", ""))[-12:]
    return f"stroke-triage-{ident}"


@flow(name="stroke-triage", flow_run_name=_run_name, log_prints=False, persist_result=False)
def stroke_triage(
    study_uid: str,
    accession_number: str | None = None,
    received_at: str | None = None,
    closed_at: str | None = None,
    priority: str | None = None,
    requested_by: str | None = None,
) -> dict[str, Any]:
    """Triage one head CT study. Parameters are identifiers and times only (no PHI)."""
    e = env()
    audit = AuditLog(e.sessions)
    timings: dict[str, Any] = {"received": received_at, "closed": closed_at, "started": now()}
    run_id = str(flow_run.id) if flow_run.id else None
    model: ModelRef | None = None
    try:
        model = champion()  # resolved once: one run, one model version throughout
        return _triage(study_uid, accession_number, model, timings, run_id, audit)
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


def _analyse(
    study_uid: str,
    series_uid: str | None,
    model: ModelRef,
    timings: dict[str, Any],
    audit: AuditLog,
) -> tuple[InferenceResult | None, TriageDecision]:
    """Validate, infer and decide; anything the model may not read is NOT_ANALYSED."""
    if series_uid is None:
        return None, TriageDecision(
            priority=Priority.NOT_ANALYSED, reasons=["no axial non-contrast CT series"]
        )
    check = validate_series(study_uid, series_uid)
    if not check.passed:
        return None, TriageDecision(priority=Priority.NOT_ANALYSED, reasons=check.reasons)
    inferred = infer_ich(study_uid, series_uid, model, return_state=True)
    if not inferred.is_completed():
        error = inferred.result(raise_on_failure=False)
        if isinstance(error, NotAnalysableError):  # e.g. gantry tilt, missing slices
            return None, TriageDecision(priority=Priority.NOT_ANALYSED, reasons=error.reasons)
        inferred.result()  # a real failure: raise it
    result: InferenceResult = inferred.result()
    timings["inferred"] = now()
    audit.append(
        "model:" + model.name,
        "inference",
        study_uid,
        {
            "version": model.version,
            "probability": result.study_probability,
            "findings": len(result.findings),
        },
    )
    return result, decide(result, env().settings.triage)


def _features(
    study_uid: str,
    series_uid: str | None,
    series_count: int,
    model: ModelRef,
    result: InferenceResult | None,
    timings: dict[str, Any],
) -> dict[str, Any]:
    """What monitoring needs of the run: header and image features (drift), whether the
    series could be read, and the model's wall and CPU seconds (usage and cost)."""
    features: dict[str, Any] = {
        "series_uid": series_uid,
        "series_count": series_count,
        "model_name": model.name,
        "validation_passed": result is not None,
    }
    if result is not None:
        timings["inference_s"], timings["inference_cpu_s"] = result.seconds, result.cpu_seconds
        return features | result.features
    if series_uid is not None:  # not analysed: still visible by vendor and kernel
        headers = [h for h in env().source.headers(study_uid) if h.series_uid == series_uid]
        features |= inference_features(headers, None)
    return features


def _shadow_live(study_uid: str, champion_model: ModelRef, run_id: str | None) -> None:
    """With triage.shadow_live, a challenger (when one exists) reads the study too, beside
    a shadow reading by the champion, so the agreement report pairs them. It runs after the
    writebacks, so time-to-flag does not pay for it, and it never fails the live run."""
    e = env()
    if not e.settings.triage.shadow_live:
        return
    challenger = model_ref(e.settings.mlflow_tracking_uri, champion_model.name, CHALLENGER)
    if challenger is None or challenger.version == champion_model.version:
        return
    for ref, role in ((champion_model, "champion"), (challenger, "challenger")):
        if has_reading(e.sessions, PATHWAY, ref.version, study_uid):
            continue
        state = shadow_read(PATHWAY, study_uid, ref, role, run_id, return_state=True)
        if not state.is_completed():
            get_run_logger().warning(
                "shadow reading of %s by %s %s failed: %s",
                study_uid,
                ref.name,
                ref.version,
                state.message,
            )


def _triage(
    study_uid: str,
    accession_number: str | None,
    model: ModelRef,
    timings: dict[str, Any],
    run_id: str | None,
    audit: AuditLog,
) -> dict[str, Any]:
    log = get_run_logger()
    e = env()
    ctx = study_context(study_uid, accession_number)
    selection = choose_series(study_uid, HEAD_SERIES.target_thickness_mm)
    audit.append(
        "pacsflow",
        "study.received",
        study_uid,
        {"accession": ctx.accession_number, "flow_run": run_id},
    )
    result, decision = _analyse(study_uid, selection.series_uid, model, timings, audit)
    if decision.priority == Priority.NOT_ANALYSED and selection.series_uid is None:
        decision = TriageDecision(priority=decision.priority, reasons=selection.reasons)
    log.info(
        "study %s: %s (%s)",
        ctx.accession_number or study_uid,
        decision.priority.value,
        "; ".join(decision.reasons),
    )
    timings["decided"] = now()

    ids = StudyIds(
        study_uid=study_uid,
        series_uid=selection.series_uid,
        accession_number=ctx.accession_number,
        patient_id=ctx.patient_id,
    )
    report = draft_report(result, decision)
    lines = report.splitlines()
    summary = lines[1] if len(lines) > 1 else report
    futures = {
        "worklist": writeback.update_worklist.submit(
            ids, result, decision, model, summary, ctx.order
        ),
        "ris": writeback.send_oru.submit(ids, result, decision, model, report, ctx.order),
        "ehr": writeback.send_fhir.submit(ids, result, decision, model, report),
        "notify": writeback.notify_critical.submit(ids, decision, model, summary),
    }
    if selection.series_uid is not None:
        futures["archive"] = writeback.store_sr_seg.submit(ids, result, decision, model)
    written, failures = await_writebacks(futures, timings)
    outcome = decision.priority.value if not failures else "failed"
    record_outcome(
        e.sessions,
        study_uid=study_uid,
        pathway=PATHWAY,
        model_version=model.version,
        outcome=outcome,
        reasons=decision.reasons + failures,
        timings=timings,
        features=_features(
            study_uid, selection.series_uid, ctx.series_count, model, result, timings
        ),
        score=result.study_probability if result else None,
        flow_run_id=run_id,
    )
    audit.append(
        "pacsflow",
        "pathway.outcome",
        study_uid,
        {"outcome": outcome, "written": sorted(written), "failures": failures},
    )
    if failures:
        raise RuntimeError("writeback failed after retries: " + "; ".join(failures))
    _shadow_live(study_uid, model, run_id)
    return {
        "study_uid": study_uid,
        "priority": decision.priority.value,
        "reasons": decision.reasons,
        "written": written,
        "timings": timings,
    }
