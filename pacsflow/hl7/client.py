"""MLLP client: send a message, wait for its ACK, read it.

Network trouble (refused, reset, timeout, no or unreadable ACK) raises
`PeerUnavailableError` (transient: retry later). An ACK is returned whatever its code;
the caller decides: AA done, AE retry later, AR permanent (`Ack.accepted`,
`Ack.retryable`, `Ack.rejected`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import re
import ssl as ssl_module

from pacsflow.errors import InvalidInputError, PeerUnavailableError
from pacsflow.hl7.ack import parse_ack
from pacsflow.hl7.errors import Hl7ParseError
from pacsflow.hl7.message import decode_payload, parse_header
from pacsflow.hl7.mllp import Frame, FramingError, MllpDecoder, OversizeFrame, frame
from pacsflow.hl7.records import Ack

logger = logging.getLogger(__name__)

_SEGMENT_END = re.compile(r"\r\n|\r|\n")
_READ_SIZE = 64 * 1024


def to_wire(message: str) -> str:
    """Normalise segment terminators to CR (HL7 v2.5.1 section 2.5.5), one after each segment."""
    lines = [line for line in _SEGMENT_END.split(message) if line.strip()]
    return "".join(line + "\r" for line in lines)


class MllpConnection:
    """One MLLP connection for several messages in turn (``async with``)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout_s: float,
        ssl: ssl_module.SSLContext | None = None,
        server_hostname: str | None = None,
        max_ack_bytes: int = 1_000_000,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.ssl = ssl
        self.server_hostname = server_hostname
        self.max_ack_bytes = max_ack_bytes
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._decoder = MllpDecoder(max_ack_bytes)

    @property
    def peer(self) -> str:
        return f"{self.host}:{self.port}"

    async def open(self) -> None:
        if self._writer is not None:
            return
        try:
            async with asyncio.timeout(self.timeout_s):
                self._reader, self._writer = await asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.server_hostname if self.ssl else None,
                    limit=_READ_SIZE,
                )
        except TimeoutError as exc:
            raise PeerUnavailableError(
                f"MLLP peer {self.peer}: no connection within {self.timeout_s}s"
            ) from exc
        except (OSError, ssl_module.SSLError) as exc:
            raise PeerUnavailableError(f"MLLP peer {self.peer}: cannot connect: {exc}") from exc
        self._decoder = MllpDecoder(self.max_ack_bytes)

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):  # already reset by the peer: nothing to do
                await asyncio.wait_for(writer.wait_closed(), timeout=self.timeout_s)

    async def __aenter__(self) -> MllpConnection:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def send(self, message: str) -> Ack:
        """Send one message and return the peer's ACK for it."""
        wire = to_wire(message)
        try:
            header = parse_header(wire)
        except Hl7ParseError as exc:
            raise InvalidInputError(f"not an HL7 message, not sent: {exc}") from exc
        payload = wire.encode("latin-1" if "8859/1" in wire.split("\r", 1)[0] else "utf-8")
        await self.open()
        try:
            ack = await self._exchange(payload)
        except BaseException:
            await self.close()  # the conversation is out of step; never reuse it
            raise
        if ack.acknowledged_control_id and ack.acknowledged_control_id != header.control_id:
            await self.close()
            raise PeerUnavailableError(
                f"MLLP peer {self.peer}: ACK for {ack.acknowledged_control_id!r} "
                f"while waiting for {header.control_id!r}"
            )
        logger.info(
            "MLLP %s: %s %s -> %s", self.peer, header.message_type, header.control_id, ack.code
        )
        return ack

    async def _exchange(self, payload: bytes) -> Ack:
        if self._reader is None or self._writer is None:
            raise PeerUnavailableError(f"MLLP peer {self.peer}: not connected")
        try:
            async with asyncio.timeout(self.timeout_s):
                self._writer.write(frame(payload))
                await self._writer.drain()
                reply = await self._read_frame(self._reader)
        except TimeoutError as exc:
            raise PeerUnavailableError(
                f"MLLP peer {self.peer}: no ACK within {self.timeout_s}s"
            ) from exc
        except (OSError, ssl_module.SSLError) as exc:
            raise PeerUnavailableError(f"MLLP peer {self.peer}: connection lost: {exc}") from exc
        text, _ = decode_payload(reply)
        try:
            return parse_ack(text)
        except Hl7ParseError as exc:
            raise PeerUnavailableError(f"MLLP peer {self.peer}: unreadable ACK: {exc}") from exc

    async def _read_frame(self, reader: asyncio.StreamReader) -> bytes:
        while True:
            data = await reader.read(_READ_SIZE)
            if not data:
                raise PeerUnavailableError(f"MLLP peer {self.peer}: closed without an ACK")
            for event in self._decoder.feed(data):
                if isinstance(event, Frame):
                    return event.payload
                if isinstance(event, OversizeFrame):
                    raise PeerUnavailableError(
                        f"MLLP peer {self.peer}: ACK of {event.size} bytes over the limit"
                    )
                if isinstance(event, FramingError):
                    raise PeerUnavailableError(f"MLLP peer {self.peer}: {event.reason}")


async def send_message(
    host: str,
    port: int,
    message: str,
    *,
    timeout_s: float,
    ssl: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
) -> Ack:
    """Open a connection, send one message, return its ACK, close."""
    async with MllpConnection(
        host, port, timeout_s=timeout_s, ssl=ssl, server_hostname=server_hostname
    ) as connection:
        return await connection.send(message)


def send_message_sync(
    host: str,
    port: int,
    message: str,
    *,
    timeout_s: float,
    ssl: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
) -> Ack:
    """`send_message` for synchronous callers; safe to call from inside a running loop
    (it then runs in a worker thread with its own loop)."""

    def run() -> Ack:
        return asyncio.run(
            send_message(
                host, port, message, timeout_s=timeout_s, ssl=ssl, server_hostname=server_hostname
            )
        )

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()
