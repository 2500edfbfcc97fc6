"""Outbox and dispatcher logic on a real SQLite database; Prefect replaced by a test double
that answers like its REST client (ids, or the transient/permanent errors it raises)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from pacsflow.cli import gateway_cmd
from pacsflow.config import load_settings
from pacsflow.db.session import make_engine, make_sessionmaker, upgrade
from pacsflow.db.tables import AuditEntry
from pacsflow.errors import InvalidInputError, PeerUnavailableError
from pacsflow.gateway.dispatcher import Dispatcher
from pacsflow.gateway.outbox import DEAD, DISPATCHED, PENDING, Outbox, backoff_s, idempotency_key
from pacsflow.governance.audit import AuditLog


class PrefectDouble:
    """Test double of PrefectApi: scripted answers, records the runs it 'created'."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.created: list[tuple[str, str]] = []

    def create_flow_run(
        self,
        deployment: str,
        parameters: dict[str, Any],
        *,
        idempotency_key: str,
        name: str | None = None,
        tags: list[str] | None = None,
    ) -> str:
        answer = self.answers.pop(0) if self.answers else "run-id"
        if isinstance(answer, Exception):
            raise answer
        self.created.append((deployment, idempotency_key))
        return str(answer)

    def emit_event(self, *args: Any, **kwargs: Any) -> None:
        pass


@pytest.fixture
def sessions(tmp_path: Path):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)
    return make_sessionmaker(make_engine(url))


def _enqueue(outbox: Outbox, pathway: str = "stroke_triage", uid: str = "1.2.3") -> int:
    row, created = outbox.enqueue(
        source="dicom",
        pathway=pathway,
        study_uid=uid,
        parameters={"study_uid": uid},
        key=idempotency_key(pathway, uid),
    )
    assert created
    return row.id


def test_same_key_is_enqueued_once(sessions) -> None:  # type: ignore[no-untyped-def]
    outbox = Outbox(sessions)
    _enqueue(outbox)
    _, created = outbox.enqueue(
        source="webhook",
        pathway="stroke_triage",
        study_uid="1.2.3",
        parameters={},
        key=idempotency_key("stroke_triage", "1.2.3"),
    )
    assert not created
    assert len(outbox.list()) == 1


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_s(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert backoff_s(30) == 300


def test_transient_failure_retries_later_then_dispatches(sessions) -> None:  # type: ignore[no-untyped-def]
    outbox = Outbox(sessions)
    _enqueue(outbox)
    prefect = PrefectDouble([PeerUnavailableError("down"), "run-1"])
    dispatcher = Dispatcher(sessions, prefect, max_attempts=5)  # type: ignore[arg-type]
    assert dispatcher.dispatch_due() == 0
    row = outbox.list()[0]
    assert row.state == PENDING and row.attempts == 1 and "down" in (row.last_error or "")
    assert dispatcher.dispatch_due() == 0  # not due yet: back-off
    with sessions() as s:  # make it due now
        r = s.get(type(row), row.id)
        r.next_attempt_at = r.created_at
        s.commit()
    assert dispatcher.dispatch_due() == 1
    row = outbox.list()[0]
    assert row.state == DISPATCHED and row.flow_run_id == "run-1"
    assert prefect.created == [("stroke-triage/stroke-triage", "stroke_triage:1.2.3:champion")]


def test_permanent_failure_and_unknown_pathway_go_dead_with_reason(sessions) -> None:  # type: ignore[no-untyped-def]
    outbox = Outbox(sessions)
    _enqueue(outbox, uid="1.1")
    _enqueue(outbox, pathway="no_such_pathway", uid="1.2")
    prefect = PrefectDouble([InvalidInputError("bad parameters")])
    Dispatcher(sessions, prefect).dispatch_due()  # type: ignore[arg-type]
    rows = {r.study_uid: r for r in outbox.list()}
    assert rows["1.1"].state == DEAD and "bad parameters" in (rows["1.1"].last_error or "")
    assert rows["1.2"].state == DEAD and "no deployment" in (rows["1.2"].last_error or "")


def test_gives_up_after_max_attempts(sessions) -> None:  # type: ignore[no-untyped-def]
    outbox = Outbox(sessions)
    _enqueue(outbox)
    prefect = PrefectDouble([PeerUnavailableError("down")] * 3)
    dispatcher = Dispatcher(sessions, prefect, max_attempts=3)  # type: ignore[arg-type]
    for _ in range(3):
        dispatcher.dispatch_due()
        with sessions() as s:
            from pacsflow.db.tables import OutboxEntry

            for r in s.query(OutboxEntry):
                r.next_attempt_at = r.created_at
            s.commit()
    assert outbox.list()[0].state == DEAD


def _kill(sessions, outbox: Outbox, *uids: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    ids = {uid: _enqueue(outbox, uid=uid) for uid in uids}
    prefect = PrefectDouble([InvalidInputError("deployment paused")] * len(uids))
    Dispatcher(sessions, prefect).dispatch_due()  # type: ignore[arg-type]
    assert {r.state for r in outbox.list()} == {DEAD}
    return ids


def test_retry_puts_only_the_chosen_dead_rows_back_and_they_dispatch(sessions) -> None:  # type: ignore[no-untyped-def]
    outbox = Outbox(sessions)
    ids = _kill(sessions, outbox, "2.1", "2.2")
    (revived,) = outbox.retry([ids["2.1"]])
    assert revived.study_uid == "2.1" and revived.attempts == 1  # as it gave up
    rows = {r.study_uid: r for r in outbox.list()}
    assert rows["2.1"].state == PENDING and rows["2.1"].attempts == 0
    assert rows["2.2"].state == DEAD
    prefect = PrefectDouble(["run-9"])
    assert Dispatcher(sessions, prefect).dispatch_due() == 1  # type: ignore[arg-type]
    assert outbox.list(DISPATCHED)[0].flow_run_id == "run-9"
    # A dispatched row is not dead: retrying it changes nothing.
    assert outbox.retry([ids["2.1"]]) == []
    assert [r.study_uid for r in outbox.retry(None)] == ["2.2"]
    assert outbox.list(DEAD) == []


def test_outbox_retry_command_revives_dead_rows_and_audits_each(tmp_path: Path) -> None:
    settings = load_settings(paths={"var_dir": tmp_path / "var"})
    upgrade(settings.database_url)
    sessions = make_sessionmaker(make_engine(settings.database_url))
    outbox = Outbox(sessions)
    ids = _kill(sessions, outbox, "3.1", "3.2")

    parser = argparse.ArgumentParser(prog="pacsflow")
    gateway_cmd.add_parser(parser.add_subparsers(dest="command", required=True))

    def run(*argv: str) -> int:
        args = parser.parse_args(list(argv))
        return int(args.handler(args, settings))

    # An unknown id is reported and makes the command fail, the known one is still revived.
    assert run("outbox", "retry", str(ids["3.2"]), "999") == 1
    assert {r.study_uid: r.state for r in outbox.list()} == {"3.1": DEAD, "3.2": PENDING}
    assert run("outbox", "retry", str(ids["3.2"])) == 1  # pending now, not dead
    assert run("outbox", "retry", "--all-dead") == 0
    assert outbox.list(DEAD) == []
    with sessions() as session:
        retried = list(
            session.scalars(select(AuditEntry).where(AuditEntry.action == "outbox.retry"))
        )
    assert sorted(e.subject for e in retried) == ["3.1", "3.2"]
    assert all(e.detail["attempts"] == 1 and e.detail["last_error"] for e in retried)
    assert all(e.actor.startswith("cli:") for e in retried)
    assert AuditLog(sessions).verify() == []
