"""MLLP framing (HL7 v2 Minimal Lower Layer Protocol, release 2): <VT> payload <FS><CR>.

`MllpDecoder` is a sans-IO decoder shared by the server and the client: feed it bytes as
they arrive and it returns frames, oversize notices and framing errors. It never holds
more than ``max_message_bytes`` plus one read of payload, whatever the peer sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
# Bytes tolerated between frames: some senders end each frame with an extra CR or CRLF.
_INTER_FRAME_WHITESPACE = frozenset(b"\r\n")
# Bytes of an oversize message kept to acknowledge it (its MSH segment).
HEAD_BYTES = 8192


def frame(payload: bytes) -> bytes:
    """Wrap one message in MLLP start and end blocks."""
    return START_BLOCK + payload + END_BLOCK


@dataclass(frozen=True)
class Frame:
    """A complete message payload (without the MLLP blocks)."""

    payload: bytes


@dataclass(frozen=True)
class OversizeFrame:
    """A message longer than the limit, read to its end block and dropped; ``head`` holds its
    first bytes so the receiver can still answer AR from the MSH."""

    head: bytes
    size: int


@dataclass(frozen=True)
class FramingError:
    """The stream is not MLLP (bytes outside a frame, a start block inside a frame, or an
    oversize message that does not look like HL7); the connection should be closed."""

    reason: str


MllpEvent = Frame | OversizeFrame | FramingError


class _State(Enum):
    BETWEEN = auto()
    IN_FRAME = auto()
    DISCARDING = auto()
    FAILED = auto()


class MllpDecoder:
    """Incremental MLLP decoder with a payload limit.

    ``max_discard_bytes`` bounds how long an oversize message is read (and dropped) in the
    hope of answering it; beyond that the stream is treated as a framing error.
    """

    def __init__(self, max_message_bytes: int, *, max_discard_bytes: int | None = None) -> None:
        if max_message_bytes < 1:
            raise ValueError(f"max_message_bytes must be positive, got {max_message_bytes}")
        self.max_message_bytes = max_message_bytes
        self.max_discard_bytes = max_discard_bytes or max(100 * max_message_bytes, 64 << 20)
        self._state = _State.BETWEEN
        self._buffer = bytearray()
        self._head = b""
        self._size = 0

    @property
    def in_frame(self) -> bool:
        """True while a started message has not reached its end block."""
        return self._state in (_State.IN_FRAME, _State.DISCARDING)

    def feed(self, data: bytes) -> list[MllpEvent]:
        events: list[MllpEvent] = []
        view = memoryview(data)
        pos = 0
        while pos < len(view) and self._state is not _State.FAILED:
            if self._state is _State.BETWEEN:
                pos = self._skip_to_start(view, pos, events)
            elif self._state is _State.IN_FRAME:
                pos = self._read_frame(data, pos, events)
            else:
                pos = self._discard(data, pos, events)
        return events

    def _skip_to_start(self, view: memoryview, pos: int, events: list[MllpEvent]) -> int:
        byte = view[pos]
        if byte == START_BLOCK[0]:
            self._state = _State.IN_FRAME
            self._buffer.clear()
            return pos + 1
        if byte in _INTER_FRAME_WHITESPACE:
            return pos + 1
        self._fail(events, f"byte 0x{byte:02x} outside an MLLP frame (expected 0x0b)")
        return len(view)

    def _read_frame(self, data: bytes, pos: int, events: list[MllpEvent]) -> int:
        # Search from one byte back: the FS of the end block may have ended the last chunk.
        search_from = max(len(self._buffer) - 1, 0)
        chunk = data[pos:]
        self._buffer += chunk
        end = self._buffer.find(END_BLOCK, search_from)
        limit = end if end >= 0 else len(self._buffer)
        if self._buffer.find(START_BLOCK, search_from, limit) >= 0:
            self._fail(events, "start block inside a frame (missing end block)")
            return len(data)
        if end >= 0:
            consumed = end + len(END_BLOCK) - (len(self._buffer) - len(chunk))
            payload = bytes(self._buffer[:end])
            self._buffer.clear()
            self._state = _State.BETWEEN
            if len(payload) > self.max_message_bytes:
                events.append(OversizeFrame(payload[:HEAD_BYTES], len(payload)))
            else:
                events.append(Frame(payload))
            return pos + consumed
        if len(self._buffer) > self.max_message_bytes:
            self._head = bytes(self._buffer[:HEAD_BYTES])
            if not self._head.startswith(b"MSH"):
                self._fail(events, "oversize message that does not start with MSH")
                return len(data)
            # Keep the last byte: it may be the FS of an end block split across reads.
            self._size = len(self._buffer) - 1
            del self._buffer[:-1]
            self._state = _State.DISCARDING
            if self._size > self.max_discard_bytes:
                self._fail(events, f"message longer than {self.max_discard_bytes} bytes")
        return len(data)

    def _discard(self, data: bytes, pos: int, events: list[MllpEvent]) -> int:
        carried = len(self._buffer)  # 0 or 1 byte kept from the previous read
        window = bytes(self._buffer) + data[pos:]
        end = window.find(END_BLOCK)
        if window.find(START_BLOCK, 0, end if end >= 0 else len(window)) >= 0:
            self._fail(events, "start block inside an oversize frame (missing end block)")
            return len(data)
        if end >= 0:
            events.append(OversizeFrame(self._head, self._size + end))
            self._buffer.clear()
            self._head = b""
            self._state = _State.BETWEEN
            return pos + end + len(END_BLOCK) - carried
        self._size += len(window) - 1
        self._buffer[:] = window[-1:]
        if self._size > self.max_discard_bytes:
            self._fail(events, f"message longer than {self.max_discard_bytes} bytes")
        return len(data)

    def _fail(self, events: list[MllpEvent], reason: str) -> None:
        self._state = _State.FAILED
        self._buffer.clear()
        events.append(FramingError(reason))
