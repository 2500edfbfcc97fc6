"""Session fixtures: real services on free loopback ports, started and stopped by the tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pacsflow.config import Settings
from pacsflow.testing.services import isolated_settings, running_orthanc

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return isolated_settings(tmp_path_factory.mktemp("var"))


@pytest.fixture(scope="session")
def orthanc(stack_settings: Settings) -> Iterator[Settings]:
    """A real Orthanc + DICOMweb plugin on loopback for the whole session."""
    with running_orthanc(stack_settings) as settings:
        yield settings


@pytest.fixture
def tmp_var(tmp_path: Path) -> Path:
    return tmp_path / "var"
