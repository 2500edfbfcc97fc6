"""Shadow mode: the `challenger` version reads the same series as the `champion`, through the
same code path, and its result is stored, never written back.

Each reading (series selection, header validation, inference with the given version, the
pathway's study-level decision) is a PathwayRun of pathway ``<pathway>:shadow`` with that
version; nothing goes to the archive, the RIS, the worklist, the notification endpoints or
the EHR. The champion is read in the same way beside it (once per version and study), so
the two readings differ by the model only. The agreement report of the pair is logged to
MLflow (experiment "pacsflow-shadow") as evidence for the approval decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.db.tables import PathwayRun
from pacsflow.domain import ModelRef, Priority
from pacsflow.errors import InvalidInputError, NotAnalysableError
from pacsflow.governance.audit import AuditLog
from pacsflow.governance.shadow_report import (
    AgreementReport,
    ShadowReading,
    compare,
    shadow_pathway,
    summary_markdown,
    write_csv,
)
from pacsflow.pathways.followup import CHEST_SERIES, Exam, assess_followup
from pacsflow.pathways.outcomes import record_outcome
from pacsflow.pathways.series_selection import HEAD_SERIES, SelectionRules, select_series
from pacsflow.pathways.triage import decide
from pacsflow.pathways.validation import CHEST_CT_SUITE, HeaderSuite, validate_headers
from pacsflow.writeback.writers import PathwayEnv
from tasks._runtime import env, transient_only
from tasks.infer import ICH_MODEL, NODULE_MODEL, run_model

EXPERIMENT = "pacsflow-shadow"


@dataclass(frozen=True)
class ShadowProtocol:
    """How a pathway chooses and checks the series its model reads (as the flow does)."""

    model_name: str
    selection: SelectionRules
    suite: HeaderSuite


PROTOCOLS: dict[str, ShadowProtocol] = {
    "stroke_triage": ShadowProtocol(ICH_MODEL, HEAD_SERIES, HeaderSuite()),
    "nodule_followup": ShadowProtocol(NODULE_MODEL, CHEST_SERIES, CHEST_CT_SUITE),
}


def model_ref(tracking_uri: str, name: str, alias: str) -> ModelRef | None:
    """The version behind an alias (champion / challenger) as a ModelRef, None if unset."""
    from models.registry import CHALLENGER, CHAMPION, Registry

    registry = Registry(tracking_uri)
    if alias == CHAMPION:
        version = registry.champion_version(name)
    elif alias == CHALLENGER:
        version = registry.challenger_version(name)
    else:
        raise InvalidInputError(f"unknown model alias {alias!r}")
    if version is None:
        return None
    info = registry.show(name, version)
    return ModelRef(name=name, version=version, run_id=info.run_id, approved=info.approved)


def has_reading(
    sessions: sessionmaker[Session], pathway: str, model_version: str, study_uid: str
) -> bool:
    with sessions() as session:
        found = session.scalar(
            select(PathwayRun.id).where(
                PathwayRun.study_uid == study_uid,
                PathwayRun.pathway == shadow_pathway(pathway),
                PathwayRun.model_version == model_version,
                PathwayRun.outcome != "failed",
            )
        )
    return found is not None


def _study_date(text: str) -> date:
    try:
        return datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        return datetime.now(UTC).date()


def read_study(
    e: PathwayEnv,
    pathway: str,
    study_uid: str,
    model: ModelRef,
    *,
    role: str,
    flow_run_id: str | None = None,
) -> ShadowReading:
    """One version's study-level call on one study, stored as a shadow PathwayRun."""
    protocol = PROTOCOLS[pathway]
    started = datetime.now(UTC).isoformat()
    headers = e.source.headers(study_uid)
    choice = select_series(headers, protocol.selection)
    series_uid = choice.series_uid
    reasons = list(choice.reasons)
    features: dict[str, Any] = {"series_uid": series_uid, "role": role, "model": model.name}
    priority, finding, score = Priority.NOT_ANALYSED, None, None
    if series_uid is not None:
        check = validate_headers([h for h in headers if h.series_uid == series_uid], protocol.suite)
        reasons = check.reasons
        if check.passed:
            try:
                result = run_model(study_uid, series_uid, model)
            except NotAnalysableError as exc:
                reasons = exc.reasons
            else:
                score = result.study_probability
                finding = bool(result.findings)
                features["findings"] = len(result.findings)
                if pathway == "stroke_triage":
                    decision = decide(result, e.settings.triage)
                    priority, reasons = decision.priority, decision.reasons
                else:  # the baseline call: this exam alone, no priors compared
                    first = headers[0]
                    assessment = assess_followup(
                        Exam(
                            study_uid=study_uid,
                            study_date=_study_date(first.study_date),
                            findings=result.findings,
                        ),
                        [],
                        patient_id=first.patient_id,
                        indication=None,
                    )
                    priority, reasons = assessment.priority, assessment.reasons
                    features["category"] = assessment.category
    features["finding_present"] = finding
    record_outcome(
        e.sessions,
        study_uid=study_uid,
        pathway=shadow_pathway(pathway),
        model_version=model.version,
        outcome=priority.value,
        reasons=reasons,
        timings={"started": started, "finished": datetime.now(UTC).isoformat()},
        features=features,
        score=score,
        flow_run_id=flow_run_id,
    )
    AuditLog(e.sessions).append(
        "model:" + model.name,
        "shadow.inference",
        study_uid,
        {"version": model.version, "role": role, "outcome": priority.value},
    )
    return ShadowReading(
        study_uid=study_uid,
        model_version=model.version,
        priority=priority.value,
        finding_present=finding,
        score=score,
        series_uid=series_uid,
    )


def readings(
    sessions: sessionmaker[Session], pathway: str, model_version: str
) -> list[ShadowReading]:
    """Every stored shadow reading of one version on one pathway."""
    with sessions() as session:
        rows = session.scalars(
            select(PathwayRun).where(
                PathwayRun.pathway == shadow_pathway(pathway),
                PathwayRun.model_version == model_version,
                PathwayRun.outcome != "failed",
            )
        ).all()
        return [
            ShadowReading(
                study_uid=r.study_uid,
                model_version=r.model_version,
                priority=r.outcome,
                finding_present=(r.features or {}).get("finding_present"),
                score=r.score,
                series_uid=(r.features or {}).get("series_uid"),
            )
            for r in rows
        ]


def agreement(
    e: PathwayEnv,
    pathway: str,
    champion: ModelRef,
    challenger: ModelRef,
    truth: dict[str, bool] | None = None,
) -> AgreementReport:
    """Every study both versions have read (all sweeps so far): the pair's evidence."""
    return compare(
        pathway=pathway,
        model_name=champion.name,
        champion=readings(e.sessions, pathway, champion.version),
        challenger=readings(e.sessions, pathway, challenger.version),
        truth=truth,
    )


def log_agreement(tracking_uri: str, report: AgreementReport, directory: Path) -> str:
    """One run in experiment "pacsflow-shadow": metrics, both versions as tags, the
    per-study CSV and the summary as artifacts. Returns the run id."""
    import mlflow

    from models.registry import Registry

    directory.mkdir(parents=True, exist_ok=True)
    csv_path = write_csv(report, directory / "agreement.csv")
    summary = directory / "summary.md"
    summary.write_text(summary_markdown(report) + "\n", encoding="utf-8")
    experiment_id = Registry(tracking_uri).experiment_id(EXPERIMENT)
    name = f"{report.model_name}-v{report.challenger_version}-vs-v{report.champion_version}"
    with mlflow.start_run(experiment_id=experiment_id, run_name=name) as run:
        mlflow.set_tags(
            {
                "pacsflow.kind": "shadow-agreement",
                "pacsflow.model": report.model_name,
                "pacsflow.pathway": report.pathway,
                "pacsflow.champion_version": report.champion_version,
                "pacsflow.challenger_version": report.challenger_version,
            }
        )
        mlflow.log_metrics(report.metrics())
        mlflow.log_artifact(str(csv_path), artifact_path="agreement")
        mlflow.log_artifact(str(summary), artifact_path="agreement")
        return str(run.info.run_id)


# ---- Prefect tasks -------------------------------------------------------------------------


@task(
    name="shadow-read",
    retries=3,
    retry_delay_seconds=[2, 5, 10],
    retry_condition_fn=transient_only,
    cache_policy=NO_CACHE,
)
def shadow_read(
    pathway: str, study_uid: str, model: ModelRef, role: str, flow_run_id: str | None = None
) -> ShadowReading:
    return read_study(env(), pathway, study_uid, model, role=role, flow_run_id=flow_run_id)


@task(name="shadow-agreement", retries=2, retry_delay_seconds=[5, 15], cache_policy=NO_CACHE)
def shadow_agreement(
    pathway: str,
    champion: ModelRef,
    challenger: ModelRef,
    truth: dict[str, bool] | None,
    directory: Path,
) -> tuple[AgreementReport, str]:
    e = env()
    report = agreement(e, pathway, champion, challenger, truth)
    return report, log_agreement(e.settings.mlflow_tracking_uri, report, directory)
