"""Keep attribute values out of pydicom's own log lines.

pydicom logs a warning for each value it finds invalid while reading, quoting the value
("Invalid value for VR IS: '19410203x'"). In a listener those values come from the sender
and may be patient data, so the quoted parts are withheld; the rest of the line (which VR,
which rule) stays, and the object is still identified by its UIDs in pacsflow's own lines.
"""

from __future__ import annotations

import logging
import re

PYDICOM_LOGGER = "pydicom"
WITHHELD = "<value withheld>"

# pydicom quotes values with repr(): '...' or "..." (with backslash escapes inside).
_QUOTED = re.compile(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*\"""")


def redact_quoted(message: str) -> str:
    return _QUOTED.sub(WITHHELD, message)


class QuotedValueRedactor(logging.Filter):
    """Rewrites a record's message with every quoted value withheld."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_quoted(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_REDACTOR = QuotedValueRedactor()


def redact_pydicom_logs() -> None:
    """Install the redactor on pydicom's logger (idempotent: one filter object)."""
    logging.getLogger(PYDICOM_LOGGER).addFilter(_REDACTOR)
