"""TEST DOUBLE: a recording RIS on MLLP, for tests and the demo. Not for production use.

`RecordingRisPeer` listens like a RIS interface engine, stores every message it receives
(ORU^R01 results, ORM^O01 priority updates ...) and answers AA, or, on demand, AE, AR or
a dropped connection to simulate a failing RIS. It runs inside the caller's event loop
(``async with``) or in a background thread (``with RecordingRisPeer.in_background()``) for
synchronous code such as Prefect tasks under test.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from pacsflow.errors import StackError
from pacsflow.hl7.message import Hl7Message
from pacsflow.hl7.records import AckResult
from pacsflow.hl7.server import AbortConnection, MllpServer
from pacsflow.hl7.tables import ErrorCode

Behaviour = Literal["AA", "AE", "AR", "close"]


@dataclass(frozen=True)
class ReceivedMessage:
    message: Hl7Message
    answer: Behaviour  # what the peer did with it

    @property
    def raw(self) -> str:
        return self.message.to_er7()


class RecordingRisPeer:
    """A fake RIS MLLP endpoint that records what it is sent (test double)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl: ssl_module.SSLContext | None = None,
        max_message_bytes: int = 1_000_000,
    ) -> None:
        self._server = MllpServer(
            host,
            port,
            self._handle,
            max_message_bytes=max_message_bytes,
            read_timeout_s=10.0,
            ssl=ssl,
            validate=None,  # a RIS takes ORU and ORM, which pacsflow's inbound rules refuse
        )
        self._condition = threading.Condition()
        self._received: list[ReceivedMessage] = []
        self._script: deque[Behaviour] = deque()
        self._default: Behaviour = "AA"
        self._loop: asyncio.AbstractEventLoop | None = None  # set by in_background

    # -- control -----------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return self._server.host

    @property
    def port(self) -> int:
        return self._server.port

    def answer_next(self, *behaviours: Behaviour) -> None:
        """Answer the next messages so, in order (e.g. "AE", "close"), then the default."""
        with self._condition:
            self._script.extend(behaviours)

    def answer_always(self, behaviour: Behaviour) -> None:
        """Change the default answer (AA unless told otherwise)."""
        with self._condition:
            self._default = behaviour

    # -- what was received --------------------------------------------------------------------
    @property
    def received(self) -> list[ReceivedMessage]:
        with self._condition:
            return list(self._received)

    @property
    def accepted(self) -> list[Hl7Message]:
        """Messages answered AA: what a real RIS would have taken."""
        return [r.message for r in self.received if r.answer == "AA"]

    def of_type(self, message_type: str, *, accepted_only: bool = True) -> list[Hl7Message]:
        """Messages of MSH-9 type "ORU^R01" (or just "ORU")."""
        messages = self.accepted if accepted_only else [r.message for r in self.received]
        return [m for m in messages if message_type in (m.message_type, m.message_code)]

    def clear(self) -> None:
        with self._condition:
            self._received.clear()

    def wait_for(self, count: int, timeout_s: float = 5.0) -> list[ReceivedMessage]:
        """Block until ``count`` messages arrived (call from a thread other than the peer's)."""
        with self._condition:
            if not self._condition.wait_for(lambda: len(self._received) >= count, timeout_s):
                raise TimeoutError(
                    f"RIS test peer got {len(self._received)} messages, expected {count}"
                )
            return list(self._received)

    async def wait_for_async(self, count: int, timeout_s: float = 5.0) -> list[ReceivedMessage]:
        deadline = time.monotonic() + timeout_s
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"RIS test peer got {len(self.received)} messages, expected {count}"
                )
            await asyncio.sleep(0.01)
        return self.received

    # -- life cycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        await self._server.start()

    async def stop(self) -> None:
        await self._server.stop()

    async def __aenter__(self) -> RecordingRisPeer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @contextmanager
    def offline(self) -> Iterator[None]:
        """The RIS is down for the block (connections refused), then listens again on the
        same port: a RIS outage for reliability tests. Only for ``in_background`` peers."""
        if self._loop is None:
            raise StackError("offline() needs a peer started with in_background()")
        asyncio.run_coroutine_threadsafe(self._server.stop(), self._loop).result(timeout=10)
        try:
            yield
        finally:
            asyncio.run_coroutine_threadsafe(self._server.start(), self._loop).result(timeout=10)

    @classmethod
    @contextmanager
    def in_background(
        cls,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl: ssl_module.SSLContext | None = None,
        max_message_bytes: int = 1_000_000,
    ) -> Iterator[RecordingRisPeer]:
        """Run a peer on its own event loop in a daemon thread for synchronous callers."""
        peer = cls(host, port, ssl=ssl, max_message_bytes=max_message_bytes)
        loop = peer._loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(peer.start())
            except BaseException as exc:  # reported to the caller's thread below
                failure.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()

        thread = threading.Thread(target=run, name="ris-test-peer", daemon=True)
        thread.start()
        started.wait()
        if failure:
            loop.close()
            raise StackError(f"RIS test peer did not start: {failure[0]}") from failure[0]
        try:
            yield peer
        finally:
            asyncio.run_coroutine_threadsafe(peer.stop(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()

    # -- the handler ---------------------------------------------------------------------------
    async def _handle(self, message: Hl7Message) -> AckResult:
        with self._condition:
            behaviour = self._script.popleft() if self._script else self._default
            self._received.append(ReceivedMessage(message, behaviour))
            self._condition.notify_all()
        if behaviour == "close":
            raise AbortConnection("RIS test peer drops the connection on request")
        if behaviour == "AE":
            return AckResult.error(
                "RIS test peer: simulated application error",
                error_code=ErrorCode.APPLICATION_INTERNAL_ERROR,
            )
        if behaviour == "AR":
            return AckResult.reject(
                "RIS test peer: simulated reject", error_code=ErrorCode.APPLICATION_INTERNAL_ERROR
            )
        return AckResult.accept()
