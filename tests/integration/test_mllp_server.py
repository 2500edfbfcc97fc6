"""The MLLP server and client over real sockets on 127.0.0.1 (ports chosen by the OS)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pacsflow.errors import PeerUnavailableError
from pacsflow.hl7 import (
    AckCode,
    AckResult,
    ErrorCode,
    Hl7Message,
    MllpConnection,
    MllpServer,
    OrderMessage,
    interpret,
    parse_ack,
    send_message,
    send_message_sync,
)
from pacsflow.hl7.mllp import MllpDecoder, frame
from pacsflow.hl7.test_peer import RecordingRisPeer

HOST = "127.0.0.1"
# A guard so a bug hangs no test run; no assertion depends on timing.
GUARD_S = 30


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    async def guarded() -> Any:
        return await asyncio.wait_for(coroutine, GUARD_S)

    return asyncio.run(guarded())


def orm(control_id: str, *, accession: str = "ACC1", pid3: str = "PAT1") -> str:
    obr = ["OBR", "1", "PL1", "FI1", "CTHEAD^CT head^L"] + [""] * 13 + [accession]
    return "\r".join(
        [
            rf"MSH|^~\&|RIS|HOSP|PACSFLOW|HOSP|20260101120000||ORM^O01^ORM_O01|{control_id}|P|2.5.1",
            f"PID|1||{pid3}||Doe^Jane",
            "ORC|NW|PL1|FI1||SC",
            "|".join(obr),
        ]
    )


class Recorder:
    """A gateway stand-in: keeps the typed records and accepts them."""

    def __init__(self) -> None:
        self.messages: list[Hl7Message] = []

    async def __call__(self, message: Hl7Message) -> AckResult:
        self.messages.append(message)
        return AckResult.accept()


async def _serving(
    handler: Callable[[Hl7Message], Awaitable[AckResult]], **options: Any
) -> MllpServer:
    server = MllpServer(HOST, 0, handler, **options)
    await server.start()
    return server


async def _raw_exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes, return everything the server sends until it closes."""
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(data)
    await writer.drain()
    received = await reader.read(-1)  # until EOF: the server closed the connection
    writer.close()
    return received


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


# -- conversations ---------------------------------------------------------------------------
def test_several_messages_on_one_connection() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        server = await _serving(recorder)
        try:
            async with MllpConnection(HOST, server.port, timeout_s=10) as connection:
                acks = [await connection.send(orm(f"C{i}", accession=f"A{i}")) for i in range(5)]
        finally:
            await server.stop()
        assert [a.code for a in acks] == [AckCode.ACCEPT] * 5
        assert [a.acknowledged_control_id for a in acks] == [f"C{i}" for i in range(5)]
        accessions = []
        for message in recorder.messages:
            content = interpret(message)
            assert isinstance(content, OrderMessage)
            accessions.append(content.orders[0].order.accession_number)
        assert accessions == [f"A{i}" for i in range(5)]

    run(scenario())


def test_ae_for_missing_pid3_then_aa_on_the_same_connection() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        server = await _serving(recorder)
        try:
            async with MllpConnection(HOST, server.port, timeout_s=10) as connection:
                bad = await connection.send(orm("BAD1", pid3=""))
                good = await connection.send(orm("GOOD1"))
        finally:
            await server.stop()
        assert bad.code is AckCode.ERROR
        assert bad.acknowledged_control_id == "BAD1"
        assert bad.text == "PID-3 patient identifier missing"
        assert (bad.error_code, bad.error_location) == ("101", "PID^1^3")
        assert good.code is AckCode.ACCEPT and good.acknowledged_control_id == "GOOD1"
        assert [m.control_id for m in recorder.messages] == ["GOOD1"]  # the handler never saw BAD1

    run(scenario())


def test_latin1_message_with_a_byte_order_mark_gets_a_latin1_ack_that_says_so() -> None:
    """MSH-18 8859/1 after a stray UTF-8 BOM: accepted, names decoded as Latin-1, and the
    ACK is Latin-1 with MSH-18 echoed (it was the connection closed: the BOM hid the MSH)."""
    message = orm("LAT1").replace("|P|2.5.1", "|P|2.5.1||||||8859/1", 1)
    message = message.replace("Doe^Jane", "M\u00fcller^J\u00f6rg")
    payload = b"\xef\xbb\xbf" + message.encode("latin-1")

    async def scenario() -> None:
        recorder = Recorder()
        server = await _serving(recorder)
        try:
            reader, writer = await asyncio.open_connection(HOST, server.port)
            writer.write(frame(payload))
            await writer.drain()
            decoder = MllpDecoder(max_message_bytes=1 << 20)
            frames: list[Any] = []
            while not frames and (data := await reader.read(4096)):
                frames = decoder.feed(data)
            writer.close()
        finally:
            await server.stop()
        assert frames, "the server closed the connection without an ACK"
        ack_text = frames[0].payload.decode("latin-1")
        msh = ack_text.split("\r", 1)[0].split("|")
        assert msh[17] == "8859/1"  # MSH-18: index 17 after MSH-1 was split off
        assert parse_ack(ack_text).code is AckCode.ACCEPT
        (received,) = recorder.messages
        assert received.control_id == "LAT1"
        pid = received.segment("PID")
        assert pid is not None and pid.field(5) == "M\u00fcller^J\u00f6rg"

    run(scenario())


def test_ar_for_unsupported_message_type() -> None:
    siu = "\r".join(
        [
            r"MSH|^~\&|RIS|HOSP|PACSFLOW|HOSP|20260101||SIU^S12|SIU1|P|2.5.1",
            "SCH|1",
            "PID|1||PAT1",
        ]
    )

    async def scenario() -> None:
        recorder = Recorder()
        server = await _serving(recorder)
        try:
            ack = await send_message(HOST, server.port, siu, timeout_s=10)
        finally:
            await server.stop()
        assert ack.rejected and ack.code is AckCode.REJECT
        assert ack.error_code == "200"
        assert ack.error_location == "MSH^1^9"
        assert recorder.messages == []
        assert ack.raw.split("\r")[0].split("|")[8] == "ACK^S12^ACK"

    run(scenario())


def test_handler_failure_is_ae_207_and_the_connection_goes_on() -> None:
    calls: list[str] = []

    async def flaky(message: Hl7Message) -> AckResult:
        calls.append(message.control_id)
        if len(calls) == 1:
            raise RuntimeError("database is down")
        return AckResult.accept()

    async def scenario() -> None:
        server = await _serving(flaky)
        try:
            async with MllpConnection(HOST, server.port, timeout_s=10) as connection:
                first = await connection.send(orm("F1"))
                second = await connection.send(orm("F2"))
        finally:
            await server.stop()
        assert first.retryable and first.error_code == "207"
        assert "database" not in first.text  # internals stay out of the ACK
        assert second.accepted

    run(scenario())


def test_handler_decides_the_ack() -> None:
    async def decides(message: Hl7Message) -> AckResult:
        return AckResult.reject("duplicate", error_code=ErrorCode.DUPLICATE_KEY_IDENTIFIER)

    async def scenario() -> None:
        server = await _serving(decides)
        try:
            ack = await send_message(HOST, server.port, orm("D1"), timeout_s=10)
        finally:
            await server.stop()
        assert ack.rejected and ack.error_code == "205" and ack.text == "duplicate"

    run(scenario())


def test_many_concurrent_connections() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        server = await _serving(recorder)
        try:
            acks = await asyncio.gather(
                *(send_message(HOST, server.port, orm(f"P{i}"), timeout_s=20) for i in range(40))
            )
        finally:
            await server.stop()
        assert all(a.accepted for a in acks)
        assert sorted(m.control_id for m in recorder.messages) == sorted(f"P{i}" for i in range(40))

    run(scenario())


# -- hostile or broken input --------------------------------------------------------------------
def test_ten_megabyte_message_is_refused_and_the_server_goes_on() -> None:
    huge = orm("BIG1") + "\rNTE|1||" + "x" * 10_000_000

    async def scenario() -> None:
        recorder = Recorder()
        server = await _serving(recorder)  # default limit: 1 MB
        try:
            async with MllpConnection(HOST, server.port, timeout_s=20) as connection:
                refused = await connection.send(huge)
                after = await connection.send(orm("SMALL1"))  # same connection still usable
            fresh = await send_message(HOST, server.port, orm("SMALL2"), timeout_s=10)
        finally:
            await server.stop()
        assert refused.rejected
        assert refused.acknowledged_control_id == "BIG1"
        assert "exceeds the limit" in refused.text
        assert after.accepted and fresh.accepted
        assert [m.control_id for m in recorder.messages] == ["SMALL1", "SMALL2"]

    run(scenario())


def test_configurable_limit_and_oversize_garbage_closes() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        server = await _serving(recorder, max_message_bytes=2_000)
        try:
            closed = await _raw_exchange(server.port, b"\x0b" + b"#" * 100_000 + b"\x1c\x0d")
            ack = await send_message(HOST, server.port, orm("OK1"), timeout_s=10)
            small_limit = await send_message(
                HOST, server.port, orm("BIG2") + "\rNTE|1||" + "y" * 3_000, timeout_s=10
            )
        finally:
            await server.stop()
        assert closed == b""  # no ACK without an MSH: the connection is just closed
        assert ack.accepted
        assert small_limit.rejected

    run(scenario())


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        orm("NOFRAME").encode(),  # HL7 without MLLP blocks
        b"\x0b" + orm("TWOSTARTS").encode() + b"\x0b" + orm("X").encode() + b"\x1c\x0d",
        b"\x0bnot hl7 at all\x1c\x0d",
    ],
)
def test_wrong_framing_closes_the_connection_and_the_listener_serves_on(garbage: bytes) -> None:
    async def scenario() -> None:
        recorder = Recorder()
        server = await _serving(recorder)
        try:
            received = await _raw_exchange(server.port, garbage)
            ack = await send_message(HOST, server.port, orm("AFTER"), timeout_s=10)
        finally:
            await server.stop()
        assert received == b""
        assert ack.accepted
        assert [m.control_id for m in recorder.messages] == ["AFTER"]

    run(scenario())


def test_missing_end_block_closes_after_the_read_timeout() -> None:
    async def scenario() -> None:
        server = await _serving(Recorder(), read_timeout_s=0.2)
        try:
            received = await _raw_exchange(server.port, b"\x0b" + orm("STALL").encode())
            ack = await send_message(HOST, server.port, orm("NEXT"), timeout_s=10)
        finally:
            await server.stop()
        assert received == b""
        assert ack.accepted

    run(scenario())


def test_broken_body_after_good_msh_gets_ae() -> None:
    text = orm("BODY1") + "\r!!! not a segment"

    async def scenario() -> None:
        recorder = Recorder()
        server = await _serving(recorder)
        try:
            reply = await _send_raw_frame(server.port, text.encode())
        finally:
            await server.stop()
        ack = parse_ack(reply.decode())
        assert ack.code is AckCode.ERROR and ack.acknowledged_control_id == "BODY1"
        assert ack.error_code == "100"
        assert recorder.messages == []

    run(scenario())


async def _send_raw_frame(port: int, payload: bytes) -> bytes:
    """Frame and send a payload exactly as given (the client would normalise it)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(frame(payload))
    await writer.drain()
    decoder = MllpDecoder(1_000_000)
    try:
        while True:
            data = await reader.read(65536)
            assert data, "server closed without an ACK"
            for event in decoder.feed(data):
                return event.payload  # type: ignore[union-attr]
    finally:
        writer.close()


def test_stop_closes_idle_connections() -> None:
    async def scenario() -> None:
        server = await _serving(Recorder())
        reader, writer = await asyncio.open_connection(HOST, server.port)
        await asyncio.sleep(0)  # let the server register the connection
        await server.stop()
        assert await reader.read(-1) == b""
        writer.close()
        with pytest.raises(PeerUnavailableError):
            await send_message(HOST, server.port, orm("LATE"), timeout_s=5)

    run(scenario())


# -- the client ----------------------------------------------------------------------------------
def test_client_raises_peer_unavailable_when_nothing_listens() -> None:
    port = _free_port()
    with pytest.raises(PeerUnavailableError, match="cannot connect"):
        run(send_message(HOST, port, orm("NOBODY"), timeout_s=5))
    with pytest.raises(PeerUnavailableError):
        send_message_sync(HOST, port, orm("NOBODY"), timeout_s=5)


class _RawPeer:
    """A bare asyncio listener playing a misbehaving peer; closes what it opened."""

    def __init__(
        self, behaviour: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
    ):
        self.behaviour = behaviour
        self.tasks: set[asyncio.Task[None]] = set()
        self.listener: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        try:
            await self.behaviour(reader, writer)
        finally:
            writer.close()
            await writer.wait_closed()

    async def __aenter__(self) -> int:
        self.listener = await asyncio.start_server(self._handle, HOST, 0)
        return self.listener.sockets[0].getsockname()[1]

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.listener is not None
        self.listener.close()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.listener.wait_closed()


def test_client_times_out_on_a_silent_peer() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(-1)

    async def scenario() -> None:
        async with _RawPeer(silent) as port:
            with pytest.raises(PeerUnavailableError, match="no ACK within"):
                await send_message(HOST, port, orm("SILENCE"), timeout_s=0.3)

    run(scenario())


def test_client_refuses_an_ack_for_another_message() -> None:
    async def confused(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        reply = "MSH|^~\\&|RIS|H|PACSFLOW|H|2026||ACK^O01^ACK|R1|P|2.5.1\rMSA|AA|OTHER\r"
        writer.write(frame(reply.encode()))
        await writer.drain()
        await reader.read(-1)

    async def scenario() -> None:
        async with _RawPeer(confused) as port:
            with pytest.raises(PeerUnavailableError, match="OTHER"):
                await send_message(HOST, port, orm("MINE"), timeout_s=5)

    run(scenario())


def test_client_normalises_newline_segment_ends() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        server = await _serving(recorder)
        try:
            ack = await send_message(HOST, server.port, orm("LF1").replace("\r", "\n"), timeout_s=5)
        finally:
            await server.stop()
        assert ack.accepted
        assert recorder.messages[0].to_er7().count("\r") == 4

    run(scenario())


# -- the recording RIS test double ----------------------------------------------------------------
def test_recording_ris_peer_in_background_with_failures_on_demand() -> None:
    with RecordingRisPeer.in_background() as peer:
        peer.answer_next("AE", "close", "AR")
        first = send_message_sync(HOST, peer.port, orm("R1"), timeout_s=5)
        with pytest.raises(PeerUnavailableError, match="closed without an ACK"):
            send_message_sync(HOST, peer.port, orm("R2"), timeout_s=5)
        third = send_message_sync(HOST, peer.port, orm("R3"), timeout_s=5)
        fourth = send_message_sync(HOST, peer.port, orm("R4"), timeout_s=5)
        received = peer.wait_for(4)
    assert first.retryable and third.rejected and fourth.accepted
    assert [(r.message.control_id, r.answer) for r in received] == [
        ("R1", "AE"),
        ("R2", "close"),
        ("R3", "AR"),
        ("R4", "AA"),
    ]
    assert [m.control_id for m in peer.accepted] == ["R4"]
    assert [m.control_id for m in peer.of_type("ORM^O01")] == ["R4"]


def test_recording_ris_peer_takes_any_message_type_in_async_code() -> None:
    oru = "MSH|^~\\&|PACSFLOW|H|RIS||2026||ORU^R01^ORU_R01|O1|P|2.5.1\rPID|1||P1\rOBR|1"

    async def scenario() -> None:
        async with RecordingRisPeer() as peer:
            ack = await send_message(HOST, peer.port, oru, timeout_s=5)
            received = await peer.wait_for_async(1)
        assert ack.accepted
        assert received[0].message.message_type == "ORU^R01"
        assert peer.of_type("ORU")[0].control_id == "O1"

    run(scenario())


def test_send_message_sync_inside_a_running_loop() -> None:
    """A sync caller inside a running loop (a sync task under an async runner) must not fail
    on asyncio.run: the wrapper then uses a worker thread with its own loop."""

    async def scenario(port: int) -> None:
        ack = send_message_sync(HOST, port, orm("S1"), timeout_s=5)  # blocks this loop briefly
        assert ack.accepted

    with RecordingRisPeer.in_background() as peer:
        run(scenario(peer.port))
        assert [r.message.control_id for r in peer.wait_for(1)] == ["S1"]


# -- TLS -----------------------------------------------------------------------------------------
def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_server_and_client(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))

    async def scenario() -> None:
        recorder = Recorder()
        server = await _serving(recorder, ssl=server_context)
        try:
            ack = await send_message(
                HOST,
                server.port,
                orm("TLS1"),
                timeout_s=10,
                ssl=client_context,
                server_hostname="localhost",
            )
            # A plain-text client gets no ACK from a TLS listener.
            with pytest.raises(PeerUnavailableError):
                await send_message(HOST, server.port, orm("PLAIN"), timeout_s=2)
        finally:
            await server.stop()
        assert ack.accepted
        assert [m.control_id for m in recorder.messages] == ["TLS1"]

    run(scenario())
