"""Writeback tasks: archive (SR + SEG), RIS (ORU), worklist, notification, EHR (FHIR)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import task

from pacsflow.domain import InferenceResult, ModelRef, OrderContext, TriageDecision
from pacsflow.hl7.records import Observation
from pacsflow.writeback import writers
from pacsflow.writeback.writers import StudyIds
from tasks._runtime import WRITEBACK_RETRY_DELAYS, env, transient_only

_retry = {
    "retries": len(WRITEBACK_RETRY_DELAYS),
    "retry_delay_seconds": WRITEBACK_RETRY_DELAYS,
    "retry_condition_fn": transient_only,
}


@task(name="store-sr-seg", **_retry)
def store_sr_seg(
    ids: StudyIds,
    result: InferenceResult | None,
    decision: TriageDecision,
    model: ModelRef,
    finding_kind: str = "hemorrhage",
    comparison: Sequence[str] = (),
    prior_evidence: Sequence[tuple[str, str, str, str]] = (),
) -> dict[str, str]:
    return writers.store_sr_and_seg(
        env(),
        ids,
        result,
        decision,
        model,
        finding_kind=finding_kind,
        comparison=comparison,
        prior_evidence=prior_evidence,
    )


@task(name="send-oru", **_retry)
def send_oru(
    ids: StudyIds,
    result: InferenceResult | None,
    decision: TriageDecision,
    model: ModelRef,
    report_text: str,
    order: OrderContext | None,
    observations: Sequence[Observation] | None = None,
) -> dict[str, str]:
    return writers.send_oru(env(), ids, result, decision, model, report_text, order, observations)


@task(name="update-worklist", **_retry)
def update_worklist(
    ids: StudyIds,
    result: InferenceResult | None,
    decision: TriageDecision,
    model: ModelRef,
    summary: str,
    order: OrderContext | None,
    pathway: str = "stroke_triage",
) -> dict[str, str]:
    return writers.update_worklist(
        env(), ids, result, decision, model, summary, order, pathway=pathway
    )


@task(name="notify-critical", **_retry)
def notify_critical(
    ids: StudyIds, decision: TriageDecision, model: ModelRef, summary: str
) -> dict[str, str]:
    return writers.notify_critical(env(), ids, decision, model, summary)


@task(name="send-fhir", **_retry)
def send_fhir(
    ids: StudyIds,
    result: InferenceResult | None,
    decision: TriageDecision,
    model: ModelRef,
    report_text: str,
    finding_kind: str = "hemorrhage",
    extra_resources: Sequence[dict[str, Any]] = (),
) -> dict[str, str]:
    return writers.send_fhir(
        env(),
        ids,
        result,
        decision,
        model,
        report_text,
        finding_kind=finding_kind,
        extra_resources=extra_resources,
    )
