"""The spool retention rule alone: which study folders may go, and why the others stay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pacsflow.gateway.spool_retention import (
    Contents,
    Outcome,
    StudyRecord,
    Trigger,
    cutoff,
    decide,
    hold_reason,
)

NOW = datetime(2025, 3, 20, 12, 0, tzinfo=UTC)
BEFORE = NOW - timedelta(days=7)
OLD = NOW - timedelta(days=10)
RECENT = NOW - timedelta(days=1)
OLD_FILES = Contents(size_bytes=1234, newest_mtime=OLD)


def dispatched(run: str = "run-1", at: datetime = OLD, pathway: str = "stroke_triage") -> Trigger:
    return Trigger(pathway, "dispatched", last_activity=at, flow_run_id=run, dispatched_at=at)


def outcome(
    run: str | None = "run-1", at: datetime = OLD, pathway: str = "stroke_triage"
) -> Outcome:
    return Outcome(pathway, finished_at=at, flow_run_id=run)


def closed(
    *triggers: Trigger, outcomes: tuple[Outcome, ...] = (), at: datetime = OLD
) -> StudyRecord:
    return StudyRecord("closed", at, tuple(triggers), outcomes)


def test_cutoff_is_now_minus_the_retention_and_zero_keeps_forever() -> None:
    assert cutoff(NOW, 7) == BEFORE
    assert cutoff(NOW, 0.5) == NOW - timedelta(hours=12)
    assert cutoff(NOW, 0) is None
    with pytest.raises(ValueError):
        cutoff(NOW, -1)


def test_settled_old_study_is_removed() -> None:
    record = closed(dispatched(), outcomes=(outcome(),))
    assert decide("1.2.3", record, OLD_FILES, BEFORE).action == "remove"


def test_a_failed_outcome_is_an_outcome() -> None:
    # Outcome rows say "failed" in their outcome column; this rule only asks that one exists.
    assert hold_reason(closed(dispatched(), outcomes=(outcome(),)), BEFORE) is None


def test_closed_study_without_any_trigger_is_removed() -> None:
    assert decide("1.2.3", closed(), OLD_FILES, BEFORE).action == "remove"


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (StudyRecord("open", None), "open"),
        (StudyRecord("open", OLD), "open"),  # reopened by a late instance
        (StudyRecord("closed", None), "open"),
        (closed(Trigger("stroke_triage", "pending", OLD)), "trigger pending"),
        (closed(dispatched()), "awaiting outcome"),
        (closed(dispatched(), outcomes=(outcome(pathway="nodule_followup"),)), "awaiting outcome"),
        (closed(Trigger("stroke_triage", "claimed", OLD)), "trigger claimed"),
        (closed(at=RECENT), "within retention"),
        (closed(dispatched(at=RECENT), outcomes=(outcome(at=RECENT),)), "within retention"),
        (closed(dispatched(), outcomes=(outcome(at=RECENT),)), "within retention"),
        (closed(Trigger("stroke_triage", "dead", RECENT)), "within retention"),
    ],
)
def test_kept_with_the_reason(record: StudyRecord, reason: str) -> None:
    assert hold_reason(record, BEFORE) == reason
    decision = decide("1.2.3", record, OLD_FILES, BEFORE)
    assert (decision.action, decision.reason) == ("keep", reason)


def test_every_dispatched_pathway_needs_its_outcome() -> None:
    two = (dispatched("run-1"), dispatched("run-2", pathway="nodule_followup"))
    assert hold_reason(closed(*two, outcomes=(outcome("run-1"),)), BEFORE) == "awaiting outcome"
    both = (outcome("run-1"), outcome("run-2", pathway="nodule_followup"))
    assert hold_reason(closed(*two, outcomes=both), BEFORE) is None


def test_an_outcome_from_before_a_later_dispatch_does_not_count() -> None:
    # A dead row retried: dispatched again after an earlier outcome of another run.
    redispatched = dispatched("run-2", at=OLD + timedelta(days=1))
    earlier = outcome("run-1", at=OLD)
    assert hold_reason(closed(redispatched, outcomes=(earlier,)), BEFORE) == "awaiting outcome"
    later = outcome("run-3", at=OLD + timedelta(days=2))
    assert hold_reason(closed(redispatched, outcomes=(later,)), BEFORE) is None


def test_the_outcome_of_the_dispatched_run_counts_whatever_the_clocks_say() -> None:
    # Runner clock behind the gateway's: the same run id still proves the run ended.
    row = dispatched("run-1", at=OLD)
    skewed = outcome("run-1", at=OLD - timedelta(seconds=30))
    assert hold_reason(closed(row, outcomes=(skewed,)), BEFORE) is None
    assert hold_reason(closed(row, outcomes=(outcome("run-9", at=skewed.finished_at),)), BEFORE)


def test_dead_triggers_do_not_hold_an_old_study() -> None:
    record = closed(Trigger("stroke_triage", "dead", OLD), dispatched(), outcomes=(outcome(),))
    assert decide("1.2.3", record, OLD_FILES, BEFORE).action == "remove"


def test_recent_files_keep_a_study_the_database_lets_go() -> None:
    record = closed(dispatched(), outcomes=(outcome(),))
    fresh = Contents(size_bytes=10, newest_mtime=RECENT)
    assert decide("1.2.3", record, fresh, BEFORE).reason == "recent files"


def test_empty_folder_of_a_settled_study_is_removed() -> None:
    assert decide("1.2.3", closed(), Contents(0, None), BEFORE).action == "remove"


def test_orphans_are_reported_only_when_their_files_are_old() -> None:
    assert decide("1.2.3", None, OLD_FILES, BEFORE).action == "orphan"
    recent = decide("1.2.3", None, Contents(10, RECENT), BEFORE)
    assert (recent.action, recent.reason) == ("keep", "recent files")
