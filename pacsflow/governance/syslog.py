"""Syslog (RFC 5424) sender for audit messages, over UDP (RFC 5426) or TCP.

DICOM PS3.15 A.6/A.7 and IHE ITI-20: facility 10 (security/authorization), severity 5
(notice), so PRI is <85>; MSGID "IHE+RFC-3881"; the MSG is the XML audit message, UTF-8
with a BOM (RFC 5424 6.4). Over TCP each message is framed by octet counting
(RFC 6587 3.4.1, the framing RFC 5425 uses over TLS).
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from types import TracebackType
from typing import Literal

from pacsflow.errors import InvalidInputError, PeerUnavailableError

FACILITY_AUTHPRIV = 10
SEVERITY_NOTICE = 5
MSGID_ATNA = "IHE+RFC-3881"
BOM = b"\xef\xbb\xbf"
NILVALUE = "-"
Transport = Literal["udp", "tcp"]


def _header_field(value: str | None, max_len: int) -> str:
    """PRINTUSASCII without spaces, truncated (RFC 5424 6.2), or the NILVALUE."""
    if not value:
        return NILVALUE
    cleaned = "".join(c for c in value if 33 <= ord(c) <= 126)
    return cleaned[:max_len] or NILVALUE


def rfc5424_message(
    msg: str,
    *,
    app_name: str = "pacsflow",
    msgid: str = MSGID_ATNA,
    hostname: str | None = None,
    procid: str | None = None,
    timestamp: datetime | None = None,
    facility: int = FACILITY_AUTHPRIV,
    severity: int = SEVERITY_NOTICE,
) -> bytes:
    """One SYSLOG-MSG: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - BOM MSG`."""
    if not (0 <= facility <= 23 and 0 <= severity <= 7):
        raise InvalidInputError("syslog facility must be 0-23 and severity 0-7")
    ts = (timestamp or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="milliseconds")
    header = " ".join(
        [
            f"<{facility * 8 + severity}>1",
            ts.replace("+00:00", "Z"),
            _header_field(hostname or socket.gethostname(), 255),
            _header_field(app_name, 48),
            _header_field(procid or str(os.getpid()), 128),
            _header_field(msgid, 32),
            NILVALUE,  # no STRUCTURED-DATA
        ]
    )
    return header.encode("ascii") + b" " + BOM + msg.encode("utf-8")


def parse_endpoint(value: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 as [addr]:port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInputError(f"syslog endpoint must be HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


class SyslogSender:
    """Sends SYSLOG-MSGs to one collector; use as a context manager."""

    def __init__(
        self, host: str, port: int, transport: Transport = "udp", timeout_s: float = 10.0
    ) -> None:
        if transport not in ("udp", "tcp"):
            raise InvalidInputError(f"syslog transport must be udp or tcp, got {transport!r}")
        self.address = (host, port)
        self.transport = transport
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None

    def __enter__(self) -> SyslogSender:
        try:
            if self.transport == "tcp":
                self._sock = socket.create_connection(self.address, timeout=self.timeout_s)
            else:
                family = socket.getaddrinfo(*self.address, type=socket.SOCK_DGRAM)[0][0]
                self._sock = socket.socket(family, socket.SOCK_DGRAM)
                self._sock.settimeout(self.timeout_s)
                self._sock.connect(self.address)
        except OSError as exc:
            raise PeerUnavailableError(
                f"syslog collector {self.address[0]}:{self.address[1]} ({self.transport}): {exc}"
            ) from exc
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def send(self, message: bytes) -> None:
        if self._sock is None:
            raise RuntimeError("SyslogSender used outside its with-block")
        try:
            if self.transport == "tcp":
                self._sock.sendall(str(len(message)).encode("ascii") + b" " + message)
            else:
                self._sock.send(message)
        except OSError as exc:
            raise PeerUnavailableError(f"syslog send failed: {exc}") from exc
