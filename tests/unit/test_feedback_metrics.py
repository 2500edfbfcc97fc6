"""Feedback metrics per model version from radiologists' decisions joined to the inference
outcome, the retraining-set export, and `pacsflow models feedback` on a real SQLite
database (logging to MLflow: tests/integration/test_feedback_logging.py)."""

from __future__ import annotations

import argparse
import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from models import cli as models_cli
from pacsflow.config import Settings, load_settings
from pacsflow.db.session import make_engine, make_sessionmaker, upgrade
from pacsflow.db.tables import FeedbackLabel, PathwayRun
from pacsflow.governance.audit_export import AuditFilter, read_entries
from pacsflow.governance.feedback_metrics import (
    NEGATIVE,
    POSITIVE,
    FeedbackCase,
    feedback_metrics,
    ground_truth,
    load_feedback_cases,
    retraining_rows,
    write_retraining_set,
)

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def case(
    uid: str,
    ai: str,
    decision: str,
    corrected: str | None = None,
    *,
    version: str = "3",
    minutes: int = 0,
    label_id: int = 0,
) -> FeedbackCase:
    return FeedbackCase(
        study_uid=uid,
        pathway="stroke_triage",
        model_name="pacsflow-ich",
        model_version=version,
        ai_outcome=ai,
        score=0.9 if ai in ("critical", "urgent") else 0.1,
        decision=decision,
        corrected_priority=corrected,
        reason=None if decision == "confirm" else "see report",
        decided_at=T0 + timedelta(minutes=minutes),
        label_id=label_id,
    )


@pytest.mark.parametrize(
    ("ai", "decision", "corrected", "expected"),
    [
        ("critical", "confirm", None, POSITIVE),
        ("urgent", "reject", None, NEGATIVE),
        ("critical", "override", "urgent", POSITIVE),  # real finding, urgency wrong
        ("critical", "override", "routine", NEGATIVE),
        ("routine", "confirm", None, NEGATIVE),
        ("routine", "reject", None, POSITIVE),  # a missed finding
        ("routine", "override", "critical", POSITIVE),
        ("review", "confirm", None, None),  # agreeing that it is uncertain says nothing
        ("review", "override", "routine", NEGATIVE),
        ("not_analysed", "reject", None, None),
    ],
)
def test_ground_truth(ai: str, decision: str, corrected: str | None, expected: str | None) -> None:
    assert ground_truth(ai, decision, corrected) == expected


def test_metrics_per_model_version() -> None:
    cases = [
        # v3: 4 AI positives decided (2 confirmed, 1 overridden to urgent, 1 rejected)
        case("1", "critical", "confirm"),
        case("2", "critical", "confirm"),
        case("3", "critical", "override", "urgent"),
        case("4", "urgent", "reject"),
        # 2 AI negatives: one confirmed, one a missed finding
        case("5", "routine", "confirm"),
        case("6", "routine", "reject"),
        case("7", "review", "override", "routine"),
        # v4: one AI positive, rejected
        case("8", "critical", "reject", version="4"),
    ]
    by_version = {m.model_version: m for m in feedback_metrics(cases)}
    assert list(by_version) == ["3", "4"]
    v3 = by_version["3"]
    assert (v3.decisions, v3.confirmed, v3.rejected, v3.overridden) == (7, 3, 2, 2)
    assert (v3.ai_positive_decided, v3.confirmed_positive) == (4, 3)
    assert v3.ppv == 0.75
    assert (v3.ai_negative_decided, v3.confirmed_negative, v3.npv) == (2, 1, 0.5)
    assert v3.agreement_rate == round(3 / 7, 4)
    assert v3.override_rate == round(2 / 7, 4)
    v4 = by_version["4"]
    assert (v4.ppv, v4.npv, v4.agreement_rate) == (0.0, None, 0.0)
    metrics = v4.metric_values()
    assert "feedback.npv" not in metrics and metrics["feedback.ppv"] == 0.0
    assert metrics["feedback.decisions"] == 1.0


def test_only_the_latest_decision_on_a_study_counts() -> None:
    cases = [
        case("1", "critical", "reject", minutes=0, label_id=1),
        case("1", "critical", "confirm", minutes=5, label_id=2),
    ]
    (m,) = feedback_metrics(cases)
    assert (m.decisions, m.confirmed, m.ppv) == (1, 1, 1.0)
    (row,) = retraining_rows(cases)
    assert row["decision"] == "confirm" and row["label"] == POSITIVE


# --- from the database ----------------------------------------------------------------------
@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(paths={"var_dir": tmp_path / "var"})


@pytest.fixture
def sessions(settings: Settings) -> sessionmaker[Session]:
    upgrade(settings.database_url)
    sessions = make_sessionmaker(make_engine(settings.database_url))
    runs = [
        ("1.2.3.1", "3", "critical", 0.97),
        ("1.2.3.2", "3", "routine", 0.05),
        ("1.2.3.3", "3", "urgent", 0.81),
        ("1.2.3.4", "4", "critical", 0.93),
    ]
    decisions = [
        ("1.2.3.1", "3", "critical", "confirm", None, None),
        ("1.2.3.2", "3", "routine", "reject", None, "small SDH missed"),
        ("1.2.3.3", "3", "urgent", "override", "critical", "large bleed"),
        ("1.2.3.4", "4", "critical", "reject", None, "calcification"),
        ("1.2.3.9", "3", "review", "confirm", None, None),  # no pathway run recorded
    ]
    with sessions() as s:
        for uid, version, outcome, score in runs:
            s.add(
                PathwayRun(
                    study_uid=uid,
                    pathway="stroke_triage",
                    model_version=version,
                    outcome=outcome,
                    score=score,
                )
            )
        for uid, version, ai, decision, corrected, reason in decisions:
            s.add(
                FeedbackLabel(
                    study_uid=uid,
                    pathway="stroke_triage",
                    model_name="pacsflow-ich",
                    model_version=version,
                    ai_priority=ai,
                    decision=decision,
                    corrected_priority=corrected,
                    reason=reason,
                    actor="rita.resident",
                    actor_role="resident",
                )
            )
        s.commit()
    return sessions


def test_labels_are_joined_to_their_run(sessions: sessionmaker[Session]) -> None:
    cases = {c.study_uid: c for c in load_feedback_cases(sessions)}
    assert cases["1.2.3.1"].score == 0.97 and cases["1.2.3.1"].ai_outcome == "critical"
    assert cases["1.2.3.9"].score is None and cases["1.2.3.9"].ai_outcome == "review"
    v3, v4 = feedback_metrics(cases.values())
    assert (v3.model_version, v3.decisions, v3.ppv, v3.npv) == ("3", 4, 1.0, 0.0)
    assert (v4.model_version, v4.ppv) == ("4", 0.0)


def test_retraining_set_has_identifiers_and_labels_only(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    export = write_retraining_set(load_feedback_cases(sessions), tmp_path / "out")
    assert export.rows == 4  # the confirmed "review" says nothing: left out
    with export.csv.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["study_uid"] for r in rows] == ["1.2.3.1", "1.2.3.2", "1.2.3.3", "1.2.3.4"]
    assert [r["label"] for r in rows] == ["positive", "positive", "positive", "negative"]
    assert rows[1]["reason"] == "small SDH missed"
    assert "actor" not in rows[0] and "patient_id" not in rows[0]
    lines = [json.loads(line) for line in export.jsonl.read_text().splitlines()]
    assert [r["study_uid"] for r in lines] == [r["study_uid"] for r in rows]
    assert lines[0]["score"] == 0.97 and lines[0]["model_version"] == "3"


def run_models(settings: Settings, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="pacsflow")
    sub = parser.add_subparsers(dest="command", required=True)
    models_cli.add_parser(sub)
    args = parser.parse_args(list(argv))
    return int(args.handler(args, settings))


def test_cli_prints_and_exports(
    settings: Settings,
    sessions: sessionmaker[Session],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_models(settings, "models", "feedback") == 0
    out = capsys.readouterr().out
    assert "pacsflow-ich v3: 4 decisions" in out and "PPV 1.000 of 2 AI positives" in out
    assert "pacsflow-ich v4: 1 decision (" in out

    target = tmp_path / "retraining"
    assert run_models(settings, "models", "feedback", "--json", "--export", str(target)) == 0
    data = json.loads(capsys.readouterr().out)
    assert [m["model_version"] for m in data["models"]] == ["3", "4"]
    assert data["export"]["rows"] == 4
    assert (target / "feedback_labels.csv").is_file()
    (entry,) = read_entries(sessions, AuditFilter(action="feedback.export"))
    assert entry.subject == str(target) and entry.detail["rows"] == 4
