"""The drift monitor as Prefect runs it: its deployment registered with a cron schedule on
a real Prefect server, and the flow itself run against that server (real MLflow store and
database under a temporary var dir)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pacsflow.config import load_settings
from pacsflow.db.session import upgrade

pytestmark = [pytest.mark.prefect, pytest.mark.mlflow, pytest.mark.slow]


def test_drift_deployment_is_scheduled(
    prefect_api_url: str, deployments_registered: dict[str, str]
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.catalog import CATALOG

    (spec,) = [s for s in CATALOG if s.flow.name == "drift-monitor"]
    with temporary_settings(updates={PREFECT_API_URL: prefect_api_url}):
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment(deployments_registered[spec.full_name])
    crons = [s.schedule.cron for s in deployment.schedules if s.active]
    assert crons == [spec.cron]
    assert not deployment.paused


def test_drift_flow_runs(
    prefect_api_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.drift_monitor import drift_monitor

    monkeypatch.setenv("PACSFLOW_PATHS_VAR_DIR", str(tmp_path / "var"))
    upgrade(load_settings().database_url)
    with temporary_settings(updates={PREFECT_API_URL: prefect_api_url}):
        result = drift_monitor(pathway="stroke_triage", model="pacsflow-ich")
    # No inference recorded yet: no verdict, but the run is logged and the report written.
    assert result["status"] == "insufficient_data" and result["studies"] == 0
    assert Path(result["report"]).is_file()
    assert result["mlflow_run_id"]
