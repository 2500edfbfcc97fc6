"""How well a model version does in practice, from radiologists' decisions on its results.

Each feedback label (confirm / reject / override, pacsflow.governance.review) is joined to
the inference outcome it judged (the pathway run of the same study, pathway and model
version; without one, the AI priority the label recorded). Only the latest decision per
study and model version counts: a radiologist may change their mind.

Definitions (per model name and version):
- AI positive: the pathway flagged a finding (priority critical or urgent); AI negative:
  routine. "review" (uncertain) and "not_analysed" are neither.
- confirmed positive: an AI positive confirmed, or overridden to another positive priority
  (the finding is real, only its urgency was wrong). PPV = confirmed positives / AI
  positives with a decision; NPV likewise for negatives.
- agreement rate = confirms / decisions; override rate = overrides / decisions.

The retraining set (`retraining_rows`) carries identifiers and labels only: study UID,
pathway, model name and version, the AI outcome, the decision, the label and its reason.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.db.tables import FeedbackLabel, PathwayRun
from pacsflow.domain import Priority

POSITIVE_OUTCOMES = frozenset({Priority.CRITICAL.value, Priority.URGENT.value})
NEGATIVE_OUTCOMES = frozenset({Priority.ROUTINE.value})
POSITIVE, NEGATIVE = "positive", "negative"


@dataclass(frozen=True)
class FeedbackCase:
    """One radiologist decision joined to the AI outcome it judged."""

    study_uid: str
    pathway: str
    model_name: str
    model_version: str
    ai_outcome: str  # priority the pathway set (pathway_runs.outcome, else the label's)
    score: float | None  # the model's study probability, when the run recorded it
    decision: str  # confirm | reject | override
    corrected_priority: str | None
    reason: str | None
    decided_at: datetime
    label_id: int


def ground_truth(ai_outcome: str, decision: str, corrected_priority: str | None) -> str | None:
    """What the decision says the study really shows: positive, negative, or None when it
    does not say (a confirmed "review", a decision on a study the model did not analyse)."""
    if decision == "override":
        if corrected_priority in POSITIVE_OUTCOMES:
            return POSITIVE
        return NEGATIVE if corrected_priority in NEGATIVE_OUTCOMES else None
    agreed = decision == "confirm"
    if ai_outcome in POSITIVE_OUTCOMES:
        return POSITIVE if agreed else NEGATIVE
    if ai_outcome in NEGATIVE_OUTCOMES:
        return NEGATIVE if agreed else POSITIVE
    return None


@dataclass(frozen=True)
class FeedbackMetrics:
    model_name: str
    model_version: str
    decisions: int
    confirmed: int
    rejected: int
    overridden: int
    ai_positive_decided: int
    confirmed_positive: int
    ai_negative_decided: int
    confirmed_negative: int

    @staticmethod
    def _ratio(hits: int, total: int) -> float | None:
        return round(hits / total, 4) if total else None

    @property
    def ppv(self) -> float | None:
        return self._ratio(self.confirmed_positive, self.ai_positive_decided)

    @property
    def npv(self) -> float | None:
        return self._ratio(self.confirmed_negative, self.ai_negative_decided)

    @property
    def agreement_rate(self) -> float | None:
        return self._ratio(self.confirmed, self.decisions)

    @property
    def override_rate(self) -> float | None:
        return self._ratio(self.overridden, self.decisions)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("ppv", "npv", "agreement_rate", "override_rate"):
            data[name] = getattr(self, name)
        return data

    def metric_values(self, prefix: str = "feedback.") -> dict[str, float]:
        """Flat numeric metrics (rates without decisions behind them are left out)."""
        data = self.as_dict()
        return {
            f"{prefix}{k}": float(v)
            for k, v in data.items()
            if k not in ("model_name", "model_version") and v is not None
        }


def latest_decisions(cases: Iterable[FeedbackCase]) -> list[FeedbackCase]:
    """The last decision per (study, pathway, model name, model version)."""
    latest: dict[tuple[str, str, str, str], FeedbackCase] = {}
    for case in sorted(cases, key=lambda c: (c.decided_at, c.label_id)):
        latest[(case.study_uid, case.pathway, case.model_name, case.model_version)] = case
    return list(latest.values())


def feedback_metrics(cases: Iterable[FeedbackCase]) -> list[FeedbackMetrics]:
    """Metrics per (model name, version), sorted by name then numeric version."""
    groups: dict[tuple[str, str], list[FeedbackCase]] = {}
    for case in latest_decisions(cases):
        groups.setdefault((case.model_name, case.model_version), []).append(case)
    out = []
    for (name, version), group in groups.items():
        positives = [c for c in group if c.ai_outcome in POSITIVE_OUTCOMES]
        negatives = [c for c in group if c.ai_outcome in NEGATIVE_OUTCOMES]

        def truth(c: FeedbackCase) -> str | None:
            return ground_truth(c.ai_outcome, c.decision, c.corrected_priority)

        out.append(
            FeedbackMetrics(
                model_name=name,
                model_version=version,
                decisions=len(group),
                confirmed=sum(c.decision == "confirm" for c in group),
                rejected=sum(c.decision == "reject" for c in group),
                overridden=sum(c.decision == "override" for c in group),
                ai_positive_decided=len(positives),
                confirmed_positive=sum(truth(c) == POSITIVE for c in positives),
                ai_negative_decided=len(negatives),
                confirmed_negative=sum(truth(c) == NEGATIVE for c in negatives),
            )
        )
    return sorted(out, key=lambda m: (m.model_name, _version_key(m.model_version)))


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (1 << 30, version)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def load_feedback_cases(sessions: sessionmaker[Session]) -> list[FeedbackCase]:
    """Every feedback label joined to its pathway run (same study, pathway, model version)."""
    with sessions() as session:
        labels = session.scalars(select(FeedbackLabel).order_by(FeedbackLabel.id)).all()
        uids = sorted({label.study_uid for label in labels})
        runs: dict[tuple[str, str, str], PathwayRun] = {}
        for start in range(0, len(uids), 500):  # stay under SQL parameter limits
            for run in session.scalars(
                select(PathwayRun).where(PathwayRun.study_uid.in_(uids[start : start + 500]))
            ):
                runs[(run.study_uid, run.pathway, run.model_version)] = run
    cases = []
    for label in labels:
        version = label.model_version or ""
        run = runs.get((label.study_uid, label.pathway, version))
        cases.append(
            FeedbackCase(
                study_uid=label.study_uid,
                pathway=label.pathway,
                model_name=label.model_name or "unknown",
                model_version=version,
                ai_outcome=run.outcome if run is not None else label.ai_priority,
                score=run.score if run is not None else None,
                decision=label.decision,
                corrected_priority=label.corrected_priority,
                reason=label.reason,
                decided_at=_utc(label.created_at),
                label_id=label.id,
            )
        )
    return cases


# --- retraining set --------------------------------------------------------------------
RETRAINING_COLUMNS = (
    "study_uid",
    "pathway",
    "model_name",
    "model_version",
    "ai_outcome",
    "score",
    "decision",
    "corrected_priority",
    "label",
    "reason",
    "decided_at",
)


def retraining_rows(cases: Iterable[FeedbackCase]) -> list[dict[str, Any]]:
    """Latest decisions that say what the study shows, as flat rows of identifiers and
    labels (no patient data), oldest first."""
    rows = []
    for case in sorted(latest_decisions(cases), key=lambda c: (c.decided_at, c.label_id)):
        label = ground_truth(case.ai_outcome, case.decision, case.corrected_priority)
        if label is None:
            continue
        rows.append(
            {
                "study_uid": case.study_uid,
                "pathway": case.pathway,
                "model_name": case.model_name,
                "model_version": case.model_version,
                "ai_outcome": case.ai_outcome,
                "score": case.score,
                "decision": case.decision,
                "corrected_priority": case.corrected_priority,
                "label": label,
                "reason": case.reason,
                "decided_at": case.decided_at.isoformat(),
            }
        )
    return rows


def rows_to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
    return out.getvalue()


@dataclass(frozen=True)
class RetrainingExport:
    csv: Path
    jsonl: Path
    rows: int


def write_retraining_set(cases: Iterable[FeedbackCase], out_dir: Path) -> RetrainingExport:
    """feedback_labels.csv and feedback_labels.jsonl under `out_dir` (same rows)."""
    rows = retraining_rows(cases)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "feedback_labels.csv"
    jsonl_path = out_dir / "feedback_labels.jsonl"
    csv_path.write_text(rows_to_csv(rows, RETRAINING_COLUMNS), encoding="utf-8")
    jsonl_path.write_text(
        "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows), encoding="utf-8"
    )
    return RetrainingExport(csv=csv_path, jsonl=jsonl_path, rows=len(rows))
