"""Asyncio MLLP server: many connections, several messages per connection, one ACK each.

The server owns the protocol, the caller owns the meaning: each parsed message goes to an
async handler ``(Hl7Message) -> AckResult`` (the gateway stores it; a test double records
it). The server answers every problem it can with a protocol-correct ACK and closes the
connection on what it cannot, and the listener itself keeps serving whatever one
connection sends:

- not MLLP (bytes before 0x0B, a start block inside a frame, a stalled frame): close;
- a frame over ``max_message_bytes``: read to its end block and dropped, AR (207) if its
  MSH parses, else close;
- no MSH: close; bad segments after a good MSH: AE (100);
- MSH-9 / MSH-10 / MSH-12 missing: AE (101), version not 2.x: AR (203);
- what ``validate`` raises (by default `interpret`: unsupported type AR 200/201, missing
  PID-3 or accession AE 101 ...): that ACK;
- the handler raising `Hl7ValidationError`: its ACK; raising anything else: AE (207).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as ssl_module
from collections.abc import Awaitable, Callable

from pacsflow.errors import PacsflowError, StackError
from pacsflow.hl7.ack import build_ack
from pacsflow.hl7.errors import ErrorLocation, Hl7ParseError, Hl7ValidationError
from pacsflow.hl7.interpret import interpret, validate_header
from pacsflow.hl7.message import Hl7Message, decode_payload, parse_header, parse_message
from pacsflow.hl7.mllp import Frame, FramingError, MllpDecoder, OversizeFrame, frame
from pacsflow.hl7.records import AckResult
from pacsflow.hl7.tables import AckCode, ErrorCode

logger = logging.getLogger(__name__)

Handler = Callable[[Hl7Message], Awaitable[AckResult]]
Validator = Callable[[Hl7Message], object]

_READ_SIZE = 64 * 1024


class AbortConnection(PacsflowError):
    """Raised by a handler to drop the connection without any ACK (a test double uses it to
    play a peer that dies mid-conversation)."""


class MllpServer:
    """An MLLP listener calling ``handler`` for each message.

    ``validate`` runs before the handler (default: `interpret`, pacsflow's inbound types and
    required fields); pass None to hand every message with a usable MSH to the handler.
    ``read_timeout_s`` bounds a stalled, incomplete message; ``idle_timeout_s`` how long a
    connection may sit between messages (None: as long as the peer likes).
    """

    def __init__(
        self,
        host: str,
        port: int,
        handler: Handler,
        *,
        max_message_bytes: int = 1_000_000,
        read_timeout_s: float = 30.0,
        idle_timeout_s: float | None = 600.0,
        ssl: ssl_module.SSLContext | None = None,
        validate: Validator | None = interpret,
        max_connections: int = 256,
    ) -> None:
        if max_message_bytes < 1:
            raise ValueError(f"max_message_bytes must be positive, got {max_message_bytes}")
        self.host = host
        self._requested_port = port
        self.handler = handler
        self.max_message_bytes = max_message_bytes
        self.read_timeout_s = read_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.ssl = ssl
        self.validate = validate
        self.max_connections = max_connections
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The port listened on (the one the OS chose when 0 was asked for)."""
        if self._port is None:
            raise StackError("MllpServer.port is known only after start()")
        return self._port

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def start(self) -> None:
        if self._server is not None:
            return
        try:
            self._server = await asyncio.start_server(
                self._on_connection,
                self.host,
                self._requested_port,
                ssl=self.ssl,
                ssl_handshake_timeout=self.read_timeout_s if self.ssl else None,
                limit=_READ_SIZE,
            )
        except OSError as exc:
            raise StackError(
                f"MLLP server cannot listen on {self.host}:{self._requested_port}: {exc}"
            ) from exc
        self._port = self._server.sockets[0].getsockname()[1]
        self._requested_port = self._port  # a restart comes back where clients expect it
        logger.info(
            "MLLP server listening on %s:%s (tls=%s)", self.host, self._port, bool(self.ssl)
        )

    async def stop(self) -> None:
        """Stop listening, close open connections and wait for their tasks."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
        logger.info("MLLP server on %s:%s stopped", self.host, self._port)

    async def __aenter__(self) -> MllpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- one connection -------------------------------------------------------------------
    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None  # always inside the task start_server created
        peer = _peer_name(writer)
        if len(self._connections) >= self.max_connections:
            logger.warning("MLLP connection from %s refused: %d open", peer, self.max_connections)
            await _close(writer)
            return
        self._connections.add(task)
        try:
            await self._serve(reader, writer, peer)
        except asyncio.CancelledError:
            pass  # stop(): fall through to close
        except (ConnectionError, OSError) as exc:
            logger.info("MLLP connection from %s lost: %s", peer, exc)
        except Exception:  # the listener must outlive any bug in one connection
            logger.exception("MLLP connection from %s failed", peer)
        finally:
            self._connections.discard(task)
            await _close(writer)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        decoder = MllpDecoder(self.max_message_bytes)
        while True:
            timeout = self.read_timeout_s if decoder.in_frame else self.idle_timeout_s
            try:
                async with asyncio.timeout(timeout):
                    data = await reader.read(_READ_SIZE)
            except TimeoutError:
                if decoder.in_frame:
                    logger.warning("MLLP %s: incomplete message after %ss, closing", peer, timeout)
                else:
                    logger.info("MLLP %s: idle for %ss, closing", peer, timeout)
                return
            if not data:
                if decoder.in_frame:
                    logger.warning("MLLP %s: connection closed inside a message", peer)
                return
            for event in decoder.feed(data):
                if isinstance(event, FramingError):
                    logger.warning("MLLP %s: %s, closing", peer, event.reason)
                    return
                if isinstance(event, OversizeFrame):
                    reply = self._oversize_ack(event, peer)
                else:
                    reply = await self._answer(event, peer)
                if reply is None:
                    return
                writer.write(frame(reply))
                await writer.drain()

    def _oversize_ack(self, event: OversizeFrame, peer: str) -> bytes | None:
        try:
            text, codec = decode_payload(event.head)
            header = parse_header(text)
        except Hl7ParseError:
            logger.warning(
                "MLLP %s: %d-byte message without MSH refused, closing", peer, event.size
            )
            return None
        logger.warning(
            "MLLP %s: message %s of %d bytes exceeds the %d-byte limit, AR",
            peer,
            header.control_id or "?",
            event.size,
            self.max_message_bytes,
        )
        ack = build_ack(
            header,
            AckCode.REJECT,
            f"message of {event.size} bytes exceeds the limit of {self.max_message_bytes}",
            ErrorLocation("MSH", 1, None),
            ErrorCode.APPLICATION_INTERNAL_ERROR,
        )
        return ack.encode(codec, errors="replace")

    async def _answer(self, event: Frame, peer: str) -> bytes | None:
        text, codec = decode_payload(event.payload)
        try:
            message = parse_message(text)
        except Hl7ParseError as exc:
            return self._unparseable(text, codec, exc, peer)
        try:
            validate_header(message)
            if self.validate is not None:
                self.validate(message)
            result = await self.handler(message)
        except Hl7ValidationError as exc:
            return self._refusal(message, codec, exc, peer)
        except AbortConnection:
            logger.info("MLLP %s: handler dropped the connection at %s", peer, message.control_id)
            return None
        except Exception:  # any failure behind the protocol is AE 207: the sender retries later
            logger.exception(
                "MLLP %s: handler failed on %s %s", peer, message.message_type, message.control_id
            )
            result = AckResult.error(
                "application internal error", error_code=ErrorCode.APPLICATION_INTERNAL_ERROR
            )
        logger.info(
            "MLLP %s: %s %s -> %s", peer, message.message_type, message.control_id, result.code
        )
        ack = build_ack(message, result.code, result.text, result.error_location, result.error_code)
        return ack.encode(codec, errors="replace")

    def _unparseable(self, text: str, codec: str, exc: Hl7ParseError, peer: str) -> bytes | None:
        try:
            header = parse_header(text)
        except Hl7ParseError:
            logger.warning("MLLP %s: not an HL7 message (%s), closing", peer, exc)
            return None
        logger.warning("MLLP %s: %s unparseable: %s, AE", peer, header.control_id or "?", exc)
        ack = build_ack(header, AckCode.ERROR, str(exc), None, ErrorCode.SEGMENT_SEQUENCE_ERROR)
        return ack.encode(codec, errors="replace")

    def _refusal(
        self, message: Hl7Message, codec: str, exc: Hl7ValidationError, peer: str
    ) -> bytes:
        logger.warning(
            "MLLP %s: %s %s -> %s %s: %s",
            peer,
            message.message_type or "?",
            message.control_id or "?",
            exc.ack_code,
            exc.error_code,
            exc,
        )
        ack = build_ack(message, exc.ack_code, str(exc), exc.location, exc.error_code)
        return ack.encode(codec, errors="replace")


def _peer_name(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):  # the peer may already be gone; nothing to save
        await asyncio.wait_for(writer.wait_closed(), timeout=5)
