"""The gateway's DICOM listener (pynetdicom): C-ECHO, C-STORE, MPPS and Storage Commitment.

Handlers are thin: they hand the raw encoded object to `StoreReceiver`, which validates,
spools durably and answers with a DICOM status (PS3.4 Annex B / PS3.7 Annex C), never
an exception. Refused objects are quarantined with the reason.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import pydicom
from pydicom import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import (
    ModalityPerformedProcedureStep,
    Verification,
)

from pacsflow.dicom.log_redaction import redact_pydicom_logs
from pacsflow.gateway.assembly import StudyAssembler
from pacsflow.gateway.spool import Spool, is_valid_uid
from pacsflow.gateway.storage_commitment import (
    STORAGE_COMMITMENT_PUSH_MODEL,
    SpoolInstanceIndex,
    StorageCommitmentScp,
)

log = logging.getLogger(__name__)

# Storage SOP classes the gateway accepts (PS3.4 B.5): CT, MR, CR/DX, US, PET, SR, SEG, SC.
ACCEPTED_STORAGE: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.1": "Computed Radiography Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.6.1": "Ultrasound Image Storage",
    "1.2.840.10008.5.1.4.1.1.3.1": "Ultrasound Multi-frame Image Storage",
    "1.2.840.10008.5.1.4.1.1.128": "Positron Emission Tomography Image Storage",
    "1.2.840.10008.5.1.4.1.1.130": "Enhanced PET Image Storage",
    "1.2.840.10008.5.1.4.1.1.88.11": "Basic Text SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive 3D SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.67": "X-Ray Radiation Dose SR Storage",
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation Storage",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color Secondary Capture Image Storage",
}
# Negotiated but refused per object with 0x0122, so the sender gets a clear status.
REFUSED_BUT_NEGOTIATED: tuple[str, ...] = (
    "1.2.840.10008.5.1.4.1.1.481.1",  # RT Image
    "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
    "1.2.840.10008.5.1.4.1.1.12.1",  # X-Ray Angiographic
)

# C-STORE status codes (PS3.4 Table B.2-1, PS3.7 C.4.2)
SUCCESS = 0x0000
REFUSED_SOP_CLASS_NOT_SUPPORTED = 0x0122
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110
NO_SUCH_SOP_CLASS = 0x0118


def _status(code: int, comment: str | None = None) -> Dataset:
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment[:64]
    return ds


@dataclass(frozen=True)
class StoreOutcome:
    status: int
    reason: str | None = None
    duplicate: bool = False


def _native_pixel_bytes_expected(ds: Dataset) -> int | None:
    if "PixelData" not in ds or ds.file_meta.TransferSyntaxUID.is_encapsulated:
        return None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return (
        int(ds.Rows)
        * int(ds.Columns)
        * frames
        * int(ds.get("SamplesPerPixel", 1))
        * int(ds.BitsAllocated)
        // 8
    )


class StoreReceiver:
    """Validates, spools and records one received object; returns a DICOM status."""

    def __init__(
        self, spool: Spool, assembler: StudyAssembler, index: SpoolInstanceIndex | None = None
    ) -> None:
        redact_pydicom_logs()  # pydicom quotes invalid values it reads: keep them out of logs
        self.spool = spool
        self.assembler = assembler
        # Where each spooled instance lies, for Storage Commitment.
        self.index = index if index is not None else SpoolInstanceIndex(spool.root)

    def receive(
        self, data: bytes, sop_class_uid: str, sop_instance_uid: str, calling_aet: str
    ) -> StoreOutcome:
        origin = {
            "calling_aet": calling_aet,
            "sop_class_uid": sop_class_uid,
            "sop_instance_uid": sop_instance_uid,
        }
        if sop_class_uid not in ACCEPTED_STORAGE:
            return self._refuse(
                data,
                REFUSED_SOP_CLASS_NOT_SUPPORTED,
                f"SOP class {sop_class_uid} not supported",
                origin,
            )
        try:
            ds = pydicom.dcmread(BytesIO(data), force=False)
            header = self._validate(ds, sop_class_uid, sop_instance_uid)
        except _Refusal as exc:
            return self._refuse(data, exc.status, exc.reason, origin)
        except Exception as exc:  # untrusted bytes: any parse failure means "cannot understand"
            return self._refuse(
                data, CANNOT_UNDERSTAND, f"unreadable object: {type(exc).__name__}: {exc}", origin
            )
        study_uid, series_uid = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
        try:
            created = self.spool.store(study_uid, series_uid, sop_instance_uid, data)
        except OSError as exc:
            log.error("spool write failed for %s: %s", sop_instance_uid, exc)
            return StoreOutcome(OUT_OF_RESOURCES, f"cannot store: {exc.strerror}")
        self.index.remember(
            sop_instance_uid, self.spool.instance_path(study_uid, series_uid, sop_instance_uid)
        )
        self.assembler.instance_received(header, calling_aet, duplicate=not created)
        return StoreOutcome(SUCCESS, duplicate=not created)

    @staticmethod
    def _validate(ds: Dataset, sop_class_uid: str, sop_instance_uid: str) -> Dataset:
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            value = str(ds.get(keyword, ""))
            if not is_valid_uid(value):
                raise _Refusal(CANNOT_UNDERSTAND, f"{keyword} missing or invalid")
        if str(ds.SOPInstanceUID) != sop_instance_uid:
            raise _Refusal(
                DATASET_DOES_NOT_MATCH_SOP_CLASS, "SOPInstanceUID differs from the C-STORE request"
            )
        if str(ds.get("SOPClassUID", "")) != sop_class_uid:
            raise _Refusal(
                DATASET_DOES_NOT_MATCH_SOP_CLASS, "SOPClassUID differs from the C-STORE request"
            )
        expected = _native_pixel_bytes_expected(ds)
        if expected is not None and len(ds.PixelData) < expected:
            raise _Refusal(
                CANNOT_UNDERSTAND, f"pixel data truncated ({len(ds.PixelData)} of {expected} bytes)"
            )
        header = Dataset()
        for elem in ds:
            if elem.tag.group != 0x7FE0 and elem.VR != "SQ":
                header.add(elem)
        try:
            header.to_json_dict()  # the assembler stores it: refuse now what cannot be stored
        except Exception as exc:
            # Name the attribute, never quote its value: the reason is logged and the value
            # may be patient data sent in the wrong field.
            raise _Refusal(
                CANNOT_UNDERSTAND, f"invalid attribute value in {_unconvertible(header)}"
            ) from exc
        return header

    def _refuse(
        self, data: bytes, status: int, reason: str, origin: dict[str, Any]
    ) -> StoreOutcome:
        path = self.spool.quarantine(data, reason, {**origin, "status": f"0x{status:04X}"})
        log.warning(
            "refused %s from %s: %s (quarantined %s)",
            origin["sop_instance_uid"],
            origin["calling_aet"],
            reason,
            path.name,
        )
        return StoreOutcome(status, reason)


def _unconvertible(header: Dataset) -> str:
    """Keyword and tag of the first attribute the DICOM JSON model cannot hold."""
    for elem in header:
        single = Dataset()
        single.add(elem)
        try:
            single.to_json_dict()
        except Exception:  # any failure of pydicom's conversion is what is looked for
            return f"{elem.keyword or 'private attribute'} {elem.tag}"
    return "the data set"


class _Refusal(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class MppsTracker:
    """MPPS (PS3.4 F.7): N-CREATE links the step to a study; N-SET COMPLETED closes it."""

    def __init__(self, assembler: StudyAssembler) -> None:
        self.assembler = assembler
        self._study_of_step: dict[str, str] = {}

    def created(self, sop_instance_uid: str, attrs: Dataset) -> None:
        seq = attrs.get("ScheduledStepAttributesSequence") or []
        if seq and "StudyInstanceUID" in seq[0]:
            self._study_of_step[sop_instance_uid] = str(seq[0].StudyInstanceUID)
        if str(attrs.get("PerformedProcedureStepStatus", "")) == "COMPLETED":
            self.updated(sop_instance_uid, attrs)

    def updated(self, sop_instance_uid: str, mods: Dataset) -> None:
        if str(mods.get("PerformedProcedureStepStatus", "")) != "COMPLETED":
            return
        study_uid = self._study_of_step.pop(sop_instance_uid, None)
        if study_uid:
            # Modalities often send COMPLETED while C-STOREs are still in flight: close
            # after a short grace window rather than at once.
            self.assembler.expedite(study_uid)


def build_ae(
    aet: str,
    receiver: StoreReceiver,
    mpps: MppsTracker,
    allowed_aets: list[str],
    *,
    commitment: StorageCommitmentScp | None = None,
) -> tuple[AE, list[tuple[Any, Any]]]:
    """The SCP's application entity and its handlers; Storage Commitment (PS3.4 Annex J) is
    offered when ``commitment`` is given."""
    ae = AE(ae_title=aet)
    ae.maximum_pdu_size = 0  # no limit: fewer, larger PDUs
    ae.network_timeout = 60
    # A TCP probe (health check, port scan) holds an association slot until the ACSE
    # timeout: keep it short so probes cannot lock modalities out.
    ae.acse_timeout = 5
    ae.dimse_timeout = 60
    ae.maximum_associations = 64
    if allowed_aets:
        ae.require_calling_aet = list(allowed_aets)
    ae.add_supported_context(Verification)
    ae.add_supported_context(ModalityPerformedProcedureStep)
    for uid in (*ACCEPTED_STORAGE, *REFUSED_BUT_NEGOTIATED):
        ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)
    if commitment is not None:
        ae.add_supported_context(STORAGE_COMMITMENT_PUSH_MODEL)

    def on_echo(event: evt.Event) -> int:
        return SUCCESS

    def on_store(event: evt.Event) -> Dataset | int:
        try:
            outcome = receiver.receive(
                event.encoded_dataset(include_meta=True),
                str(event.request.AffectedSOPClassUID),
                str(event.request.AffectedSOPInstanceUID),
                event.assoc.requestor.ae_title.strip(),
            )
        except Exception:  # a listener must answer, never die
            log.exception("C-STORE handler failed")
            return _status(PROCESSING_FAILURE, "internal error")
        return _status(outcome.status, outcome.reason)

    def on_n_create(event: evt.Event) -> tuple[Dataset | int, Dataset | None]:
        try:
            attrs = event.attribute_list
            mpps.created(str(event.request.AffectedSOPInstanceUID), attrs)
            return _status(SUCCESS), attrs
        except Exception:
            log.exception("MPPS N-CREATE failed")
            return _status(PROCESSING_FAILURE), None

    def on_n_set(event: evt.Event) -> tuple[Dataset | int, Dataset | None]:
        try:
            mods = event.modification_list
            mpps.updated(str(event.request.RequestedSOPInstanceUID), mods)
            return _status(SUCCESS), mods
        except Exception:
            log.exception("MPPS N-SET failed")
            return _status(PROCESSING_FAILURE), None

    def on_n_action(event: evt.Event) -> tuple[Dataset, None]:
        if commitment is None:  # not negotiated, so not reached; answer anyway
            return _status(NO_SUCH_SOP_CLASS), None
        try:
            return commitment.answer_n_action(event)
        except Exception:
            log.exception("Storage Commitment N-ACTION failed")
            return _status(PROCESSING_FAILURE, "internal error"), None

    handlers = [
        (evt.EVT_C_ECHO, on_echo),
        (evt.EVT_C_STORE, on_store),
        (evt.EVT_N_CREATE, on_n_create),
        (evt.EVT_N_SET, on_n_set),
        (evt.EVT_N_ACTION, on_n_action),
    ]
    return ae, handlers


class _HandshakeInAssociationThread:
    """pynetdicom wraps each accepted socket in its accept loop, where the standard wrap
    also runs the TLS handshake: one client that connects and sends nothing would hold up
    every other connection. This wrapper defers the handshake to the first read, in the
    association's own thread, with a socket timeout bounding a stalled handshake."""

    def __init__(self, context: ssl.SSLContext, timeout_s: float) -> None:
        self.context = context
        self.timeout_s = timeout_s

    def wrap_socket(self, sock: Any, server_side: bool = True, **_ignored: Any) -> ssl.SSLSocket:
        sock.settimeout(self.timeout_s)
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)


def start_scp(
    ae: AE,
    handlers: list[tuple[Any, Any]],
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
) -> Any:
    """Start the listener in its own threads; returns the server (call .shutdown()).
    With ``ssl_context`` every association is under TLS (PS3.15 B.9)."""
    wrapped: Any = None
    if ssl_context is not None:
        wrapped = _HandshakeInAssociationThread(ssl_context, float(ae.network_timeout or 60))
    return ae.start_server((host, port), block=False, evt_handlers=handlers, ssl_context=wrapped)
