"""The writeback steps of a pathway, each idempotent and each mapping its peer's errors onto
TransientError (retry) or PermanentError (record and stop)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.config import Settings
from pacsflow.dicom.seg import build_seg
from pacsflow.dicom.sr import build_sr, evidence_reference
from pacsflow.domain import InferenceResult, ModelRef, OrderContext, Priority, TriageDecision
from pacsflow.errors import InvalidInputError, PeerUnavailableError
from pacsflow.fhir.client import post_bundle
from pacsflow.fhir.resources import build_result_bundle
from pacsflow.hl7.client import send_message_sync
from pacsflow.hl7.oru import build_oru_r01
from pacsflow.hl7.records import CodedValue, Observation
from pacsflow.hl7.tables import AbnormalFlag
from pacsflow.pathways.sources import StudySource
from pacsflow.writeback.ledger import Ledger, writeback_key
from pacsflow.writeback.worklist_adapters import WorklistUpdate, adapters_from_settings
from pacsflow.writeback.worklist_adapters import deliver as deliver_to_worklists

log = logging.getLogger(__name__)


@dataclass
class PathwayEnv:
    """What the plain pathway functions need, built once per worker process."""

    settings: Settings
    sessions: sessionmaker[Session]
    source: StudySource
    ledger: Ledger

    def results_dir(self, study_uid: str, model: ModelRef) -> Path:
        path = self.settings.paths.var_dir / "results" / study_uid / f"{model.name}-{model.version}"
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass(frozen=True)
class StudyIds:
    study_uid: str
    series_uid: str | None
    accession_number: str
    patient_id: str


def _control_id(key: str) -> str:
    """A deterministic MSH-10 per output, so a receiver can spot a resend (max 20 chars)."""
    return hashlib.sha1(key.encode()).hexdigest()[:20].upper()


# --- archive: SR + SEG --------------------------------------------------------------------
def store_sr_and_seg(
    env: PathwayEnv,
    ids: StudyIds,
    result: InferenceResult | None,
    decision: TriageDecision,
    model: ModelRef,
    *,
    finding_kind: str = "hemorrhage",
    comparison: Sequence[str] = (),
    prior_evidence: Sequence[tuple[str, str, str, str]] = (),
) -> dict[str, str]:
    """Store the SEG (when there are findings) and the SR. ``prior_evidence`` lists one
    instance of each prior exam compared with: (study, series, SOP class, SOP instance)."""
    if ids.series_uid is None:
        raise InvalidInputError("no series to reference in the SR")
    series_uid = ids.series_uid

    def send() -> dict[str, str]:
        sources, _ = env.source.series_datasets(ids.study_uid, series_uid)
        seg = None
        if result is not None and result.findings:
            labels = np.load(env.results_dir(ids.study_uid, model) / "labels.npz")
            by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
            sources = [by_uid[str(u)] for u in labels["sop_uids"]]
            seg = build_seg(sources, labels["labels"], result.findings, model)
        sr = build_sr(
            sources,
            result.findings if result else [],
            model,
            seg=seg,
            study_probability=result.study_probability if result else None,
            priority=decision.priority,
            not_analysed_reasons=(
                decision.reasons if decision.priority == Priority.NOT_ANALYSED else None
            ),
            finding_kind=finding_kind,
            comparison=comparison,
            prior_evidence=[evidence_reference(*ref) for ref in prior_evidence],
        )
        objects: list[pydicom.Dataset] = [sr] if seg is None else [seg, sr]
        # UIDs are derived from (study, model, version): an earlier attempt that stored them
        # before dying is recognised here instead of storing a second copy.
        if not env.source.archive.instance_exists(ids.study_uid, str(sr.SOPInstanceUID)):
            env.source.archive.store(objects)
        detail = {"sr_uid": str(sr.SOPInstanceUID)}
        if seg is not None:
            detail["seg_uid"] = str(seg.SOPInstanceUID)
        return detail

    key = writeback_key("archive-sr", ids.study_uid, model)
    return env.ledger.deliver_once(key, ids.study_uid, "archive", send)


# --- RIS: ORU^R01 ---------------------------------------------------------------------------
def _observations(result: InferenceResult | None, decision: TriageDecision) -> list[Observation]:
    critical = decision.priority == Priority.CRITICAL
    flag = AbnormalFlag.CRITICAL if critical else AbnormalFlag.ABNORMAL
    obs = [
        Observation(
            identifier=CodedValue(code="TRIAGE", text="AI triage priority", system="L"),
            value_type="ST",
            value=decision.priority.value,
            abnormal_flag=flag if result and result.findings else AbnormalFlag.NORMAL,
        )
    ]
    for i, f in enumerate(result.findings if result else [], start=1):
        obs.append(
            Observation(
                identifier=CodedValue(code="ICHVOL", text="Hemorrhage volume", system="L"),
                sub_id=str(i),
                value_type="NM",
                value=round(f.volume_ml or 0.0, 2),
                units="mL",
                abnormal_flag=flag,
            )
        )
    return obs


def send_oru(
    env: PathwayEnv,
    ids: StudyIds,
    result: InferenceResult | None,
    decision: TriageDecision,
    model: ModelRef,
    report_text: str,
    order: OrderContext | None,
    observations: Sequence[Observation] | None = None,
) -> dict[str, str]:
    """ORU^R01 with the preliminary result; ``observations`` replaces the stroke pathway's
    default OBX list (triage priority and hemorrhage volumes)."""
    ris = env.settings.ris
    if ris.mllp_port is None:
        return {"skipped": "no RIS configured"}
    key = writeback_key("ris-oru", ids.study_uid, model)
    control_id = _control_id(key)  # the same MSH-10 on a resend: the RIS can spot it
    message = build_oru_r01(
        order=order,
        study_uid=ids.study_uid,
        accession_number=ids.accession_number,
        patient_id=ids.patient_id,
        observations=(
            list(observations) if observations is not None else _observations(result, decision)
        ),
        report_text=report_text,
        algorithm=model,
        control_id=control_id,
        sending_facility=ris.sending_facility,
        receiving_application=ris.receiving_application,
    )

    def send() -> dict[str, str]:
        ack = send_message_sync(ris.mllp_host, ris.mllp_port, message, timeout_s=ris.timeout_s)
        if ack.retryable:
            raise PeerUnavailableError(f"RIS answered AE to the ORU: {ack.text}")
        if ack.rejected:
            raise InvalidInputError(f"RIS rejected the ORU (AR): {ack.text}")
        return {"control_id": control_id, "ack": ack.code.value}

    return env.ledger.deliver_once(key, ids.study_uid, "ris", send)


# --- worklist: every configured worklist adapter (pacsflow.writeback.worklist_adapters) ------
def update_worklist(
    env: PathwayEnv,
    ids: StudyIds,
    result: InferenceResult | None,
    decision: TriageDecision,
    model: ModelRef,
    summary: str,
    order: OrderContext | None,
    *,
    pathway: str = "stroke_triage",
) -> dict[str, str]:
    """The study's priority to each adapter of `worklist.adapters` (by default pacsflow's
    table, Orthanc study metadata and, for critical/urgent, an ORM^O01 to the RIS).

    Returns the merged receipts: {"worklist": priority, "archive_metadata": ...,
    "ris_priority": "sent", ...} for the adapters that wrote something."""
    item = WorklistUpdate(
        study_uid=ids.study_uid,
        accession_number=ids.accession_number,
        patient_id=ids.patient_id,
        pathway=pathway,
        priority=decision.priority,
        summary=summary,
        findings=result.findings if result else [],
        model=model,
        order=order,
    )
    adapters = adapters_from_settings(env.settings, env.sessions)
    return deliver_to_worklists(adapters, item, env.ledger)


# --- critical-finding notification --------------------------------------------------------
def notify_critical(
    env: PathwayEnv, ids: StudyIds, decision: TriageDecision, model: ModelRef, summary: str
) -> dict[str, str]:
    if decision.priority != Priority.CRITICAL or not env.settings.notify.endpoints:
        return {"skipped": "not critical" if env.settings.notify.endpoints else "no endpoint"}
    base_key = writeback_key("notify", ids.study_uid, model)
    body = {
        "event": "critical_finding",
        "study_uid": ids.study_uid,
        "accession_number": ids.accession_number,
        "priority": decision.priority.value,
        "summary": summary,
        "link": f"{env.settings.notify.case_link_base}/{ids.study_uid}",
        "algorithm": f"{model.name} {model.version}",
        "idempotency_key": base_key,
    }
    for url in env.settings.notify.endpoints:
        # One ledger entry per endpoint: a retry after endpoint 2 failed does not page
        # endpoint 1 again.
        key = f"{base_key}:{hashlib.sha1(url.encode()).hexdigest()[:12]}"

        def send(url: str = url) -> dict[str, str]:
            try:
                response = httpx.post(
                    url, json=body, timeout=10, headers={"Idempotency-Key": base_key}
                )
            except httpx.HTTPError as exc:
                raise PeerUnavailableError(f"notification endpoint {url}: {exc}") from exc
            if response.status_code >= 500 or response.status_code == 429:
                raise PeerUnavailableError(f"notification endpoint {url}: {response.status_code}")
            if response.status_code >= 400:
                raise InvalidInputError(
                    f"notification endpoint {url} refused: {response.status_code}"
                )
            return {"endpoint": url, "status": str(response.status_code)}

        env.ledger.deliver_once(key, ids.study_uid, "notify", send)
    return {"endpoints": str(len(env.settings.notify.endpoints))}


# --- EHR: FHIR R4 ---------------------------------------------------------------------------
def send_fhir(
    env: PathwayEnv,
    ids: StudyIds,
    result: InferenceResult | None,
    decision: TriageDecision,
    model: ModelRef,
    report_text: str,
    *,
    finding_kind: str = "hemorrhage",
    extra_resources: Sequence[dict[str, Any]] = (),
) -> dict[str, str]:
    base = env.settings.ehr.fhir_base_url
    if not base:
        return {"skipped": "no EHR configured"}
    key = writeback_key("ehr-fhir", ids.study_uid, model)
    bundle = build_result_bundle(
        study_uid=ids.study_uid,
        accession_number=ids.accession_number,
        patient_id=ids.patient_id,
        findings=result.findings if result else [],
        model=model,
        priority=decision.priority,
        report_text=report_text,
        issued=datetime.now(UTC),
        finding_kind=finding_kind,
        extra_resources=extra_resources,
    )

    def send() -> dict[str, str]:
        post_bundle(base, bundle, timeout_s=env.settings.ehr.timeout_s)  # conditional creates
        return {"resources": str(len(bundle.get("entry", [])))}

    return env.ledger.deliver_once(key, ids.study_uid, "ehr", send)
