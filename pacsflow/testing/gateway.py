"""Run the real gateway in a background thread (tests, benchmarks)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from pacsflow.config import Settings
from pacsflow.errors import StackError
from pacsflow.gateway.service import Gateway


@contextmanager
def running_gateway(settings: Settings, timeout_s: float = 30.0) -> Iterator[Gateway]:
    gateway = Gateway(settings)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(gateway.serve(stop))
        except BaseException as exc:  # surfaced to the caller below
            failure.append(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="gateway", daemon=True)
    thread.start()
    url = f"http://{settings.gateway.host}:{settings.gateway.http_port}/health"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if failure or time.monotonic() > deadline:
            raise StackError(f"gateway did not start: {failure[0] if failure else 'timeout'}")
        time.sleep(0.1)
    try:
        yield gateway
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
