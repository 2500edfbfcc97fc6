"""The REST worklist adapter against the vendor worklist test double, over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.config import Settings
from pacsflow.db.session import make_engine, make_sessionmaker, upgrade
from pacsflow.db.tables import WorklistItem, Writeback
from pacsflow.domain import ModelRef, OrderContext, Priority, TriageDecision
from pacsflow.errors import PeerUnavailableError, PermanentError, TransientError
from pacsflow.pathways.sources import StudySource
from pacsflow.testing.services import isolated_settings
from pacsflow.testing.vendor_worklist_double import VendorWorklistDouble
from pacsflow.writeback.ledger import Ledger
from pacsflow.writeback.worklist_adapters import (
    RestWorklistAdapter,
    WorklistUpdate,
    adapters_from_settings,
    deliver,
)
from pacsflow.writeback.writers import PathwayEnv, StudyIds, update_worklist

MODEL = ModelRef(name="ich-unet", version="7")
TOKEN = "vendor-token-only-in-tests"


@pytest.fixture
def vendor() -> Iterator[VendorWorklistDouble]:
    with VendorWorklistDouble(token=TOKEN) as double:
        yield double


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    upgrade(url)
    return make_sessionmaker(make_engine(url))


def _settings(tmp_path: Path, vendor: VendorWorklistDouble, **worklist: Any) -> Settings:
    return isolated_settings(
        tmp_path / "var",
        worklist={
            "adapters": ["rest"],
            "rest_url": vendor.url_template,
            "rest_token": TOKEN,
            "rest_headers": {"X-Site": "north"},
            **worklist,
        },
    )


def _item(accession: str = "ACC-77", priority: Priority = Priority.CRITICAL) -> WorklistUpdate:
    return WorklistUpdate(
        study_uid="1.2.826.0.1." + "".join(str(ord(c)) for c in accession)[:40],
        accession_number=accession,
        patient_id="PAT-77",
        priority=priority,
        summary="Hemorrhage 30 mL, right",
        model=MODEL,
    )


def _rest(settings: Settings, sessions: sessionmaker[Session]) -> RestWorklistAdapter:
    (adapter,) = adapters_from_settings(settings, sessions)
    assert isinstance(adapter, RestWorklistAdapter)
    return adapter


def test_delivered_once_across_two_calls(
    tmp_path: Path, vendor: VendorWorklistDouble, sessions: sessionmaker[Session]
) -> None:
    adapter = _rest(_settings(tmp_path, vendor), sessions)
    ledger = Ledger(sessions)
    item = _item()
    first = deliver([adapter], item, ledger)
    second = deliver([adapter], item, ledger)  # a retried task, or a re-run of the pathway
    assert first == second == {"rest": "STAT", "rest_http": "200"}
    (request,) = vendor.requests
    assert request.method == "PUT"
    assert request.path == "/api/worklist/ACC-77/priority"
    assert request.body == {
        "accessionNumber": "ACC-77",
        "studyInstanceUid": item.study_uid,
        "priority": "STAT",
        "comment": "Hemorrhage 30 mL, right",
        "source": "ich-unet 7",
    }
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["X-Site"] == "north"
    assert request.headers["Idempotency-Key"] == f"worklist-rest:{item.study_uid}:ich-unet:7"
    assert vendor.priorities == {"ACC-77": "STAT"}
    with sessions() as session:
        (row,) = session.query(Writeback).all()
    assert (row.target, row.detail) == ("worklist-rest", first)


def test_503_is_transient_and_the_retry_delivers(
    tmp_path: Path, vendor: VendorWorklistDouble, sessions: sessionmaker[Session]
) -> None:
    adapter = _rest(_settings(tmp_path, vendor), sessions)
    ledger = Ledger(sessions)
    vendor.answer_next(503)
    with pytest.raises(TransientError) as raised:
        deliver([adapter], _item(), ledger)
    assert "answered 503" in str(raised.value)
    assert isinstance(raised.value.__cause__, PeerUnavailableError)
    assert vendor.delivered() == []
    # The claim was released: the task's retry delivers, exactly once.
    assert deliver([adapter], _item(), ledger) == {"rest": "STAT", "rest_http": "200"}
    assert [r.status for r in vendor.requests] == [503, 200]


def test_400_is_permanent_and_nothing_is_recorded_as_delivered(
    tmp_path: Path, vendor: VendorWorklistDouble, sessions: sessionmaker[Session]
) -> None:
    adapter = _rest(_settings(tmp_path, vendor), sessions)
    vendor.answer_next(400)
    with pytest.raises(PermanentError) as raised:
        deliver([adapter], _item(), Ledger(sessions))
    assert "refused the update: HTTP 400" in str(raised.value)
    assert not isinstance(raised.value, TransientError)
    with sessions() as session:
        assert session.query(Writeback).count() == 0


def test_a_wrong_token_is_permanent(
    tmp_path: Path, vendor: VendorWorklistDouble, sessions: sessionmaker[Session]
) -> None:
    adapter = _rest(_settings(tmp_path, vendor, rest_token="wrong"), sessions)
    with pytest.raises(PermanentError, match="HTTP 401"):
        deliver([adapter], _item(), Ledger(sessions))


def test_vendor_not_listening_is_transient(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    with VendorWorklistDouble() as gone:
        settings = _settings(tmp_path, gone)
    adapter = _rest(settings, sessions)  # the double has stopped: connection refused
    with pytest.raises(TransientError, match="ConnectError"):
        deliver([adapter], _item(), Ledger(sessions))


def test_update_worklist_writes_the_table_and_the_vendor_and_keeps_its_shape(
    tmp_path: Path, vendor: VendorWorklistDouble, sessions: sessionmaker[Session]
) -> None:
    settings = _settings(tmp_path, vendor, adapters=["pacsflow", "hl7", "rest"])
    env = PathwayEnv(settings, sessions, StudySource(settings, sessions), Ledger(sessions))
    ids = StudyIds(
        study_uid="1.2.826.0.1.99", series_uid=None, accession_number="ACC-99", patient_id="P99"
    )
    order = OrderContext(accession_number="ACC-99", patient_id="P99", procedure_code="CTHEAD")
    decision = TriageDecision(priority=Priority.URGENT, reasons=["small hemorrhage"])
    for _ in range(2):
        written = update_worklist(env, ids, None, decision, MODEL, "Hemorrhage 0.5 mL", order)
        # No RIS configured: the hl7 adapter has nothing to send, as before.
        assert written == {"worklist": "urgent", "rest": "HIGH", "rest_http": "200"}
    assert len(vendor.delivered()) == 1
    with sessions() as session:
        row = session.get(WorklistItem, ids.study_uid)
        assert row is not None and row.priority == "urgent"
        assert [w.target for w in session.query(Writeback)] == ["worklist-rest"]
    routine = TriageDecision(priority=Priority.ROUTINE, reasons=[])
    assert update_worklist(env, ids, None, routine, MODEL, "No hemorrhage", order) == {
        "worklist": "routine"  # routine is not in the vendor's priority map: not sent
    }
    assert len(vendor.delivered()) == 1
