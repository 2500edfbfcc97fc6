"""SQLite's journal mode: set once by the migrations, and switched safely when several
processes open a rollback-mode file at the same moment."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from pacsflow.db.session import make_engine, upgrade, use_wal


def _mode(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        conn.close()


def test_migrations_leave_the_file_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "pacsflow.db"
    upgrade(f"sqlite:///{path}")
    assert _mode(path) == "wal"


def test_a_connection_switches_a_rollback_mode_file_to_wal(tmp_path: Path) -> None:
    path = tmp_path / "plain.db"
    sqlite3.connect(path).close()
    assert _mode(path) == "delete"
    with make_engine(f"sqlite:///{path}").connect() as conn:
        conn.exec_driver_sql("select 1")
    assert _mode(path) == "wal"


class _Cursor:
    def __init__(self, db: _LockedThenFree) -> None:
        self.db = db

    def execute(self, sql: str) -> _Cursor:
        self.db.statements.append(sql)
        if sql == "PRAGMA journal_mode=WAL":
            if self.db.locked_answers:
                self.db.locked_answers -= 1
                raise sqlite3.OperationalError(self.db.error)
            self.db.mode = "wal"
        return self

    def fetchone(self) -> tuple[Any, ...]:
        return (self.db.mode,)

    def close(self) -> None:
        pass


class _LockedThenFree:
    """A test double of a DB-API connection to a rollback-mode file whose switch to WAL
    is refused `locked_answers` times (another process holds the lock), as SQLite does
    at once, without its busy handler, when waiting could deadlock."""

    def __init__(self, locked_answers: int, error: str = "database is locked") -> None:
        self.mode, self.locked_answers, self.error = "delete", locked_answers, error
        self.statements: list[str] = []

    def cursor(self) -> _Cursor:
        return _Cursor(self)


def test_a_refused_switch_is_tried_again_until_it_is_made() -> None:
    db = _LockedThenFree(locked_answers=3)
    use_wal(db)  # type: ignore[arg-type]
    assert db.mode == "wal"
    assert db.statements.count("PRAGMA journal_mode=WAL") == 4


def test_no_switch_is_asked_for_when_the_file_is_already_wal() -> None:
    db = _LockedThenFree(locked_answers=0)
    db.mode = "wal"
    use_wal(db)  # type: ignore[arg-type]
    assert db.statements == ["PRAGMA journal_mode"]


def test_other_errors_are_not_retried() -> None:
    db = _LockedThenFree(locked_answers=1, error="disk I/O error")
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        use_wal(db)  # type: ignore[arg-type]
