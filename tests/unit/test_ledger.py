"""The writeback ledger: at most one delivery per key, stale claims taken over."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pacsflow.db.session import make_engine, make_sessionmaker, upgrade
from pacsflow.db.tables import Writeback
from pacsflow.errors import PeerUnavailableError
from pacsflow.writeback.ledger import DeliveryInProgress, Ledger


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    upgrade(url)
    return Ledger(make_sessionmaker(make_engine(url)), stale_after_s=60)


def test_second_delivery_is_skipped(ledger: Ledger) -> None:
    sent: list[int] = []

    def send() -> dict[str, str]:
        sent.append(1)
        return {"ok": "yes"}

    assert ledger.deliver_once("k", "1.2", "ris", send) == {"ok": "yes"}
    assert ledger.deliver_once("k", "1.2", "ris", send) == {"ok": "yes"}
    assert sent == [1]


def test_failed_send_releases_the_claim_for_a_retry(ledger: Ledger) -> None:
    def failing() -> dict[str, str]:
        raise PeerUnavailableError("RIS down")

    with pytest.raises(PeerUnavailableError):
        ledger.deliver_once("k", "1.2", "ris", failing)
    assert ledger.delivered("k") is None
    assert ledger.deliver_once("k", "1.2", "ris", lambda: {"ok": "later"}) == {"ok": "later"}


def test_concurrent_attempt_backs_off_and_stale_claim_is_taken_over(ledger: Ledger) -> None:
    assert ledger.claim("k", "1.2", "ris") is None  # attempt A is sending
    with pytest.raises(DeliveryInProgress):
        ledger.claim("k", "1.2", "ris")  # attempt B must wait
    with ledger.sessions() as s:  # A died long ago
        row = s.query(Writeback).one()
        row.delivered_at = datetime.now(UTC) - timedelta(minutes=5)
        s.commit()
    assert ledger.claim("k", "1.2", "ris") is None  # B takes over
    ledger.complete("k", {"ok": "B"})
    assert ledger.delivered("k") == {"ok": "B"}
    assert [w.target for w in ledger.for_study("1.2")] == ["ris"]


def test_claim_of_a_dead_process_on_this_host_is_taken_over_at_once(ledger: Ledger) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs (reaped)
    assert ledger.claim("k", "1.2", "ris") is None
    with ledger.sessions() as s:  # the claim was made by that process a moment ago
        row = s.query(Writeback).one()
        row.detail = {"state": "sending", "owner": f"{socket.gethostname()}:{dead.pid}"}
        s.commit()
    assert ledger.claim("k", "1.2", "ris") is None  # no 60 s wait: its owner is gone
    with ledger.sessions() as s:
        assert s.query(Writeback).one().detail["owner"] == f"{socket.gethostname()}:{os.getpid()}"


def test_claim_of_a_live_process_or_another_host_still_waits(ledger: Ledger) -> None:
    for owner in (f"{socket.gethostname()}:{os.getpid()}", "elsewhere:1"):
        assert ledger.claim("k", "1.2", "ris") is None
        with ledger.sessions() as s:
            row = s.query(Writeback).one()
            row.detail = {"state": "sending", "owner": owner}
            s.commit()
        with pytest.raises(DeliveryInProgress):
            ledger.claim("k", "1.2", "ris")
        ledger.release("k")
