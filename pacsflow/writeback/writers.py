"""The writeback steps of a pathway, each idempotent and each mapping its peer's errors onto
TransientError (retry) or PermanentError (record and stop)."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pydicom
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.config import Settings
from pacsflow.db.tables import WorklistItem
from pacsflow.dicom.dicomweb import OrthancExtras
from pacsflow.dicom.seg import build_seg
from pacsflow.dicom.sr import build_sr
from pacsflow.domain import InferenceResult, ModelRef, OrderContext, Priority, TriageDecision
from pacsflow.errors import InvalidInputError, PeerUnavailableError
from pacsflow.fhir.client import post_bundle
from pacsflow.fhir.resources import build_result_bundle
from pacsflow.hl7.client import send_message_sync
from pacsflow.hl7.orm import build_priority_update
from pacsflow.hl7.oru import build_oru_r01
from pacsflow.hl7.records import CodedValue, Observation
from pacsflow.hl7.tables import AbnormalFlag
from pacsflow.pathways.sources import StudySource
from pacsflow.writeback.ledger import Ledger, writeback_key

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
) -> dict[str, str]:
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
            finding_kind="hemorrhage",
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
) -> dict[str, str]:
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
        observations=_observations(result, decision),
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


# --- worklist: pacsflow table, archive metadata, RIS priority update ------------------------
def update_worklist(
    env: PathwayEnv,
    ids: StudyIds,
    result: InferenceResult | None,
    decision: TriageDecision,
    model: ModelRef,
    summary: str,
    order: OrderContext | None,
) -> dict[str, str]:
    with env.sessions() as session:
        row = session.get(WorklistItem, ids.study_uid) or WorklistItem(
            study_uid=ids.study_uid, pathway="stroke_triage", priority=decision.priority.value
        )
        row.accession_number = ids.accession_number or None
        row.patient_id = ids.patient_id or None
        row.priority = decision.priority.value
        row.summary = summary
        row.findings = [f.model_dump(mode="json") for f in (result.findings if result else [])]
        row.model_name, row.model_version = model.name, model.version
        row.updated_at = datetime.now(UTC)
        session.merge(row)
        session.commit()
    OrthancExtras(env.settings.orthanc).set_study_metadata(
        ids.study_uid, "PacsflowPriority", decision.priority.value
    )
    detail = {"worklist": decision.priority.value, "archive_metadata": "PacsflowPriority"}
    ris = env.settings.ris
    if ris.mllp_port is not None and decision.priority in (Priority.CRITICAL, Priority.URGENT):
        key = writeback_key("ris-priority", ids.study_uid, model)
        control_id = _control_id(key)
        message = build_priority_update(
            accession_number=ids.accession_number,
            patient_id=ids.patient_id,
            priority=decision.priority,
            control_id=control_id,
            sending_facility=ris.sending_facility,
            receiving_application=ris.receiving_application,
            order=order,
        )

        def send() -> dict[str, str]:
            ack = send_message_sync(ris.mllp_host, ris.mllp_port, message, timeout_s=ris.timeout_s)
            if ack.rejected:
                raise InvalidInputError(f"RIS rejected the priority update: {ack.text}")
            if not ack.accepted:
                raise PeerUnavailableError(f"RIS did not accept the priority update: {ack.text}")
            return {"control_id": control_id}

        env.ledger.deliver_once(key, ids.study_uid, "ris-priority", send)
        detail["ris_priority"] = "sent"
    return detail


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
        finding_kind="hemorrhage",
    )

    def send() -> dict[str, str]:
        post_bundle(base, bundle, timeout_s=env.settings.ehr.timeout_s)  # conditional creates
        return {"resources": str(len(bundle.get("entry", [])))}

    return env.ledger.deliver_once(key, ids.study_uid, "ehr", send)
