"""Append-only, hash-chained audit log.

Each entry's hash covers its content and the previous entry's hash, so editing or deleting
any entry breaks the chain at that point; `verify` names the first broken entry.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import random
import threading
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.db.tables import AuditEntry
from pacsflow.errors import TransientError

GENESIS = "0" * 64
_append_lock = threading.Lock()


def cli_actor() -> str:
    """The audit actor for a command run by an operator: the login name."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (containers)
        return "cli:unknown"


def entry_hash(
    prev_hash: str, at: str, actor: str, action: str, subject: str, detail: dict[str, Any]
) -> str:
    payload = json.dumps(
        {
            "prev": prev_hash,
            "at": at,
            "actor": actor,
            "action": action,
            "subject": subject,
            "detail": detail,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def _at(value: datetime) -> str:
    if value.tzinfo is None:  # SQLite returns naive datetimes; they were written as UTC
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


class AuditChainBusyError(TransientError):
    """Other appenders kept winning the race for the head of the chain; try again later."""


class AuditLog:
    """The audit trail of one database, safe to append to from many threads and processes.

    Appenders race for the head: the entry's id (head id + 1, the primary key) and its
    previous hash (UNIQUE) make a second appender that read the same head fail on commit
    instead of forking the chain; it re-reads the head and tries again.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        max_attempts: int = 50,
        retry_sleep_s: float = 0.02,
    ) -> None:
        self.sessions = sessions
        self.max_attempts = max_attempts
        self.retry_sleep_s = retry_sleep_s

    def append(
        self, actor: str, action: str, subject: str, detail: dict[str, Any] | None = None
    ) -> AuditEntry:
        detail = detail or {}
        # The lock only spares this process's threads from racing each other.
        with _append_lock:
            for attempt in range(1, self.max_attempts + 1):
                entry = self._try_append(actor, action, subject, detail)
                if entry is not None:
                    return entry
                # Jitter, so the losers of one race do not all collide again in the next.
                time.sleep(random.uniform(0, self.retry_sleep_s * min(attempt, 10)))
        raise AuditChainBusyError(
            f"audit entry {action!r} on {subject!r} not appended: the chain head changed "
            f"under each of {self.max_attempts} attempts (too many concurrent appenders)"
        )

    def _try_append(
        self, actor: str, action: str, subject: str, detail: dict[str, Any]
    ) -> AuditEntry | None:
        """The new entry, or None when another appender took the head first."""
        with self.sessions() as session:
            last = session.scalar(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(1))
            prev, next_id = (last.hash, last.id + 1) if last else (GENESIS, 1)
            # Explicit ids: a lost race must not leave a sequence gap that `verify` would
            # report as a deleted entry (PostgreSQL sequences do not roll back).
            now = datetime.now(UTC)
            now = now.replace(microsecond=now.microsecond // 1000 * 1000)
            entry = AuditEntry(
                id=next_id,
                at=now,
                actor=actor,
                action=action,
                subject=subject,
                detail=detail,
                prev_hash=prev,
                hash=entry_hash(prev, _at(now), actor, action, subject, detail),
            )
            session.add(entry)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                return None
            return entry

    def verify(self) -> list[str]:
        """Problems found, first one first; empty when the chain is intact."""
        problems: list[str] = []
        prev = GENESIS
        expected_id = None
        with self.sessions() as session:
            for e in session.scalars(select(AuditEntry).order_by(AuditEntry.id)):
                if expected_id is not None and e.id != expected_id:
                    problems.append(f"entries {expected_id}..{e.id - 1} are missing (deleted)")
                if e.prev_hash != prev:
                    problems.append(f"entry {e.id}: previous-hash link broken")
                recomputed = entry_hash(
                    e.prev_hash, _at(e.at), e.actor, e.action, e.subject, e.detail or {}
                )
                if recomputed != e.hash:
                    problems.append(f"entry {e.id}: content does not match its hash (edited)")
                prev = e.hash
                expected_id = e.id + 1
        return problems
