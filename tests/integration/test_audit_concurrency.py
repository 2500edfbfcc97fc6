"""Several OS processes appending to one audit chain at once neither fork nor lose it:
on a SQLite file and on PostgreSQL (127.0.0.1:5432), from an empty log (genesis race)."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from pacsflow.db.session import make_engine, make_sessionmaker, upgrade
from pacsflow.db.tables import AuditEntry
from pacsflow.governance.audit import GENESIS, AuditLog
from pacsflow.testing.postgres import fresh_databases, url

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKERS = 3
ENTRIES_PER_WORKER = 40

# One appender process: signals it is ready (imports done), waits for the common start,
# then appends its entries with a short pause between them, so the three overlap.
_APPENDER = """
import sys, time
from pathlib import Path
from pacsflow.db.session import make_engine, make_sessionmaker
from pacsflow.governance.audit import AuditLog

url, worker, count, run_dir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
log = AuditLog(make_sessionmaker(make_engine(url)))
(run_dir / f"ready-{worker}").touch()
while not (run_dir / "go").exists():
    time.sleep(0.002)
for n in range(count):
    log.append(f"worker-{worker}", "test.append", f"entry-{n}", {"worker": worker, "n": n})
    time.sleep(0.003)  # on an idle machine one worker would otherwise finish before the next
"""


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'pacsflow.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with fresh_databases(["audit"]) as names:
        yield url(names["audit"])


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_url")
    upgrade(url)
    return url


def _run_appenders(url: str, run_dir: Path) -> list[subprocess.CompletedProcess[str]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _APPENDER, url, str(w), str(ENTRIES_PER_WORKER), str(run_dir)],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(WORKERS)
    ]
    # Release them together, once every one has paid its imports, so the appends overlap.
    while len(list(run_dir.glob("ready-*"))) < WORKERS and all(p.poll() is None for p in procs):
        time.sleep(0.01)
    (run_dir / "go").touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return results


def test_concurrent_processes_keep_one_unbroken_chain(database_url: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    results = _run_appenders(database_url, run_dir)
    for r in results:
        assert r.returncode == 0, r.stderr[-3000:]

    sessions = make_sessionmaker(make_engine(database_url))
    assert AuditLog(sessions).verify() == []
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(AuditEntry)) == WORKERS * (
            ENTRIES_PER_WORKER
        )
        entries = list(s.scalars(select(AuditEntry).order_by(AuditEntry.id)))
    # Exactly one genesis entry, ids without gaps, and every append of every worker present.
    assert [e.prev_hash for e in entries].count(GENESIS) == 1
    assert [e.id for e in entries] == list(range(1, WORKERS * ENTRIES_PER_WORKER + 1))
    appended = {(e.detail["worker"], e.detail["n"]) for e in entries}
    assert appended == {(w, n) for w in range(WORKERS) for n in range(ENTRIES_PER_WORKER)}
    # The workers really interleaved (otherwise this test proves nothing about races).
    workers_in_order = [e.detail["worker"] for e in entries]
    switches = sum(a != b for a, b in itertools.pairwise(workers_in_order))
    assert switches > WORKERS - 1


def test_genesis_then_appends_in_one_process(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    log = AuditLog(make_sessionmaker(make_engine(sqlite_url)))
    first = log.append("tester", "test.first", "s1")
    second = log.append("tester", "test.second", "s2", {"k": 1})
    assert (first.id, first.prev_hash) == (1, GENESIS)
    assert (second.id, second.prev_hash) == (2, first.hash)
    assert log.verify() == []
