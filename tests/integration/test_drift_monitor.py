"""The drift check the scheduled flow runs (flows/drift_monitor.run_drift_check) on a real
SQLite database of pathway runs, a real MLflow store (SQLite) and a notification endpoint
listening on loopback: metrics logged as a run of experiment "pacsflow-drift", the HTML
report written with its plots, and on drift the POST and the audit entry "drift.alert".

Pathway runs hold features of simulated studies (pacsflow.testing.drift_records, sampled
from the synthetic generator's distributions; see tests/unit/test_drift.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from flows.drift_monitor import EXPERIMENT, run_drift_check
from models.catalogue import ICH
from pacsflow.config import Settings, load_settings
from pacsflow.db.session import make_engine, make_sessionmaker, upgrade
from pacsflow.db.tables import PathwayRun
from pacsflow.governance.audit_export import AuditFilter, read_entries
from pacsflow.governance.drift import DriftRecord, ReferenceProfile, build_reference
from pacsflow.governance.drift_report import reports_dir
from pacsflow.testing.drift_records import PhantomBank, Population, Scanner, simulate_records
from pacsflow.testing.receivers import NotificationReceiver

pytestmark = [pytest.mark.mlflow]

MODEL = "pacsflow-ich"
NEW_SCANNER = Scanner("NEUSOFT MEDICAL SYSTEMS", "F20", 5.0, (14.0, 24.0), share=0.5)


@pytest.fixture(scope="module")
def simulated() -> dict[str, list[DriftRecord]]:
    evaluation = json.loads(ICH.evaluation().read_text())
    scores = [s["study_probability"] for s in evaluation["studies"]]
    latencies = [s["seconds"] for s in evaluation["studies"]]
    bank = PhantomBank.render(count=3, matrix=96)

    def sim(n: int, seed: int, population: Population | None = None) -> list[DriftRecord]:
        return simulate_records(
            n,
            seed=seed,
            bank=bank,
            scores=scores,
            latencies=latencies,
            population=population,
            voxels=10_000,
        )

    return {
        "reference": sim(600, 11),
        "recent": sim(100, 12),
        "shifted": sim(100, 13, Population(extra=NEW_SCANNER)),
    }


def add_runs(sessions: sessionmaker[Session], records: list[DriftRecord], start: datetime) -> None:
    """Pathway runs as the stroke flow records them, one minute apart."""
    with sessions() as s:
        for i, r in enumerate(records):
            features = {
                k: getattr(r, k)
                for k in (
                    "manufacturer",
                    "kernel",
                    "slice_thickness_mm",
                    "kvp",
                    "image_mean_hu",
                    "image_std_hu",
                )
            }
            s.add(
                PathwayRun(
                    study_uid=f"2.25.{start.timestamp():.0f}{i}",
                    pathway="stroke_triage",
                    model_version="3",
                    outcome="not_analysed" if r.validation_failed else "routine",
                    score=r.score,
                    timings={"inference_s": r.latency_s} if r.latency_s is not None else {},
                    features={**features, "series_uid": "2.25.1", "series_count": 3},
                    finished_at=start + timedelta(minutes=i),
                )
            )
        s.commit()


Site = tuple[Settings, sessionmaker[Session], NotificationReceiver]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with NotificationReceiver() as receiver:
        settings = load_settings(
            paths={"var_dir": tmp_path / "var"}, notify={"endpoints": [receiver.url]}
        )
        upgrade(settings.database_url)
        yield settings, make_sessionmaker(make_engine(settings.database_url)), receiver


def mlflow_client(settings: Settings) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri)


def mlflow_run(settings: Settings, run_id: str) -> Any:
    client = mlflow_client(settings)
    run = client.get_run(run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == EXPERIMENT
    return run


def test_drift_check_logs_reports_and_alerts(
    site: Site,
    simulated: dict[str, list[DriftRecord]],
) -> None:
    settings, sessions, receiver = site
    profile = build_reference(simulated["reference"], source="simulated evaluation set")
    profile.save(reports_dir(settings) / f"reference-{MODEL}.json")
    now = datetime.now(UTC)
    add_runs(sessions, simulated["recent"], now - timedelta(days=1))

    quiet = run_drift_check(settings, model_name=MODEL)
    assert quiet.report.status == "ok", quiet.report.alerts
    assert quiet.report.studies == 100 and quiet.report.model_versions == ("3",)
    assert quiet.alert is None and receiver.received == []
    run = mlflow_run(settings, quiet.mlflow_run_id)
    metrics = run.data.metrics
    assert metrics["studies"] == 100 and metrics["alerts"] == 0
    assert {"psi.manufacturer", "psi.image_std_hu", "ks_p.score", "latency_p95_s"} <= set(metrics)
    assert run.data.tags["pacsflow.drift_status"] == "ok"
    assert run.data.params["psi_alert"] == "0.25"
    html = quiet.files.html.read_text()
    assert quiet.files.html.parent == settings.paths.var_dir / "reports" / "drift"
    assert "No drift past the thresholds" in html
    assert html.count("data:image/png;base64,") == 8
    assert f"pacsflow models rollback {MODEL}" in html
    assert json.loads(quiet.files.json.read_text())["status"] == "ok"

    # A new scanner starts sending half the studies, noisier: the next check alerts.
    add_runs(sessions, simulated["shifted"], now)
    check = run_drift_check(settings, model_name=MODEL)
    report = check.report
    assert report.status == "alert"
    assert any("NEUSOFT MEDICAL SYSTEMS" in a for a in report.alerts)
    assert check.alert is not None and check.alert.notified == [receiver.url]
    (body,) = receiver.received
    assert body["event"] == "drift_alert" and body["model"] == MODEL
    assert body["response"] == f"pacsflow models rollback {MODEL}"
    assert body["report"] == str(check.files.html)
    (entry,) = read_entries(sessions, AuditFilter(action="drift.alert"))
    assert entry.id == check.alert.audit_entry_id and entry.subject == MODEL
    assert entry.detail["notified"] == [receiver.url] and entry.detail["alerts"]
    run = mlflow_run(settings, check.mlflow_run_id)
    assert run.data.tags["pacsflow.drift_status"] == "alert"
    assert run.data.metrics["alerts"] >= 2
    assert "Drift past the thresholds" in check.files.html.read_text()
    listed = mlflow_client(settings).list_artifacts(check.mlflow_run_id, "report")
    artifacts = {a.path for a in listed}
    assert artifacts == {f"report/{check.files.html.name}", f"report/{check.files.json.name}"}


def test_reference_built_from_the_shipped_evaluation_on_first_use(
    site: Site,
    simulated: dict[str, list[DriftRecord]],
) -> None:
    settings, sessions, receiver = site
    add_runs(sessions, simulated["recent"][:20], datetime.now(UTC))
    check = run_drift_check(settings, model_name=MODEL)
    assert check.report.status == "insufficient_data" and receiver.received == []
    saved = reports_dir(settings) / f"reference-{MODEL}.json"
    profile = ReferenceProfile.load(saved)
    assert profile.records == 100 and "ich.eval.json" in profile.source
    assert set(profile.categorical["manufacturer"].shares) == {
        "GE MEDICAL SYSTEMS",
        "SIEMENS",
        "PHILIPS",
        "TOSHIBA",
    }
    assert mlflow_run(settings, check.mlflow_run_id) is not None
