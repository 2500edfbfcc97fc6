"""Helpers to write ER7 segments: escaping values and dropping empty trailing fields."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from pacsflow.hl7.encoding import Encoding

SEGMENT_TERMINATOR = "\r"


def compose(encoding: Encoding, *components: str | None) -> str:
    """One field from components, each escaped; empty trailing components dropped."""
    parts = [encoding.escape_text(c) if c else "" for c in components]
    while parts and not parts[-1]:
        parts.pop()
    return encoding.component.join(parts)


def segment(encoding: Encoding, name: str, *fields: str | None) -> str:
    """One segment from already-encoded fields (use `compose` / `escape_text` for values)."""
    values = [f or "" for f in fields]
    while values and not values[-1]:
        values.pop()
    if name == "MSH":  # fields start at MSH-3; MSH-1 and MSH-2 come from the encoding
        return encoding.field.join(["MSH" + encoding.field + encoding.msh2, *values])
    return encoding.field.join([name, *values])


def msh_segment(
    encoding: Encoding,
    message_type: str,
    *,
    sending_application: str,
    sending_facility: str,
    receiving_application: str,
    receiving_facility: str,
    control_id: str,
    timestamp: str,
    processing_id: str = "P",
    version: str = "2.5.1",
) -> str:
    """MSH for a message pacsflow originates; `message_type` as "ORU^R01^ORU_R01"."""
    enc = encoding
    return segment(
        enc,
        "MSH",
        compose(enc, sending_application),
        compose(enc, sending_facility),
        compose(enc, receiving_application),
        compose(enc, receiving_facility),
        timestamp,
        "",
        compose(enc, *message_type.split("^")),
        enc.escape_text(control_id),
        processing_id,
        version,
    )


def message_text(segments: list[str]) -> str:
    """Segments joined with the HL7 segment terminator (carriage return) after each one."""
    return "".join(s + SEGMENT_TERMINATOR for s in segments)


def hl7_timestamp(moment: datetime | None = None) -> str:
    """TS / DTM: YYYYMMDDHHMMSS+ZZZZ (a naive datetime is taken as UTC)."""
    moment = moment or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.strftime("%Y%m%d%H%M%S%z")


def new_control_id() -> str:
    """A fresh MSH-10: 20 hex characters, the ST length limit of MSH-10 in v2.3-2.5.1."""
    return secrets.token_hex(10).upper()


def version_tuple(version: str) -> tuple[int, ...]:
    """ "2.5.1" -> (2, 5, 1); unreadable parts count as 0."""
    return tuple(int(p) if p.isdigit() else 0 for p in version.split(".") if p)
