"""Drift monitoring: recent inferences of a pathway against the model's reference profile.

Scheduled (deployments/catalog.py, cron). Each run reads the most recent inference records
from pathway_runs, compares them with the reference profile (built once from the model's
held-out evaluation records and kept as JSON under the reports directory), logs the
statistics as a run of the MLflow experiment "pacsflow-drift", writes an HTML report with
plots under var/reports/drift/, and past a threshold alerts: a POST to every notification
endpoint and an audit entry "drift.alert". The report names the response:
`pacsflow models rollback <model>`.

The work is `run_drift_check`, a plain function; the flow only resolves settings and logs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from pacsflow.config import Settings, load_settings
from pacsflow.db.session import make_engine, make_sessionmaker
from pacsflow.governance.audit import AuditLog
from pacsflow.governance.drift import (
    DriftReport,
    ReferenceProfile,
    build_reference,
    compare,
    recent_records,
    records_from_evaluation,
)
from pacsflow.governance.drift_report import (
    AlertOutcome,
    ReportFiles,
    reports_dir,
    send_drift_alert,
    write_report,
)

EXPERIMENT = "pacsflow-drift"


@dataclass(frozen=True)
class DriftCheck:
    report: DriftReport
    files: ReportFiles
    mlflow_run_id: str
    alert: AlertOutcome | None


def reference_profile(
    settings: Settings, model_name: str, *, reference_path: Path | None = None
) -> tuple[ReferenceProfile, Path]:
    """The saved reference profile of `model_name`; built from its held-out evaluation
    records (models/weights/<key>.eval.json) and saved on first use."""
    path = reference_path or reports_dir(settings) / f"reference-{model_name}.json"
    if path.is_file():
        return ReferenceProfile.load(path), path
    from models.catalogue import spec

    model = spec(model_name)
    evaluation_path = model.evaluation()
    evaluation = json.loads(evaluation_path.read_text(encoding="utf-8"))
    source = (
        f"held-out evaluation {evaluation_path.name} "
        f"(weights sha256 {str(evaluation.get('weights_sha256', '?'))[:12]}, "
        f"{evaluation.get('created', '?')})"
    )
    profile = build_reference(
        records_from_evaluation(evaluation), source=source, bins=settings.drift.bins
    )
    return profile, profile.save(path)


def log_to_mlflow(
    tracking_uri: str, report: DriftReport, files: ReportFiles, *, model_name: str
) -> str:
    """One run in experiment "pacsflow-drift": the report's metrics, its thresholds as
    params, status tags, and the HTML/JSON report as artifacts. Returns the run id."""
    import mlflow

    from models.registry import Registry

    experiment_id = Registry(tracking_uri).experiment_id(EXPERIMENT)
    run_name = f"{model_name}-{report.pathway}-drift"
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        mlflow.log_params({k: str(v) for k, v in report.thresholds.items()})
        mlflow.log_metrics(report.metrics())
        mlflow.set_tags(
            {
                "pacsflow.model": model_name,
                "pacsflow.pathway": report.pathway,
                "pacsflow.drift_status": report.status,
                "pacsflow.model_versions": ",".join(report.model_versions),
            }
        )
        mlflow.log_artifact(str(files.html), artifact_path="report")
        mlflow.log_artifact(str(files.json), artifact_path="report")
        return str(run.info.run_id)


def run_drift_check(
    settings: Settings,
    *,
    pathway: str = "stroke_triage",
    model_name: str = "pacsflow-ich",
    window: int | None = None,
    reference_path: Path | None = None,
) -> DriftCheck:
    cfg = settings.drift
    sessions = make_sessionmaker(make_engine(settings.database_url))
    profile, _ = reference_profile(settings, model_name, reference_path=reference_path)
    records, start, end = recent_records(sessions, pathway, window or cfg.window_studies)
    report = compare(profile, records, cfg, pathway=pathway, window=(start, end))
    files = write_report(report, profile, records, reports_dir(settings), model_name=model_name)
    run_id = log_to_mlflow(settings.mlflow_tracking_uri, report, files, model_name=model_name)
    alert = None
    if report.alerted:
        alert = send_drift_alert(
            settings, AuditLog(sessions), report, model_name=model_name, report_path=files.html
        )
    return DriftCheck(report=report, files=files, mlflow_run_id=run_id, alert=alert)


@flow(name="drift-monitor", log_prints=False, persist_result=False)
def drift_monitor(
    pathway: str = "stroke_triage", model: str = "pacsflow-ich", window: int | None = None
) -> dict[str, Any]:
    """Compare the latest `window` inferences of `pathway` with `model`'s reference."""
    check = run_drift_check(load_settings(), pathway=pathway, model_name=model, window=window)
    log = get_run_logger()
    report = check.report
    if report.alerted:
        log.warning("drift in %s (%s): %s", model, pathway, "; ".join(report.alerts))
    else:
        log.info(
            "drift check %s (%s): %s, %d studies", model, pathway, report.status, report.studies
        )
    return {
        "status": report.status,
        "studies": report.studies,
        "alerts": list(report.alerts),
        "report": str(check.files.html),
        "mlflow_run_id": check.mlflow_run_id,
    }
