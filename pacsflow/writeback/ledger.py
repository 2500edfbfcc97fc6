"""The idempotency ledger: a delivered output is recorded once, and never sent again."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.db.tables import Writeback
from pacsflow.domain import ModelRef


def writeback_key(target: str, study_uid: str, model: ModelRef) -> str:
    return f"{target}:{study_uid}:{model.name}:{model.version}"


class Ledger:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def delivered(self, key: str) -> dict[str, Any] | None:
        with self.sessions() as session:
            row = session.scalar(select(Writeback).where(Writeback.key == key))
            return dict(row.detail or {}) if row else None

    def record(self, key: str, study_uid: str, target: str, detail: dict[str, Any]) -> bool:
        """True if recorded now; False if another attempt had recorded it already."""
        with self.sessions() as session:
            session.add(Writeback(key=key, study_uid=study_uid, target=target, detail=detail))
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                return False
        return True

    def for_study(self, study_uid: str) -> list[Writeback]:
        with self.sessions() as session:
            return list(session.scalars(select(Writeback).where(Writeback.study_uid == study_uid)))
