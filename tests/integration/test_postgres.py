"""pacsflow's database on PostgreSQL (127.0.0.1:5432): migrations, and several dispatchers
on one outbox never start a run twice (FOR UPDATE SKIP LOCKED)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from pacsflow.db.session import make_engine, make_sessionmaker, upgrade
from pacsflow.gateway.dispatcher import Dispatcher
from pacsflow.gateway.outbox import DISPATCHED, Outbox, idempotency_key
from pacsflow.testing.postgres import fresh_databases, url

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_databases(["test"]) as names:
        yield url(names["test"])


class SlowPrefectDouble:
    """Test double of PrefectApi: creating a run takes a moment (so dispatchers overlap)
    and every creation is recorded, to count duplicates."""

    def __init__(self) -> None:
        self.created: list[str] = []
        self._lock = threading.Lock()

    def create_flow_run(
        self,
        deployment: str,
        parameters: dict[str, Any],
        *,
        idempotency_key: str,
        name: str | None = None,
        tags: list[str] | None = None,
    ) -> str:
        threading.Event().wait(0.01)
        with self._lock:
            self.created.append(idempotency_key)
        return f"run-{idempotency_key}"

    def emit_event(self, *args: Any, **kwargs: Any) -> None:
        pass


def test_migrations_apply_on_postgres_and_are_idempotent(pg_url: str) -> None:
    upgrade(pg_url)
    upgrade(pg_url)
    tables = set(sa.inspect(make_engine(pg_url)).get_table_names())
    assert {"outbox", "received_studies", "writebacks", "audit_log", "worklist"} <= tables


def test_concurrent_dispatchers_start_each_run_once(pg_url: str) -> None:
    upgrade(pg_url)
    sessions = make_sessionmaker(make_engine(pg_url))
    outbox = Outbox(sessions)
    keys = []
    for i in range(60):
        uid = f"1.2.840.{i}"
        key = idempotency_key("stroke_triage", uid)
        outbox.enqueue(
            source="dicom",
            pathway="stroke_triage",
            study_uid=uid,
            parameters={"study_uid": uid},
            key=key,
        )
        keys.append(key)
    prefect = SlowPrefectDouble()
    dispatchers = [Dispatcher(sessions, prefect, max_attempts=3) for _ in range(4)]  # type: ignore[arg-type]

    def drain(dispatcher: Dispatcher) -> None:
        for _ in range(30):  # keep polling, as the real loop does
            dispatcher.dispatch_due(limit=5)

    threads = [threading.Thread(target=drain, args=(d,)) for d in dispatchers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(prefect.created) == sorted(keys)  # every row once, none twice
    assert all(r.state == DISPATCHED for r in outbox.list(limit=100))
