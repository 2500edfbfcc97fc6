"""A small, tolerant HL7 v2 (ER7) parser: message -> segments -> fields -> components.

Tolerant of what real senders do: versions 2.3 to 2.5.1 (and later 2.x), Z-segments,
``\\r``, ``\\n`` or ``\\r\\n`` segment ends, custom delimiters from MSH-1/MSH-2. It knows no
message structure; `pacsflow.hl7.interpret` reads the fields pacsflow needs.

Field numbering follows the standard: ``segment.field(3)`` is SEG-3. For MSH, MSH-1 is the
field separator itself and MSH-2 the encoding characters, so MSH-9 is still ``field(9)``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from pacsflow.hl7.encoding import Encoding
from pacsflow.hl7.errors import Hl7ParseError

_SEGMENT_END = re.compile(r"\r\n|\r|\n")
_SEGMENT_NAME = re.compile(r"^[A-Z][A-Z0-9]{2}$")
# Bytes of a payload scanned for MSH-18 before decoding (the MSH segment is short).
_HEADER_SCAN_BYTES = 4096
_UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Segment:
    """One segment: ``fields[n]`` is the raw (escaped) text of SEG-n, ``fields[0]`` the name."""

    fields: tuple[str, ...]
    encoding: Encoding

    @property
    def name(self) -> str:
        return self.fields[0]

    def field(self, position: int) -> str:
        """Raw text of SEG-position, all repetitions; "" when absent."""
        if position < 1:
            raise ValueError(f"HL7 field positions start at 1, got {position}")
        return self.fields[position] if position < len(self.fields) else ""

    def repetitions(self, position: int) -> list[str]:
        """Raw repetitions of SEG-position (MSH-2 is never split)."""
        raw = self.field(position)
        if not raw:
            return []
        if self.name == "MSH" and position <= 2:
            return [raw]
        return raw.split(self.encoding.repetition)

    def get(
        self, position: int, component: int = 1, subcomponent: int = 1, *, repetition: int = 1
    ) -> str:
        """Unescaped SEG-position.component.subcomponent of one repetition ("" if absent)."""
        if self.name == "MSH" and position <= 2:
            return self.field(position)
        reps = self.repetitions(position)
        if repetition > len(reps):
            return ""
        return self._pick(reps[repetition - 1], component, subcomponent)

    def components(self, position: int, *, repetition: int = 1) -> list[str]:
        """All unescaped components of one repetition of SEG-position (subcomponents joined)."""
        reps = self.repetitions(position)
        if repetition > len(reps):
            return []
        enc = self.encoding
        return [enc.unescape_text(c) for c in reps[repetition - 1].split(enc.component)]

    def _pick(self, raw: str, component: int, subcomponent: int) -> str:
        enc = self.encoding
        parts = raw.split(enc.component)
        if component > len(parts):
            return ""
        subs = parts[component - 1].split(enc.subcomponent)
        if subcomponent > len(subs):
            return ""
        return enc.unescape_text(subs[subcomponent - 1]).strip()

    def to_er7(self) -> str:
        if self.name == "MSH":  # fields[1] is MSH-1, the separator itself
            return "MSH" + self.encoding.field + self.encoding.field.join(self.fields[2:])
        return self.encoding.field.join(self.fields)


@dataclass(frozen=True)
class Hl7Message:
    """A parsed HL7 v2 message with typed access to its MSH fields."""

    segments: tuple[Segment, ...]
    encoding: Encoding
    _index: dict[str, list[int]] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for i, seg in enumerate(self.segments):
            self._index.setdefault(seg.name, []).append(i)

    # -- segment access ------------------------------------------------------------------
    def segment(self, name: str, occurrence: int = 1) -> Segment | None:
        """The n-th segment with this name (1-based), or None."""
        positions = self._index.get(name, [])
        return self.segments[positions[occurrence - 1]] if occurrence <= len(positions) else None

    def all(self, name: str) -> list[Segment]:
        return [self.segments[i] for i in self._index.get(name, [])]

    def __iter__(self) -> Iterator[Segment]:
        return iter(self.segments)

    @property
    def msh(self) -> Segment:
        return self.segments[0]

    # -- MSH fields (HL7 v2.5.1 section 2.14.9) -------------------------------------------
    @property
    def sending_application(self) -> str:
        return self.msh.get(3)

    @property
    def sending_facility(self) -> str:
        return self.msh.get(4)

    @property
    def receiving_application(self) -> str:
        return self.msh.get(5)

    @property
    def receiving_facility(self) -> str:
        return self.msh.get(6)

    @property
    def timestamp(self) -> str:
        return self.msh.get(7)

    @property
    def message_code(self) -> str:
        """MSH-9.1, e.g. ORM."""
        return self.msh.get(9, 1).upper()

    @property
    def trigger_event(self) -> str:
        """MSH-9.2, e.g. O01."""
        return self.msh.get(9, 2).upper()

    @property
    def message_type(self) -> str:
        """MSH-9.1^MSH-9.2 as one string, e.g. "ORM^O01" (standard delimiter regardless)."""
        return (
            f"{self.message_code}^{self.trigger_event}" if self.trigger_event else self.message_code
        )

    @property
    def control_id(self) -> str:
        """MSH-10 message control id."""
        return self.msh.get(10)

    @property
    def processing_id(self) -> str:
        """MSH-11.1 (P production, T training, D debugging)."""
        return self.msh.get(11)

    @property
    def version(self) -> str:
        """MSH-12.1, e.g. 2.5.1."""
        return self.msh.get(12)

    def to_er7(self) -> str:
        """Serialise with ``\\r`` segment terminators (the wire form)."""
        return "".join(seg.to_er7() + "\r" for seg in self.segments)


def parse_message(text: str) -> Hl7Message:
    """Parse ER7 text into segments; raise `Hl7ParseError` if it is not an HL7 v2 message."""
    text = text.lstrip("\ufeff \t\r\n\x00")
    if not text.startswith("MSH"):
        raise Hl7ParseError("message does not start with an MSH segment")
    lines = _SEGMENT_END.split(text)
    encoding = Encoding.from_msh(lines[0])
    segments: list[Segment] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue  # blank lines and the final terminator
        segments.append(_parse_segment(line, encoding, number))
    if segments[0].name != "MSH":
        raise Hl7ParseError("message does not start with an MSH segment")
    return Hl7Message(tuple(segments), encoding)


def parse_header(text: str) -> Hl7Message:
    """Parse only the MSH segment (enough to acknowledge a message whose body is unusable)."""
    text = text.lstrip("\ufeff \t\r\n\x00")
    if not text.startswith("MSH"):
        raise Hl7ParseError("message does not start with an MSH segment")
    first_line = _SEGMENT_END.split(text, maxsplit=1)[0]
    encoding = Encoding.from_msh(first_line)
    return Hl7Message((_parse_segment(first_line, encoding, 1),), encoding)


def _parse_segment(line: str, encoding: Encoding, number: int) -> Segment:
    parts = line.split(encoding.field)
    name = parts[0].strip()
    if not _SEGMENT_NAME.match(name):
        # The offending text is not quoted: after a stray segment end it is the middle of a
        # field (a patient's name, a birth date), and this message is logged and ACKed.
        raise Hl7ParseError(
            f"segment {number}: {len(name)} character(s) before the first field separator, "
            "which is not a segment name (3 characters: A-Z, then A-Z or 0-9); "
            "a segment end inside a field?"
        )
    if name == "MSH":
        # MSH-1 is the separator that split() consumed; put it back so indexes match MSH-n.
        return Segment(("MSH", encoding.field, *parts[1:]), encoding)
    return Segment((name, *parts[1:]), encoding)


def decode_payload(payload: bytes) -> tuple[str, str]:
    """Decode an MLLP payload; return (text, codec).

    MSH-18 "8859/1" selects Latin-1; otherwise UTF-8 (ASCII and "UNICODE UTF-8"), falling
    back to Latin-1, which decodes any byte, so a message is never lost to its charset.
    A leading UTF-8 byte order mark is dropped: some senders write one whatever MSH-18
    says, and decoded as Latin-1 it would hide the MSH segment.
    """
    payload = payload.removeprefix(_UTF8_BOM)
    head = payload[:_HEADER_SCAN_BYTES].split(b"\r", 1)[0].split(b"\n", 1)[0]
    if b"8859/1" in head:
        return payload.decode("latin-1"), "latin-1"
    try:
        return payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return payload.decode("latin-1"), "latin-1"
