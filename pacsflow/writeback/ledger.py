"""The idempotency ledger: an output is delivered once, never sent again.

Each output has a key (target, study, model version). A writer first *claims* the key (a
unique row in state "sending"); only the claimant sends; after the peer accepts, the row
becomes "delivered". A second attempt running at the same time finds the claim and backs
off (TransientError: retried later). A claim left behind by a crashed worker is taken over
at once when the claim's owner (host:pid) is a dead process of this host, else after
`stale_after_s`: the resend then carries the same deterministic identifiers (SOP Instance
UID, MSH-10, FHIR conditional-create identifier), so the peer can recognise it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.db.tables import Writeback
from pacsflow.domain import ModelRef
from pacsflow.errors import TransientError
from pacsflow.stack.process import pid_alive

SENDING = "sending"
OWNER = f"{socket.gethostname()}:{os.getpid()}"


def _owner_dead(owner: object) -> bool:
    """True only when the claim's owner is known to be gone: a dead pid on this host."""
    host, _, pid = str(owner or "").rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid))


def writeback_key(target: str, study_uid: str, model: ModelRef) -> str:
    return f"{target}:{study_uid}:{model.name}:{model.version}"


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class DeliveryInProgress(TransientError):
    """Another attempt holds the claim on this output right now."""


class Ledger:
    def __init__(self, sessions: sessionmaker[Session], *, stale_after_s: float = 600.0) -> None:
        self.sessions = sessions
        self.stale_after_s = stale_after_s

    def delivered(self, key: str) -> dict[str, Any] | None:
        with self.sessions() as session:
            row = session.scalar(select(Writeback).where(Writeback.key == key))
            if row is None or (row.detail or {}).get("state") == SENDING:
                return None
            return dict(row.detail or {})

    def claim(self, key: str, study_uid: str, target: str) -> dict[str, Any] | None:
        """None: the caller owns the send. A dict: already delivered (its detail)."""
        now = datetime.now(UTC)
        with self.sessions() as session:
            session.add(
                Writeback(
                    key=key,
                    study_uid=study_uid,
                    target=target,
                    detail={"state": SENDING, "owner": OWNER},
                    delivered_at=now,
                )
            )
            try:
                session.commit()
                return None
            except IntegrityError:
                session.rollback()
            row = session.scalar(select(Writeback).where(Writeback.key == key))
            if row is None:  # released meanwhile: try again later
                raise DeliveryInProgress(f"{key}: claim released concurrently")
            detail = row.detail or {}
            if detail.get("state") != SENDING:
                return dict(detail)
            recent = now - _aware(row.delivered_at) < timedelta(seconds=self.stale_after_s)
            if recent and not _owner_dead(detail.get("owner")):
                raise DeliveryInProgress(f"{key} is being delivered by another attempt")
            # Stale claim (its worker died): take it over, compare-and-set on the timestamp.
            taken = session.execute(
                update(Writeback)
                .where(Writeback.id == row.id, Writeback.delivered_at == row.delivered_at)
                .values(delivered_at=now, detail={"state": SENDING, "owner": OWNER})
            )
            session.commit()
            if taken.rowcount != 1:  # type: ignore[attr-defined]
                raise DeliveryInProgress(f"{key}: another attempt took the stale claim")
            return None

    def complete(self, key: str, detail: dict[str, Any]) -> None:
        with self.sessions() as session:
            session.execute(
                update(Writeback)
                .where(Writeback.key == key)
                .values(detail=detail, delivered_at=datetime.now(UTC))
            )
            session.commit()

    def release(self, key: str) -> None:
        with self.sessions() as session:
            row = session.scalar(select(Writeback).where(Writeback.key == key))
            if row is not None and (row.detail or {}).get("state") == SENDING:
                session.delete(row)
                session.commit()

    def deliver_once(
        self, key: str, study_uid: str, target: str, send: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        """Run `send` at most once per key (see the module docstring for the crash case)."""
        done = self.claim(key, study_uid, target)
        if done is not None:
            return done
        try:
            detail = send()
        except BaseException:
            self.release(key)
            raise
        self.complete(key, detail)
        return detail

    def for_study(self, study_uid: str) -> list[Writeback]:
        with self.sessions() as session:
            rows = session.scalars(select(Writeback).where(Writeback.study_uid == study_uid))
            return [r for r in rows if (r.detail or {}).get("state") != SENDING]
