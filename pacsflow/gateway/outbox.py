"""The durable outbox: one row per accepted trigger, written before the acknowledgement.

States: pending -> dispatched (a Prefect flow run exists) | dead (gave up, with the reason).
The idempotency key makes a re-sent study, order or webhook a no-op.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.db.tables import OutboxEntry

PENDING, DISPATCHED, DEAD = "pending", "dispatched", "dead"


def idempotency_key(pathway: str, study_uid: str, model_version: str | None = None) -> str:
    """(pathway, study, model version): a new champion version may read the study again."""
    return f"{pathway}:{study_uid}:{model_version or 'champion'}"


def backoff_s(attempts: int, base_s: float = 1.0, cap_s: float = 300.0) -> float:
    """Exponential back-off between dispatch attempts: 1, 2, 4, ... seconds, capped."""
    return float(min(cap_s, base_s * 2 ** max(0, attempts - 1)))


def _row_locked(session: Session, query: Select[Any], *, skip_locked: bool) -> Select[Any]:
    """FOR UPDATE where the database has row locks (PostgreSQL); SQLite serialises writers."""
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        return query.with_for_update(skip_locked=skip_locked)
    return query


@dataclass(frozen=True)
class Revived:
    """A dead row put back to pending: what it was when it gave up."""

    id: int
    pathway: str
    study_uid: str | None
    attempts: int
    last_error: str | None


class Outbox:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def enqueue(
        self,
        *,
        source: str,
        pathway: str,
        study_uid: str | None,
        parameters: dict[str, Any],
        key: str,
        session: Session | None = None,
    ) -> tuple[OutboxEntry, bool]:
        """Insert a row unless the key exists. Returns (row, created). Commits when it owns the
        session; inside a caller's session it flushes and leaves the commit to the caller."""
        if session is not None:
            return self._enqueue_in(session, source, pathway, study_uid, parameters, key)
        with self.sessions() as own:
            try:
                row, created = self._enqueue_in(own, source, pathway, study_uid, parameters, key)
                own.commit()
                return row, created
            except IntegrityError:  # a concurrent writer inserted the same key first
                own.rollback()
                existing = own.scalar(select(OutboxEntry).where(OutboxEntry.idempotency_key == key))
                assert existing is not None
                return existing, False

    @staticmethod
    def _enqueue_in(
        session: Session,
        source: str,
        pathway: str,
        study_uid: str | None,
        parameters: dict[str, Any],
        key: str,
    ) -> tuple[OutboxEntry, bool]:
        existing = session.scalar(select(OutboxEntry).where(OutboxEntry.idempotency_key == key))
        if existing is not None:
            return existing, False
        row = OutboxEntry(
            idempotency_key=key,
            source=source,
            pathway=pathway,
            study_uid=study_uid,
            parameters=parameters,
            state=PENDING,
        )
        session.add(row)
        session.flush()
        return row, True

    def due(self, session: Session, limit: int = 20) -> Sequence[OutboxEntry]:
        """Pending rows whose next attempt is due, locked for this dispatcher where the
        database supports it (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite serialises writers)."""
        now = datetime.now(UTC)
        query = (
            select(OutboxEntry)
            .where(OutboxEntry.state == PENDING, OutboxEntry.next_attempt_at <= now)
            .order_by(OutboxEntry.id)
            .limit(limit)
        )
        return session.scalars(_row_locked(session, query, skip_locked=True)).all()

    @staticmethod
    def mark_dispatched(row: OutboxEntry, flow_run_id: str) -> None:
        row.state = DISPATCHED
        row.flow_run_id = flow_run_id
        row.dispatched_at = datetime.now(UTC)
        row.last_error = None

    @staticmethod
    def mark_failed(row: OutboxEntry, reason: str, *, max_attempts: int, permanent: bool) -> None:
        row.attempts += 1
        row.last_error = reason[:2000]
        if permanent or row.attempts >= max_attempts:
            row.state = DEAD
        else:
            row.next_attempt_at = datetime.now(UTC) + timedelta(seconds=backoff_s(row.attempts))

    def retry(self, ids: Sequence[int] | None = None) -> list[Revived]:
        """Dead rows back to pending, due now, with a fresh count of attempts: after the
        cause (a deployment missing, Prefect away too long) is fixed. ``ids`` None: every
        dead row. A dead row never got a flow run of its own (and were one created just
        before a time-out, the idempotency key would hand that same run back); the
        pathway's writeback ledger keeps a study run again from being written twice."""
        with self.sessions() as session:
            query = select(OutboxEntry).where(OutboxEntry.state == DEAD)
            if ids is not None:
                query = query.where(OutboxEntry.id.in_(list(ids)))
            query = _row_locked(session, query.order_by(OutboxEntry.id), skip_locked=False)
            revived = []
            for row in session.scalars(query):  # locked: not under a concurrent retry's feet
                revived.append(
                    Revived(row.id, row.pathway, row.study_uid, row.attempts, row.last_error)
                )
                row.state = PENDING
                row.attempts = 0
                row.next_attempt_at = datetime.now(UTC)
            session.commit()
            return revived

    def existing(self, ids: Sequence[int]) -> set[int]:
        with self.sessions() as session:
            return set(session.scalars(select(OutboxEntry.id).where(OutboxEntry.id.in_(ids))))

    def list(self, state: str | None = None, limit: int = 100) -> Sequence[OutboxEntry]:
        with self.sessions() as session:
            query = select(OutboxEntry).order_by(OutboxEntry.id.desc()).limit(limit)
            if state:
                query = query.where(OutboxEntry.state == state)
            return session.scalars(query).all()
