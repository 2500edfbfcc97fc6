"""The outcome of a pathway run for a study: a result or an explicit failure, with timings."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.db.tables import PathwayRun


def record_outcome(
    sessions: sessionmaker[Session],
    *,
    study_uid: str,
    pathway: str,
    model_version: str,
    outcome: str,
    reasons: list[str],
    timings: dict[str, Any],
    features: dict[str, Any],
    score: float | None,
    flow_run_id: str | None,
) -> None:
    """Upsert by (study, pathway, model version): a retried run updates, never duplicates."""
    with sessions() as session:
        row = session.scalar(
            select(PathwayRun).where(
                PathwayRun.study_uid == study_uid,
                PathwayRun.pathway == pathway,
                PathwayRun.model_version == model_version,
            )
        )
        if row is None:
            row = PathwayRun(study_uid=study_uid, pathway=pathway, model_version=model_version)
            session.add(row)
        row.outcome = outcome
        row.reasons = reasons
        row.timings = timings
        row.features = features
        row.score = score
        row.flow_run_id = flow_run_id
        row.finished_at = datetime.now(UTC)
        session.commit()
