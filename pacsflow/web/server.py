"""Run an ASGI app with uvicorn in a background thread (tests, demo, embedding)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from pacsflow.errors import StackError
from pacsflow.stack.process import free_port


@contextmanager
def serving(
    app: Any, host: str = "127.0.0.1", port: int | None = None, start_timeout_s: float = 20.0
) -> Iterator[str]:
    """Serve `app` for the duration of the block; yields its base URL."""
    port = port or free_port(host)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise StackError(f"web server did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
