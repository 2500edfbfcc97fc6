"""One whole local stack shared by the end-to-end modules (starting it costs about a minute).
Package scope: it sets PACSFLOW_CONFIG_FILE while up, which must not leak into other tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from deployments.local_stack import LocalStack, local_stack


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with local_stack(tmp_path_factory.mktemp("e2e-var"), stable_window_s=2.0) as local:
        yield local
