"""ORM^O01 priority update sent to the RIS when a pathway moves a study up the worklist.

ORC-1 "XX" (order changed, unsolicited; HL7 table 0119) with the new priority in the TQ
priority component (TQ.6) of ORC-7 and OBR-27 (HL7 table 0027: S stat, A ASAP, R routine).
ORM^O01 of v2.5.1 has no TQ1 segment; ``include_tq1=True`` adds one (TQ1-9) for RIS
interfaces that read only TQ1.
"""

from __future__ import annotations

from datetime import datetime

from pacsflow.domain import OrderContext, Priority
from pacsflow.errors import InvalidInputError
from pacsflow.hl7.builder import compose, hl7_timestamp, message_text, msh_segment, segment
from pacsflow.hl7.encoding import DEFAULT_ENCODING
from pacsflow.hl7.tables import OrderControl, OrderPriority

_PRIORITY_FOR_TRIAGE = {
    Priority.CRITICAL: OrderPriority.STAT,
    Priority.URGENT: OrderPriority.ASAP,
    Priority.ROUTINE: OrderPriority.ROUTINE,
}


def order_priority(priority: Priority | OrderPriority | str) -> OrderPriority:
    """Map a pacsflow triage priority (or an HL7 table 0027 code) to table 0027."""
    if isinstance(priority, Priority) or priority in {p.value for p in Priority}:
        triage = Priority(priority)
        if triage not in _PRIORITY_FOR_TRIAGE:
            raise InvalidInputError(
                f"triage priority {triage.value!r} has no RIS priority; send only "
                f"{', '.join(p.value for p in _PRIORITY_FOR_TRIAGE)}"
            )
        return _PRIORITY_FOR_TRIAGE[triage]
    try:
        return OrderPriority(str(priority).upper())
    except ValueError:
        allowed = ", ".join(p.value for p in OrderPriority)
        raise InvalidInputError(
            f"priority {priority!r} is not an HL7 table 0027 code ({allowed})"
        ) from None


def build_priority_update(
    *,
    accession_number: str,
    patient_id: str,
    priority: Priority | OrderPriority | str,
    control_id: str,
    sending_facility: str,
    receiving_application: str,
    order: OrderContext | None = None,
    receiving_facility: str = "",
    sending_application: str = "PACSFLOW",
    include_tq1: bool = False,
    timestamp: datetime | None = None,
    processing_id: str = "P",
) -> str:
    """ORM^O01 v2.5.1: PID, ORC (XX, new priority in ORC-7.6), OBR (accession in OBR-18,
    priority in OBR-27.6) and optionally TQ1 (TQ1-9)."""
    for name, value in (
        ("accession_number", accession_number),
        ("patient_id", patient_id),
        ("control_id", control_id),
    ):
        if not value or not value.strip():
            raise InvalidInputError(f"ORM^O01 priority update needs a non-empty {name}")
    code = order_priority(priority).value
    enc = DEFAULT_ENCODING
    placer = order.placer_order_number if order else None
    filler = (order.filler_order_number if order else None) or accession_number
    timing = compose(enc, "", "", "", "", "", code)  # TQ: quantity^interval^...^priority
    service = compose(
        enc,
        (order.procedure_code or "") if order else "",
        (order.procedure_text or "") if order else "",
        "L" if order and order.procedure_code else "",
    )
    obr = [""] * 27
    obr[0] = "1"
    obr[1] = compose(enc, placer)  # OBR-2
    obr[2] = compose(enc, filler)  # OBR-3
    obr[3] = service  # OBR-4 universal service id
    obr[17] = compose(enc, accession_number)  # OBR-18 accession (IHE SWF)
    obr[26] = timing  # OBR-27 quantity/timing
    segments = [
        msh_segment(
            enc,
            "ORM^O01^ORM_O01",
            sending_application=sending_application,
            sending_facility=sending_facility,
            receiving_application=receiving_application,
            receiving_facility=receiving_facility,
            control_id=control_id,
            timestamp=hl7_timestamp(timestamp),
            processing_id=processing_id,
        ),
        segment(enc, "PID", "1", "", compose(enc, patient_id)),
        segment(
            enc,
            "ORC",
            OrderControl.CHANGED_UNSOLICITED.value,  # ORC-1 XX
            compose(enc, placer),  # ORC-2
            compose(enc, filler),  # ORC-3
            "",
            "",
            "",
            timing,  # ORC-7 quantity/timing, priority in component 6
        ),
    ]
    if include_tq1:
        segments.append(segment(enc, "TQ1", "1", "", "", "", "", "", "", "", code))  # TQ1-9
    segments.append(segment(enc, "OBR", *obr))
    return message_text(segments)
