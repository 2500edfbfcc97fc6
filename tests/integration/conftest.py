"""Fixtures for integration tests: a real Prefect server with pacsflow's deployments."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pacsflow.config import Settings
from pacsflow.stack.process import ManagedProcess
from pacsflow.stack.services import prefect_service
from pacsflow.testing.services import isolated_settings


@pytest.fixture(scope="session")
def prefect_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return isolated_settings(tmp_path_factory.mktemp("prefect-var"))


@pytest.fixture(scope="session")
def prefect_process(prefect_settings: Settings) -> Iterator[ManagedProcess]:
    """A real Prefect server (SQLite) on a free port for the session."""
    proc = prefect_service(prefect_settings)
    proc.start()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def prefect_api_url(prefect_process: ManagedProcess, prefect_settings: Settings) -> str:
    return prefect_settings.prefect.effective_api_url


@pytest.fixture(scope="session")
def deployments_registered(prefect_api_url: str) -> dict[str, str]:
    """pacsflow's deployments registered on the test server (no runner executes them)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.catalog import CATALOG
    from deployments.serve import register

    with temporary_settings(updates={PREFECT_API_URL: prefect_api_url}):
        ids = register(CATALOG)
    return {spec.full_name: str(dep_id) for spec, dep_id in zip(CATALOG, ids, strict=True)}


@pytest.fixture
def gateway_settings(tmp_path: Path, orthanc: Settings, prefect_api_url: str) -> Settings:
    return isolated_settings(
        tmp_path / "var",
        orthanc={
            "http_port": orthanc.orthanc.http_port,
            "dicom_port": orthanc.orthanc.dicom_port,
        },
        prefect={"api_url": prefect_api_url},
        gateway={"stable_window_s": {"default": 1.0}},
    )
