"""A blocking MLLP peer that may misbehave: it writes any bytes and reports what came back.

Independent of pacsflow's own MLLP code on purpose (the client there refuses to send
anything that is not HL7), so the tests can send what a broken or hostile sender sends.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
# Between fragments of one message: long enough for the listener to read them separately.
DRIBBLE_PAUSE_S = 0.003


class PeerClosed(ConnectionError):
    """The listener closed (or reset) the connection; `data` is what it sent before."""

    def __init__(self, data: bytes) -> None:
        super().__init__(f"connection closed after {len(data)} unframed bytes")
        self.data = data


@dataclass
class RawMllpPeer:
    host: str
    port: int
    timeout_s: float = 15.0
    _sock: socket.socket | None = field(default=None, init=False, repr=False)
    _buffer: bytearray = field(default_factory=bytearray, init=False, repr=False)
    connections_opened: int = field(default=0, init=False)

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def _connection(self) -> socket.socket:
        if self._sock is None:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
            self._sock.setsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
            )  # small writes go out alone
            self._buffer.clear()
            self.connections_opened += 1
        return self._sock

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def send(self, wire: bytes, *, half_close: bool = False, pieces: Sequence[int] = ()) -> None:
        """Write bytes, the first ones in `pieces` (sizes) with a pause after each and the
        last byte on its own when pieces are given, so the listener reads a message in
        fragments (an end block split across reads). A listener that already closed on
        earlier garbage is not an error here (the caller then expects the close)."""
        sock = self._connection()
        writes: list[bytes] = []
        offset = 0
        for size in pieces:
            if offset < len(wire) - 1:
                writes.append(wire[offset : min(offset + size, len(wire) - 1)])
                offset += len(writes[-1])
        writes += [wire[offset:-1], wire[-1:]] if pieces else [wire]
        try:
            for number, data in enumerate(writes):
                if number:
                    time.sleep(DRIBBLE_PAUSE_S)
                sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def read_frame(self) -> bytes:
        """The next MLLP payload; PeerClosed if the listener closes first. A listener that
        neither answers nor closes makes the socket time out (TimeoutError)."""
        sock = self._connection()
        while True:
            start = self._buffer.find(START_BLOCK)
            end = self._buffer.find(END_BLOCK, max(start, 0))
            if start >= 0 and end >= 0:
                payload = bytes(self._buffer[start + 1 : end])
                del self._buffer[: end + len(END_BLOCK)]
                return payload
            chunk = self._recv(sock)
            if not chunk:
                data = bytes(self._buffer)
                self.close()
                raise PeerClosed(data)
            self._buffer += chunk

    def read_until_closed(self) -> bytes:
        """Everything the listener sends until it closes the connection."""
        sock = self._connection()
        while chunk := self._recv(sock):
            self._buffer += chunk
        data = bytes(self._buffer)
        self.close()
        return data

    @staticmethod
    def _recv(sock: socket.socket) -> bytes:
        try:
            return sock.recv(65536)
        except ConnectionResetError:  # closed with our unread garbage in its buffer
            return b""
