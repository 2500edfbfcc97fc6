"""The real gateway in-process, one per test module, with no Prefect behind it.

Its dispatcher points at a port nobody listens on: accepted triggers stay in the outbox and
are retried in the background, which is all these tests need.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pacsflow.stack.process import free_port
from pacsflow.testing.gateway import running_gateway
from pacsflow.testing.services import isolated_settings

from .live import LiveGateway


@pytest.fixture(scope="module")
def live_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    settings = isolated_settings(
        tmp_path_factory.mktemp("reliability") / "var",
        prefect={"api_url": f"http://127.0.0.1:{free_port()}/api"},
        gateway={"stable_window_s": {"default": 1.0}},
    )
    with running_gateway(settings) as gateway:
        yield LiveGateway(settings, gateway)
