"""General acknowledgment (ACK) messages: build one for a received message, read a peer's.

HL7 v2.5.1 section 2.14.1 (ACK), 2.15.8 (MSA) and 2.15.5 (ERR). Original-mode codes
(table 0008): AA accept, AE error (fix / retry later), AR reject (do not resend).
"""

from __future__ import annotations

from datetime import datetime

from pacsflow.hl7.builder import (
    compose,
    hl7_timestamp,
    message_text,
    new_control_id,
    segment,
    version_tuple,
)
from pacsflow.hl7.errors import ErrorLocation, Hl7ParseError
from pacsflow.hl7.message import Hl7Message, parse_header, parse_message
from pacsflow.hl7.records import Ack
from pacsflow.hl7.tables import AckCode, ErrorCode, Severity

# MSA-3 text message is ST(80) in v2.3-2.5.1.
_MSA_TEXT_LENGTH = 80


def build_ack(
    message_or_raw_msh: Hl7Message | str,
    code: AckCode | str,
    text: str | None = None,
    error_location: ErrorLocation | str | None = None,
    error_code: ErrorCode | str | None = None,
    *,
    control_id: str | None = None,
    timestamp: datetime | None = None,
    severity: Severity = Severity.ERROR,
) -> str:
    """The ACK for a message: MSH, MSA and, for AE/AR, ERR.

    MSH swaps sender and receiver (MSH-3/4 <-> MSH-5/6), MSH-9 is ACK^<trigger>^ACK
    (the structure component exists from v2.3.1 on, so v2.3 gets ACK^<trigger>), MSH-10
    a new control id, MSH-11/MSH-12 and MSH-18 (character set, when given) as received.
    MSA-2 echoes the received MSH-10. ERR carries ERR-2 location, ERR-3 table 0357 code,
    ERR-4 severity and the full text in ERR-8; for v2.3/2.4 receivers ERR-1 repeats
    location and code in the older ELD form.
    """
    original = (
        message_or_raw_msh
        if isinstance(message_or_raw_msh, Hl7Message)
        else parse_header(message_or_raw_msh)
    )
    ack_code = AckCode(code)
    enc = original.encoding
    msh = original.msh
    version = original.version or "2.5.1"
    has_structure = version_tuple(version) >= (2, 3, 1)
    msh9 = compose(enc, "ACK", original.trigger_event, "ACK" if has_structure else None)
    # MSH-18 as received (MSH-13..17 empty): the ACK goes out in the message's character
    # set, and says so.
    charset = msh.field(18)
    msh13_to_18 = ("", "", "", "", "", charset) if charset else ()
    segments = [
        segment(
            enc,
            "MSH",
            msh.field(5),  # MSH-3 sending application = their receiving application
            msh.field(6),
            msh.field(3),
            msh.field(4),
            hl7_timestamp(timestamp),
            "",
            msh9,
            enc.escape_text(control_id or new_control_id()),
            msh.field(11) or "P",
            msh.field(12) or enc.escape_text(version),
            *msh13_to_18,
        ),
        segment(
            enc,
            "MSA",
            ack_code.value,
            enc.escape_text(original.control_id),
            enc.escape_text(_one_line(text)[:_MSA_TEXT_LENGTH]) if text else "",
        ),
    ]
    if ack_code in (AckCode.ERROR, AckCode.REJECT):
        segments.append(
            _err_segment(original, ack_code, text, error_location, error_code, severity)
        )
    return message_text(segments)


def _err_segment(
    original: Hl7Message,
    ack_code: AckCode,
    text: str | None,
    error_location: ErrorLocation | str | None,
    error_code: ErrorCode | str | None,
    severity: Severity,
) -> str:
    enc = original.encoding
    location = (
        ErrorLocation.parse(error_location) if isinstance(error_location, str) else error_location
    )
    if error_code is None:
        error_code = (
            ErrorCode.UNSUPPORTED_MESSAGE_TYPE
            if ack_code is AckCode.REJECT
            else ErrorCode.APPLICATION_INTERNAL_ERROR
        )
    code = ErrorCode(error_code)
    erl = compose(enc, *location.components()) if location else ""
    err3 = compose(enc, code.value, code.text, "HL70357")
    err1 = ""
    if version_tuple(original.version or "2.5.1") < (2, 5):
        # ERR-1 (ELD) is required before v2.5: segment ^ sequence ^ field ^ code&text&table.
        sub = enc.subcomponent
        eld_code = sub.join([code.value, enc.escape_text(code.text), "HL70357"])
        where = location.components() if location else ["", "", ""]
        err1 = enc.component.join([*(enc.escape_text(c) for c in where), eld_code])
    return segment(
        enc, "ERR", err1, erl, err3, severity.value, "", "", "", enc.escape_text(text or "")
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())


def parse_ack(text: str) -> Ack:
    """Read a peer's acknowledgment: MSA-1 code, MSA-2 acknowledged control id, MSA-3 text,
    and the first ERR's code and location (ERR-3 / ERR-2, or ERR-1 in v2.3/2.4)."""
    message = parse_message(text)
    msa = message.segment("MSA")
    if msa is None:
        raise Hl7ParseError(f"{message.message_type or 'reply'} has no MSA segment")
    raw_code = msa.get(1).upper()
    try:
        code = AckCode(raw_code)
    except ValueError:
        raise Hl7ParseError(f"MSA-1 {raw_code!r} is not an HL7 table 0008 code") from None
    err = message.segment("ERR")
    error_code = error_location = ""
    if err is not None:
        error_code = err.get(3, 1) or err.get(1, 4)
        error_location = "^".join(p for p in (err.get(2, 1), err.get(2, 2), err.get(2, 3)) if p)
        if not error_location:
            error_location = "^".join(p for p in (err.get(1, 1), err.get(1, 2), err.get(1, 3)) if p)
    return Ack(
        code=code,
        acknowledged_control_id=msa.get(2),
        text=msa.get(3),
        control_id=message.control_id,
        error_code=error_code,
        error_location=error_location,
        raw=text,
    )
