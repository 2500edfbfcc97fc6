"""Errors of the HL7 layer, each able to say which field is wrong (ERR-2) and why (ERR-3)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pacsflow.errors import InvalidInputError
from pacsflow.hl7.tables import AckCode, ErrorCode

_SEGMENT = re.compile(r"^[A-Z][A-Z0-9]{2}$")


@dataclass(frozen=True)
class ErrorLocation:
    """ERR-2 error location (data type ERL): segment id, segment sequence, field position."""

    segment: str
    sequence: int = 1
    field: int | None = None

    @classmethod
    def parse(cls, text: str) -> ErrorLocation:
        """Accept ERL form "PID^1^3" (segment^sequence^field) or a field reference "PID-3"."""
        value = text.strip()
        if "^" in value:
            parts = value.split("^")
            segment, numbers = parts[0], parts[1:3]
            if not _SEGMENT.match(segment) or not all(p.isdigit() for p in numbers if p):
                raise ValueError(f"error location {text!r} is not SEG^sequence^field")
            sequence = int(numbers[0]) if numbers and numbers[0] else 1
            field = int(numbers[1]) if len(numbers) > 1 and numbers[1] else None
            return cls(segment, sequence, field)
        segment, _, field_text = value.partition("-")
        if not _SEGMENT.match(segment) or (field_text and not field_text.isdigit()):
            raise ValueError(f"error location {text!r} is not SEG^sequence^field or SEG-field")
        return cls(segment, 1, int(field_text) if field_text else None)

    def components(self) -> list[str]:
        return [self.segment, str(self.sequence), "" if self.field is None else str(self.field)]

    def __str__(self) -> str:
        return "^".join(self.components()).rstrip("^")


class Hl7ParseError(InvalidInputError):
    """The bytes are not an HL7 v2 message (no MSH, bad delimiters, bad segment names)."""


class Hl7ValidationError(InvalidInputError):
    """A parsed message that pacsflow cannot accept, naming the field at fault."""

    def __init__(
        self,
        message: str,
        *,
        location: ErrorLocation | None,
        error_code: ErrorCode,
        ack_code: AckCode = AckCode.ERROR,
    ) -> None:
        super().__init__(message)
        self.location = location
        self.error_code = error_code
        self.ack_code = ack_code

    @classmethod
    def missing(
        cls, segment: str, field: int, what: str, *, sequence: int = 1
    ) -> Hl7ValidationError:
        """A required field is empty: "PID-3 patient identifier missing" (table 0357: 101)."""
        return cls(
            f"{segment}-{field} {what} missing",
            location=ErrorLocation(segment, sequence, field),
            error_code=ErrorCode.REQUIRED_FIELD_MISSING,
        )
