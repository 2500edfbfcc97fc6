"""Feedback metrics logged on the MLflow run of each model version (real MLflow store on
SQLite), directly and through `pacsflow models feedback --log`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from models import cli as models_cli
from models.feedback_logging import log_feedback_metrics
from pacsflow.config import Settings, load_settings
from pacsflow.db.session import make_engine, make_sessionmaker, upgrade
from pacsflow.db.tables import FeedbackLabel
from pacsflow.governance.feedback_metrics import FeedbackMetrics

pytestmark = [pytest.mark.mlflow]

NAME = "pacsflow-test-feedback"


def registered_version(tracking_uri: str) -> str:
    """A registered version of NAME backed by a run (no weights needed for the metrics)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    experiment = client.create_experiment("feedback-test")
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "sensitivity", 0.86)
    client.set_terminated(run.info.run_id)
    client.create_registered_model(NAME)
    client.create_model_version(NAME, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    return str(run.info.run_id)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(paths={"var_dir": tmp_path / "var"})


def metric_history(settings: Settings, run_id: str, key: str) -> list[Any]:
    from mlflow import MlflowClient

    return list(
        MlflowClient(tracking_uri=settings.mlflow_tracking_uri).get_metric_history(run_id, key)
    )


def test_metrics_land_on_the_version_run(settings: Settings) -> None:
    run_id = registered_version(settings.mlflow_tracking_uri)
    metrics = FeedbackMetrics(NAME, "1", 10, 7, 2, 1, 6, 5, 4, 3)
    unknown = FeedbackMetrics(NAME, "9", 1, 1, 0, 0, 1, 1, 0, 0)
    logged = log_feedback_metrics(settings.mlflow_tracking_uri, [metrics, unknown])
    assert logged[0].run_id == run_id and logged[0].metrics == len(metrics.metric_values())
    assert logged[1].run_id is None and "no model version" in (logged[1].skipped or "")
    (ppv,) = metric_history(settings, run_id, "feedback.ppv")
    assert ppv.value == pytest.approx(5 / 6, abs=1e-4) and ppv.step == 10
    from mlflow import MlflowClient

    run = MlflowClient(tracking_uri=settings.mlflow_tracking_uri).get_run(run_id)
    assert run.data.metrics["sensitivity"] == 0.86  # the evaluation stays as it was
    assert run.data.metrics["feedback.agreement_rate"] == 0.7


def test_cli_logs_the_database_feedback(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = registered_version(settings.mlflow_tracking_uri)
    upgrade(settings.database_url)
    sessions = make_sessionmaker(make_engine(settings.database_url))
    with sessions() as s:
        for i, decision in enumerate(("confirm", "confirm", "reject")):
            s.add(
                FeedbackLabel(
                    study_uid=f"1.2.{i}",
                    pathway="stroke_triage",
                    model_name=NAME,
                    model_version="1",
                    ai_priority="critical",
                    decision=decision,
                    reason=None if decision == "confirm" else "artefact",
                    actor="rita.resident",
                    actor_role="resident",
                )
            )
        s.commit()
    parser = argparse.ArgumentParser(prog="pacsflow")
    models_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["models", "feedback", "--log"])
    assert args.handler(args, settings) == 0
    out = capsys.readouterr().out
    assert f"{NAME} v1: 3 decisions" in out and f"logged {NAME} v1: run {run_id}" in out
    (ppv,) = metric_history(settings, run_id, "feedback.ppv")
    assert ppv.value == pytest.approx(2 / 3, abs=1e-4) and ppv.step == 3
