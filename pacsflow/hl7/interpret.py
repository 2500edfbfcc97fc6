"""Read the fields pacsflow needs out of a parsed message, and say precisely what is missing.

This is pacsflow's own validation (not a conformance profile): a message is usable when its
MSH can be acknowledged and the identifiers pacsflow keys on are present. Field positions
are HL7 v2.5.1 and hold for 2.3-2.5.1 unless noted.
"""

from __future__ import annotations

from datetime import date, datetime

from pacsflow.domain import OrderContext
from pacsflow.hl7.errors import ErrorLocation, Hl7ValidationError
from pacsflow.hl7.message import Hl7Message, Segment
from pacsflow.hl7.records import (
    Hl7Content,
    MergeMessage,
    MessageHeader,
    OrderEvent,
    OrderMessage,
    PatientMerge,
    PatientUpdate,
    Provider,
)
from pacsflow.hl7.tables import AckCode, ErrorCode

ORDER_TYPES = frozenset({("ORM", "O01"), ("OMI", "O23")})
PATIENT_UPDATE_EVENTS = frozenset({"A01", "A04", "A08"})
MERGE_EVENTS = frozenset({"A40"})
SUPPORTED_TYPES: frozenset[tuple[str, str]] = ORDER_TYPES | {
    ("ADT", e) for e in PATIENT_UPDATE_EVENTS | MERGE_EVENTS
}


def validate_header(message: Hl7Message) -> MessageHeader:
    """Check the MSH fields needed to acknowledge and audit any message (any type).

    MSH-9 message type, MSH-10 control id and MSH-12 version must be present; the version
    must be 2.x.
    """
    if not message.message_code:
        raise Hl7ValidationError.missing("MSH", 9, "message type")
    if not message.control_id:
        raise Hl7ValidationError.missing("MSH", 10, "message control id")
    version = message.version
    if not version:
        raise Hl7ValidationError.missing("MSH", 12, "version id")
    if not version.startswith("2."):
        raise Hl7ValidationError(
            f"MSH-12 version {version!r} is not HL7 v2",
            location=ErrorLocation("MSH", 1, 12),
            error_code=ErrorCode.UNSUPPORTED_VERSION_ID,
            ack_code=AckCode.REJECT,
        )
    return MessageHeader(
        control_id=message.control_id,
        message_type=message.message_type,
        version=version,
        sending_application=message.sending_application,
        sending_facility=message.sending_facility,
        sent_at=message.timestamp,
    )


def check_supported(message: Hl7Message) -> None:
    """Refuse (AR) message types pacsflow does not take: table 0357 codes 200 / 201."""
    code, event = message.message_code, message.trigger_event
    if (code, event) in SUPPORTED_TYPES:
        return
    known_code = any(code == c for c, _ in SUPPORTED_TYPES)
    raise Hl7ValidationError(
        f"MSH-9 message type {message.message_type} is not supported "
        f"(pacsflow takes {', '.join(sorted(f'{c}^{e}' for c, e in SUPPORTED_TYPES))})",
        location=ErrorLocation("MSH", 1, 9),
        error_code=(
            ErrorCode.UNSUPPORTED_EVENT_CODE if known_code else ErrorCode.UNSUPPORTED_MESSAGE_TYPE
        ),
        ack_code=AckCode.REJECT,
    )


def interpret(message: Hl7Message, *, received_at: datetime | None = None) -> Hl7Content:
    """Turn an inbound message into its typed record, or raise `Hl7ValidationError`.

    ORM^O01 / OMI^O23 -> `OrderMessage`; ADT^A01/A04/A08 -> `PatientUpdate`;
    ADT^A40 -> `MergeMessage`.
    """
    header = validate_header(message)
    check_supported(message)
    code, event = message.message_code, message.trigger_event
    if (code, event) in ORDER_TYPES:
        return read_order(message, header, received_at=received_at)
    if event in MERGE_EVENTS:
        return read_merge(message, header)
    return read_patient_update(message, header)


# -- orders -----------------------------------------------------------------------------------
def read_order(
    message: Hl7Message, header: MessageHeader, *, received_at: datetime | None = None
) -> OrderMessage:
    """ORM^O01 / OMI^O23: one `OrderEvent` per ORC group (ORC, TQ1, OBR, IPC ...)."""
    pid = message.segment("PID")
    patient_id = _patient_id(pid)
    is_omi = message.message_code == "OMI"
    orders: list[OrderEvent] = []
    for group in _order_groups(message):
        orders.append(_read_order_group(group, patient_id, is_omi, received_at))
    if not orders:
        raise Hl7ValidationError(
            f"{message.message_type} has no ORC/OBR order segment",
            location=ErrorLocation("ORC", 1, None),
            error_code=ErrorCode.SEGMENT_SEQUENCE_ERROR,
        )
    return OrderMessage(header=header, patient_id=patient_id, orders=orders)


class _OrderGroup:
    """Segments of one order, with each segment's occurrence number in the message (ERR-2)."""

    def __init__(self) -> None:
        self.segments: dict[str, tuple[Segment, int]] = {}

    def add(self, segment: Segment, occurrence: int) -> None:
        self.segments.setdefault(segment.name, (segment, occurrence))

    def get(self, name: str) -> Segment | None:
        entry = self.segments.get(name)
        return entry[0] if entry else None

    def occurrence(self, name: str) -> int:
        entry = self.segments.get(name)
        return entry[1] if entry else 1


def _order_groups(message: Hl7Message) -> list[_OrderGroup]:
    """Split at each ORC (and at an OBR that would be the group's second)."""
    groups: list[_OrderGroup] = []
    counts: dict[str, int] = {}
    current: _OrderGroup | None = None
    for segment in message:
        counts[segment.name] = counts.get(segment.name, 0) + 1
        name = segment.name
        if name == "ORC" or (name == "OBR" and (current is None or current.get("OBR"))):
            current = _OrderGroup()
            groups.append(current)
        if current is not None and name in {"ORC", "OBR", "TQ1", "IPC"}:
            current.add(segment, counts[name])
    return groups


def _read_order_group(
    group: _OrderGroup, patient_id: str, is_omi: bool, received_at: datetime | None
) -> OrderEvent:
    orc, obr, tq1, ipc = group.get("ORC"), group.get("OBR"), group.get("TQ1"), group.get("IPC")
    accession = _first(ipc.get(1) if is_omi and ipc else "", obr.get(18) if obr else "")
    if not accession:
        if is_omi:
            raise Hl7ValidationError.missing(
                "IPC", 1, "accession identifier (and OBR-18)", sequence=group.occurrence("IPC")
            )
        raise Hl7ValidationError.missing(
            "OBR", 18, "accession number", sequence=group.occurrence("OBR")
        )
    provider = _provider(orc, 12) or _provider(obr, 16)
    context = OrderContext(
        accession_number=accession,
        patient_id=patient_id,
        placer_order_number=_first(_get(orc, 2), _get(obr, 2)) or None,
        filler_order_number=_first(_get(orc, 3), _get(obr, 3)) or None,
        procedure_code=_first(_get(obr, 4, 1), _get(obr, 4, 4)) or None,
        procedure_text=_first(_get(obr, 4, 2), _get(obr, 4, 5)) or None,
        indication=_first(
            _get(obr, 31, 2), _get(obr, 31, 1), _get(orc, 16, 2), _get(orc, 16, 1), _get(obr, 13)
        )
        or None,
        # TQ1-9 (v2.5+) first, then the TQ.6 priority component of OBR-27 / ORC-7 (v2.3-2.4),
        # then OBR-5 (v2.3's own priority field).
        priority=_first(_get(tq1, 9), _get(obr, 27, 6), _get(orc, 7, 6), _get(obr, 5)) or None,
        ordering_provider=provider.display if provider else None,
        order_status=_get(orc, 5) or None,
        received_at=received_at,
    )
    return OrderEvent(
        order_control=_get(orc, 1).upper() or None, order=context, ordering_provider=provider
    )


def _provider(segment: Segment | None, position: int) -> Provider | None:
    if segment is None or not segment.field(position):
        return None
    provider = Provider(
        id=segment.get(position, 1),
        family_name=segment.get(position, 2),
        given_name=segment.get(position, 3),
    )
    return provider if provider.display else None


# -- patients -------------------------------------------------------------------------------
def read_patient_update(message: Hl7Message, header: MessageHeader) -> PatientUpdate:
    pid = message.segment("PID")
    if pid is None:
        raise Hl7ValidationError.missing("PID", 3, "patient identifier (no PID segment)")
    patient_id = _patient_id(pid)
    return PatientUpdate(
        header=header,
        event=message.trigger_event,
        patient_id=patient_id,
        issuer=pid.get(3, 4),
        family_name=pid.get(5, 1),
        given_name=pid.get(5, 2),
        birth_date=_birth_date(pid),
        sex=pid.get(8).upper(),
    )


def read_merge(message: Hl7Message, header: MessageHeader) -> MergeMessage:
    """ADT^A40: each PID is followed (after optional PD1/PV1) by its MRG."""
    merges: list[PatientMerge] = []
    pid_seen: tuple[Segment, int] | None = None
    counts: dict[str, int] = {}
    for segment in message:
        counts[segment.name] = counts.get(segment.name, 0) + 1
        if segment.name == "PID":
            pid_seen = (segment, counts["PID"])
        elif segment.name == "MRG":
            if pid_seen is None:
                raise Hl7ValidationError(
                    f"MRG segment {counts['MRG']} comes before any PID",
                    location=ErrorLocation("MRG", counts["MRG"], None),
                    error_code=ErrorCode.SEGMENT_SEQUENCE_ERROR,
                )
            pid, pid_number = pid_seen
            surviving = _patient_id(pid, sequence=pid_number)
            prior = segment.get(1)
            if not prior:
                raise Hl7ValidationError.missing(
                    "MRG", 1, "prior patient identifier", sequence=counts["MRG"]
                )
            merges.append(
                PatientMerge(
                    surviving_patient_id=surviving, prior_patient_id=prior, issuer=pid.get(3, 4)
                )
            )
            pid_seen = None
    if not merges:
        if message.segment("PID") is None:
            _patient_id(None)
        raise Hl7ValidationError.missing("MRG", 1, "prior patient identifier")
    return MergeMessage(header=header, merges=merges)


# -- helpers ----------------------------------------------------------------------------------
def _patient_id(pid: Segment | None, *, sequence: int = 1) -> str:
    """PID-3, first repetition, CX.1."""
    value = pid.get(3) if pid is not None else ""
    if not value:
        raise Hl7ValidationError.missing("PID", 3, "patient identifier", sequence=sequence)
    return value


def _birth_date(pid: Segment) -> date | None:
    """PID-7 (TS/DTM): the date part, YYYY[MM[DD]] -> a date when complete."""
    raw = pid.get(7)
    if not raw:
        return None
    digits = raw[:8]
    try:
        if len(digits) == 8 and digits.isdigit():
            return datetime.strptime(digits, "%Y%m%d").date()
        if len(raw) in (4, 6) and raw.isdigit():
            return None  # year or year-month only: a valid TS, but not a date
    except ValueError:
        pass
    raise Hl7ValidationError(
        "PID-7 birth date is not a date (YYYYMMDD)",
        location=ErrorLocation("PID", 1, 7),
        error_code=ErrorCode.DATA_TYPE_ERROR,
    )


def _get(segment: Segment | None, position: int, component: int = 1) -> str:
    return segment.get(position, component) if segment is not None else ""


def _first(*values: str) -> str:
    return next((v for v in values if v), "")
