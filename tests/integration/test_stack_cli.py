"""`pacsflow stack up | status | down` against the real services on free ports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from pacsflow.stack.process import pid_alive
from pacsflow.testing.services import isolated_settings

pytestmark = [pytest.mark.orthanc, pytest.mark.slow]


def _env(settings) -> dict[str, str]:  # type: ignore[no-untyped-def]
    env = dict(os.environ)
    env.update(
        {
            "PACSFLOW_PATHS_VAR_DIR": str(settings.paths.var_dir),
            "PACSFLOW_ORTHANC_HTTP_PORT": str(settings.orthanc.http_port),
            "PACSFLOW_ORTHANC_DICOM_PORT": str(settings.orthanc.dicom_port),
            "PACSFLOW_PREFECT_PORT": str(settings.prefect.port),
            "PACSFLOW_MLFLOW_PORT": str(settings.mlflow.port),
        }
    )
    return env


def _pacsflow(settings, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(
        [sys.executable, "-m", "pacsflow.cli.main", *args],
        env=_env(settings),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_stack_up_prints_urls_that_answer_and_down_leaves_nothing(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path / "var")
    up = _pacsflow(settings, "stack", "up", "--core-only")
    try:
        assert up.returncode == 0, up.stderr
        orthanc_url = f"http://127.0.0.1:{settings.orthanc.http_port}"
        prefect_url = f"http://127.0.0.1:{settings.prefect.port}"
        mlflow_url = f"http://127.0.0.1:{settings.mlflow.port}"
        for url in (orthanc_url, prefect_url, mlflow_url):
            assert url in up.stdout
        auth = (settings.orthanc.username, settings.orthanc.password.get_secret_value())
        assert httpx.get(f"{orthanc_url}/dicom-web/studies", auth=auth).status_code == 200
        assert httpx.get(f"{orthanc_url}/dicom-web/studies").status_code == 401
        assert httpx.get(prefect_url + "/api/health").status_code == 200
        assert httpx.get(prefect_url + "/").status_code == 200  # the UI
        assert httpx.get(mlflow_url + "/health").status_code == 200

        status = _pacsflow(settings, "stack", "status")
        assert "orthanc  up" in status.stdout and "prefect  up" in status.stdout

        again = _pacsflow(settings, "stack", "up", "--core-only")
        assert again.returncode == 0 and "already running" in again.stdout
    finally:
        pids = [int(p.read_text()) for p in (settings.paths.var_dir / "run").glob("*.pid")]
        down = _pacsflow(settings, "stack", "down")
    assert down.returncode == 0, down.stderr
    assert pids and not any(pid_alive(pid) for pid in pids)
    assert not list((settings.paths.var_dir / "run").glob("*.pid"))
