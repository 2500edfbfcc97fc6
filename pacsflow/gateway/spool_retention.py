"""Which spooled studies may be removed: the retention rule, with no disk or database access.

The spool is a local copy. A pathway run reads a study from the spool when it is there and
from the archive otherwise (`pacsflow.pathways.sources`). Removing a study is safe only when
none of its work can still start or is still running:

- its `received_studies` row is closed, so no instance is arriving and the assembler is
  done with it;
- no outbox row of the study is pending. Each row is dispatched or dead. A dead row never
  started a run; retried after the prune (`pacsflow outbox retry`), its run reads the archive;
- each dispatched row has its outcome in `pathway_runs`: the one its flow run recorded, or
  one finished after the dispatch ("failed" counts: it is an explicit end);
- the study's last activity is older than the retention: its close, its triggers and its
  outcomes;
- no file in its folder is newer than the retention.

A folder with no row at all is an orphan (the database was reset or replaced). It is
reported once its files are older than the retention, and removed only on request.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

Action = Literal["remove", "orphan", "keep"]

# Outbox states that end a trigger (pacsflow.gateway.outbox), repeated so this module
# imports nothing.
_DISPATCHED, _DEAD = "dispatched", "dead"


@dataclass(frozen=True)
class Trigger:
    """One outbox row of the study."""

    pathway: str
    state: str
    last_activity: datetime  # latest of created, last attempt, dispatched
    flow_run_id: str | None = None
    dispatched_at: datetime | None = None


@dataclass(frozen=True)
class Outcome:
    """One `pathway_runs` row of the study."""

    pathway: str
    finished_at: datetime
    flow_run_id: str | None = None


@dataclass(frozen=True)
class StudyRecord:
    """What the database knows about one spooled study."""

    state: str
    closed_at: datetime | None
    triggers: tuple[Trigger, ...] = field(default_factory=tuple)
    outcomes: tuple[Outcome, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Contents:
    """What one study folder holds on disk."""

    size_bytes: int
    newest_mtime: datetime | None  # None: no files at all


@dataclass(frozen=True)
class Decision:
    study_uid: str
    action: Action
    reason: str


def cutoff(now: datetime, retention_days: float) -> datetime | None:
    """Activity before this instant is past the retention; None when 0 means keep forever."""
    if retention_days < 0:
        raise ValueError(f"retention must be >= 0 days, not {retention_days}")
    return None if retention_days == 0 else now - timedelta(days=retention_days)


def _outcome_recorded(trigger: Trigger, outcomes: Iterable[Outcome]) -> bool:
    for outcome in outcomes:
        if outcome.pathway != trigger.pathway:
            continue
        if trigger.flow_run_id and outcome.flow_run_id == trigger.flow_run_id:
            return True  # the run this row started has ended
        # Another run id, such as a run of a sweep: it counts only if it finished after the
        # dispatch. Otherwise the dispatched run may still be reading.
        if trigger.dispatched_at is None or outcome.finished_at >= trigger.dispatched_at:
            return True
    return False


def last_activity(record: StudyRecord) -> datetime | None:
    moments = [record.closed_at] if record.closed_at else []
    moments += [t.last_activity for t in record.triggers]
    moments += [o.finished_at for o in record.outcomes]
    return max(moments, default=None)


def hold_reason(record: StudyRecord, before: datetime) -> str | None:
    """Why the database says the study must stay, or None when it may go."""
    if record.state != "closed" or record.closed_at is None:
        return "open"
    for trigger in record.triggers:
        if trigger.state not in (_DISPATCHED, _DEAD):  # pending, or a state unknown here
            return f"trigger {trigger.state}"
        if trigger.state == _DISPATCHED and not _outcome_recorded(trigger, record.outcomes):
            return "awaiting outcome"
    latest = last_activity(record)
    if latest is not None and latest > before:
        return "within retention"
    return None


def decide(
    study_uid: str, record: StudyRecord | None, contents: Contents, before: datetime
) -> Decision:
    """Remove, report as an orphan, or keep (with the reason) one study folder."""
    if record is not None:
        reason = hold_reason(record, before)
        if reason is not None:
            return Decision(study_uid, "keep", reason)
    if contents.newest_mtime is not None and contents.newest_mtime > before:
        # A recent file: an instance arrived after the row said otherwise, or an orphan
        # that the assembler is about to recover.
        return Decision(study_uid, "keep", "recent files")
    if record is None:
        return Decision(study_uid, "orphan", "no database row")
    return Decision(study_uid, "remove", "settled")
