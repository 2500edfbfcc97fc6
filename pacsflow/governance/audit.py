"""Append-only, hash-chained audit log.

Each entry's hash covers its content and the previous entry's hash, so editing or deleting
any entry breaks the chain at that point; `verify` names the first broken entry.
"""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.db.tables import AuditEntry

GENESIS = "0" * 64
_append_lock = threading.Lock()


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


class AuditLog:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def append(
        self, actor: str, action: str, subject: str, detail: dict[str, Any] | None = None
    ) -> AuditEntry:
        detail = detail or {}
        with _append_lock, self.sessions() as session:
            last = session.scalar(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(1))
            prev = last.hash if last else GENESIS
            now = datetime.now(UTC).replace(
                microsecond=(datetime.now(UTC).microsecond // 1000) * 1000
            )
            entry = AuditEntry(
                at=now,
                actor=actor,
                action=action,
                subject=subject,
                detail=detail,
                prev_hash=prev,
                hash=entry_hash(prev, _at(now), actor, action, subject, detail),
            )
            session.add(entry)
            session.commit()
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
