"""ORU^R01 (unsolicited observation result) carrying an AI result to the RIS.

HL7 v2.5.1 chapter 7 (section 7.3.1). One PATIENT_RESULT: PID, then one ORDER_OBSERVATION:
ORC (RE), OBR (accession in OBR-18, result status OBR-25), an NTE saying the result is
AI-generated, and OBX lines: the study reference, each measurement or finding, the draft
report as TX lines, and the algorithm's name and version (provenance).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

from pacsflow.domain import ModelRef, OrderContext
from pacsflow.errors import InvalidInputError
from pacsflow.hl7.builder import compose, hl7_timestamp, message_text, msh_segment, segment
from pacsflow.hl7.encoding import DEFAULT_ENCODING, Encoding
from pacsflow.hl7.records import CodedValue, Observation
from pacsflow.hl7.tables import OrderControl, ResultStatus

# DICOM PS3.16 CID 7002 / DCM codes used by IHE to reference the study and the algorithm
# (TID 4019 Algorithm Identification).
DICOM_STUDY = CodedValue(code="113014", text="DICOM Study", system="DCM")
ALGORITHM_NAME = CodedValue(code="111001", text="Algorithm Name", system="DCM")
ALGORITHM_VERSION = CodedValue(code="111003", text="Algorithm Version", system="DCM")
# LOINC 18782-3 "Radiology Study observation (narrative)" for the draft report text.
REPORT_NARRATIVE = CodedValue(
    code="18782-3", text="Radiology Study observation (narrative)", system="LN"
)
DEFAULT_SERVICE = CodedValue(code="PACSFLOW-AI", text="AI image analysis", system="L")
# HL7 table 0074 diagnostic service section: RAD = radiology.
_DIAGNOSTIC_SERVICE = "RAD"
_SENDING_APPLICATION = "PACSFLOW"


def build_oru_r01(
    *,
    order: OrderContext | None,
    study_uid: str,
    accession_number: str,
    patient_id: str,
    observations: Sequence[Observation],
    report_text: str,
    algorithm: ModelRef,
    control_id: str,
    sending_facility: str,
    receiving_application: str,
    result_status: ResultStatus | str = ResultStatus.PRELIMINARY,
    receiving_facility: str = "",
    sending_application: str = _SENDING_APPLICATION,
    universal_service: CodedValue | None = None,
    observed_at: datetime | None = None,
    timestamp: datetime | None = None,
    processing_id: str = "P",
) -> str:
    """Build an ORU^R01 v2.5.1 message (``\\r`` segment terminators).

    OBR-4 is `universal_service`, else the order's procedure code, else a local
    "AI image analysis" code. OBX-11 of every line and OBR-25 carry `result_status`
    (P preliminary until a radiologist confirms, F final, C corrected).
    """
    status = _result_status(result_status)
    for name, value in (
        ("study_uid", study_uid),
        ("accession_number", accession_number),
        ("patient_id", patient_id),
        ("control_id", control_id),
    ):
        if not value or not value.strip():
            raise InvalidInputError(f"ORU^R01 needs a non-empty {name}")
    enc = DEFAULT_ENCODING
    now = hl7_timestamp(timestamp)
    observed = hl7_timestamp(observed_at) if observed_at else now
    service = universal_service or _service_from_order(order) or DEFAULT_SERVICE
    placer = order.placer_order_number if order else None
    filler = (order.filler_order_number if order else None) or accession_number

    segments = [
        msh_segment(
            enc,
            "ORU^R01^ORU_R01",
            sending_application=sending_application,
            sending_facility=sending_facility,
            receiving_application=receiving_application,
            receiving_facility=receiving_facility,
            timestamp=now,
            control_id=control_id,
            processing_id=processing_id,
        ),
        segment(enc, "PID", "1", "", compose(enc, patient_id)),
        segment(enc, "ORC", OrderControl.RESULTS.value, compose(enc, placer), compose(enc, filler)),
        _obr(enc, placer, filler, service, observed, accession_number, now, status),
    ]
    for number, note in enumerate(_notes(algorithm, status), start=1):
        segments.append(segment(enc, "NTE", str(number), "L", enc.escape_text(note)))

    lines: list[tuple[Observation, str]] = [
        (Observation(identifier=DICOM_STUDY, value_type="ST", value=study_uid), observed)
    ]
    lines += [(obs, observed) for obs in observations]
    lines += [
        (Observation(identifier=REPORT_NARRATIVE, value_type="TX", value=line, sub_id="1"), now)
        for line in report_text.splitlines()
        if report_text.strip()
    ]
    lines += [
        (Observation(identifier=ALGORITHM_NAME, value_type="ST", value=algorithm.name), now),
        (Observation(identifier=ALGORITHM_VERSION, value_type="ST", value=algorithm.version), now),
    ]
    for set_id, (obs, when) in enumerate(lines, start=1):
        segments.append(_obx(enc, set_id, obs, status, when))
    return message_text(segments)


def _obr(
    enc: Encoding,
    placer: str | None,
    filler: str,
    service: CodedValue,
    observed: str,
    accession_number: str,
    now: str,
    status: ResultStatus,
) -> str:
    fields = [""] * 25
    fields[0] = "1"  # OBR-1 set id
    fields[1] = compose(enc, placer)  # OBR-2 placer order number
    fields[2] = compose(enc, filler)  # OBR-3 filler order number
    fields[3] = compose(enc, service.code, service.text, service.system)  # OBR-4
    fields[6] = observed  # OBR-7 observation date/time
    fields[17] = compose(enc, accession_number)  # OBR-18 placer field 1: accession (IHE SWF)
    fields[21] = now  # OBR-22 results report/status change
    fields[23] = _DIAGNOSTIC_SERVICE  # OBR-24
    fields[24] = status.value  # OBR-25 result status (table 0123)
    return segment(enc, "OBR", *fields)


def _obx(enc: Encoding, set_id: int, obs: Observation, status: ResultStatus, when: str) -> str:
    ident = obs.identifier
    value_type = obs.value_type
    fields = [""] * 14
    fields[0] = str(set_id)  # OBX-1
    fields[1] = value_type  # OBX-2 (table 0125)
    fields[2] = compose(enc, ident.code, ident.text, ident.system)  # OBX-3
    fields[3] = enc.escape_text(obs.sub_id or "")  # OBX-4
    fields[4] = _value(enc, obs)  # OBX-5
    if obs.units:  # OBX-6 units, UCUM (e.g. mL^mL^UCUM)
        fields[5] = compose(enc, obs.units, obs.units, "UCUM")
    fields[6] = enc.escape_text(obs.reference_range or "")  # OBX-7
    fields[7] = obs.abnormal_flag.value if obs.abnormal_flag else ""  # OBX-8 (table 0078)
    fields[10] = status.value  # OBX-11 observation result status (table 0085)
    fields[13] = when  # OBX-14 date/time of the observation
    return segment(enc, "OBX", *fields)


def _value(enc: Encoding, obs: Observation) -> str:
    value = obs.value
    if obs.value_type == "NM":
        return format_number(value, obs.identifier.code)
    if obs.value_type in ("CWE", "CE"):
        if not isinstance(value, CodedValue):
            raise InvalidInputError(
                f"OBX {obs.identifier.code}: value type {obs.value_type} needs a CodedValue"
            )
        return compose(enc, value.code, value.text, value.system)
    if isinstance(value, CodedValue):
        raise InvalidInputError(
            f"OBX {obs.identifier.code}: a CodedValue needs value type CWE, not {obs.value_type}"
        )
    return enc.escape_text(str(value))


def format_number(value: object, what: str = "value") -> str:
    """HL7 NM: optional sign, digits, optional decimal point; no exponent, no NaN."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidInputError(f"OBX {what}: NM value {value!r} is not a number")
    try:
        number = float(value)
    except ValueError:
        raise InvalidInputError(f"OBX {what}: NM value {value!r} is not a number") from None
    if not math.isfinite(number):
        raise InvalidInputError(f"OBX {what}: NM value {value!r} is not finite")
    if isinstance(value, int):
        return str(value)
    text = f"{number:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _service_from_order(order: OrderContext | None) -> CodedValue | None:
    if order is None or not order.procedure_code:
        return None
    return CodedValue(code=order.procedure_code, text=order.procedure_text or "", system="L")


def _notes(algorithm: ModelRef, status: ResultStatus) -> list[str]:
    state = (
        "AI-generated, preliminary: not yet reviewed by a radiologist."
        if status is ResultStatus.PRELIMINARY
        else "AI-generated, reviewed by a radiologist."
    )
    run = f", run {algorithm.run_id}" if algorithm.run_id else ""
    notes = [f"{state} Model {algorithm.name} version {algorithm.version}{run}."]
    if not algorithm.approved:
        notes.append("This model version is not approved for clinical use.")
    return notes


def _result_status(value: ResultStatus | str) -> ResultStatus:
    try:
        return ResultStatus(value)
    except ValueError:
        allowed = ", ".join(s.value for s in ResultStatus)
        raise InvalidInputError(f"OBR-25 result status {value!r} is not one of {allowed}") from None
