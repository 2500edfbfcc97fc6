"""HL7 v2 encoding characters (MSH-1, MSH-2) and escape sequences.

HL7 v2.5.1 chapter 2, section 2.5.4 (message delimiters) and 2.7 (use of escape sequences
in text fields). Delimiters come from each message's own MSH, so every helper here takes
an `Encoding` instead of assuming ``|^~\\&``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pacsflow.hl7.errors import Hl7ParseError

# Formatting escapes that carry no character of their own (2.7.2-2.7.6): highlight on/off,
# and the FT commands; .br (line break) becomes a newline, the others are dropped.
_DROPPED_ESCAPES = ("H", "N")


@dataclass(frozen=True)
class Encoding:
    """The five delimiters of one message (2.7's truncation character is not used here)."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @classmethod
    def from_msh(cls, msh: str) -> Encoding:
        """Read MSH-1 (the character after "MSH") and MSH-2 (up to the next field separator)."""
        if not msh.startswith("MSH") or len(msh) < 5:
            raise Hl7ParseError("MSH segment missing or too short to hold MSH-1 and MSH-2")
        field = msh[3]
        end = msh.find(field, 4)
        chars = msh[4:] if end < 0 else msh[4:end]
        if not 1 <= len(chars) <= 5:
            raise Hl7ParseError(f"MSH-2 encoding characters {chars!r} must be 1 to 5 characters")
        default = cls()
        # Missing trailing characters fall back to the defaults (some senders send only "^~").
        component = chars[0]
        repetition = chars[1] if len(chars) > 1 else default.repetition
        escape = chars[2] if len(chars) > 2 else default.escape
        subcomponent = chars[3] if len(chars) > 3 else default.subcomponent
        encoding = cls(field, component, repetition, escape, subcomponent)
        delimiters = encoding.delimiters
        if len(set(delimiters)) != len(delimiters) or any(c.isalnum() for c in delimiters):
            raise Hl7ParseError(
                f"MSH-1/MSH-2 delimiters {''.join(delimiters)!r} must be distinct, non-alphanumeric"
            )
        return encoding

    @property
    def delimiters(self) -> tuple[str, str, str, str, str]:
        return (self.field, self.component, self.repetition, self.escape, self.subcomponent)

    @property
    def msh2(self) -> str:
        """The MSH-2 value for this encoding."""
        return self.component + self.repetition + self.escape + self.subcomponent

    def escape_text(self, text: str) -> str:
        """Escape delimiters in a data value (2.7.1); newlines become ``\\.br\\``."""
        e = self.escape
        out: list[str] = []
        table = {
            self.escape: f"{e}E{e}",
            self.field: f"{e}F{e}",
            self.component: f"{e}S{e}",
            self.subcomponent: f"{e}T{e}",
            self.repetition: f"{e}R{e}",
        }
        for char in text.replace("\r\n", "\n"):
            if char in table:
                out.append(table[char])
            elif char in "\r\n":
                out.append(f"{e}.br{e}")
            else:
                out.append(char)
        return "".join(out)

    def unescape_text(self, text: str) -> str:
        """Resolve escape sequences in a received value; unknown sequences are kept verbatim."""
        e = self.escape
        if e not in text:
            return text
        pattern = re.compile(re.escape(e) + r"([^" + re.escape(e) + r"\r\n]*)" + re.escape(e))
        return pattern.sub(lambda m: self._resolve(m.group(1), m.group(0)), text)

    def _resolve(self, code: str, original: str) -> str:
        simple = {
            "F": self.field,
            "S": self.component,
            "T": self.subcomponent,
            "R": self.repetition,
            "E": self.escape,
        }
        if code in simple:
            return simple[code]
        if code == ".br":
            return "\n"
        if code in _DROPPED_ESCAPES:
            return ""
        if code.startswith("X") and len(code) > 1 and len(code) % 2 == 1:
            try:
                raw = bytes.fromhex(code[1:])
            except ValueError:
                return original
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                return raw.decode("latin-1")
        return original


DEFAULT_ENCODING = Encoding()
