"""The signed webhook over a real socket: uvicorn on a free port, SQLite migrated by Alembic."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.config import Settings, load_settings
from pacsflow.db.session import make_engine, make_sessionmaker, upgrade
from pacsflow.db.tables import OutboxEntry
from pacsflow.gateway.outbox import Outbox, idempotency_key
from pacsflow.gateway.signing import sign
from pacsflow.gateway.webhook import create_gateway_app
from pacsflow.stack.process import free_port

SECRET = "integration-webhook-secret"
WINDOW_S = 300


@dataclass
class Gateway:
    client: httpx.Client
    sessions: sessionmaker[Session]
    triggered: list[OutboxEntry]

    def post(
        self,
        path: str,
        payload: Any,
        *,
        secret: str = SECRET,
        timestamp: int | None = None,
        raw: bytes | None = None,
    ) -> httpx.Response:
        """Sign and send; `raw` sends bytes that need not be JSON."""
        body = raw if raw is not None else json.dumps(payload).encode()
        ts = int(time.time()) if timestamp is None else timestamp
        headers = {"Content-Type": "application/json", **sign(secret, ts, body)}
        return self.client.post(path, content=body, headers=headers)

    def rows(self) -> list[OutboxEntry]:
        with self.sessions() as session:
            return list(session.scalars(select(OutboxEntry).order_by(OutboxEntry.id)))

    def count(self) -> int:
        with self.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(OutboxEntry)) or 0)


@contextmanager
def serving(app: FastAPI) -> Iterator[httpx.Client]:
    """The app under uvicorn in a thread, on a free loopback port, and a client for it."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, name="webhook-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail(f"uvicorn did not start on 127.0.0.1:{port}")
        time.sleep(0.02)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def make_gateway(tmp_path: Path, *, migrate: bool = True) -> tuple[Settings, str]:
    url = f"sqlite:///{tmp_path / 'pacsflow.db'}"
    if migrate:
        upgrade(url)
    settings = load_settings(
        paths={"var_dir": tmp_path / "var"},
        database={"url": url},
        gateway={"webhook_secret": SECRET, "webhook_replay_window_s": WINDOW_S},
    )
    return settings, url


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    settings, url = make_gateway(tmp_path)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    triggered: list[OutboxEntry] = []
    app = create_gateway_app(settings, sessions, Outbox(sessions), on_trigger=triggered.append)
    try:
        with serving(app) as client:
            yield Gateway(client, sessions, triggered)
    finally:
        engine.dispose()


def test_health(gateway: Gateway) -> None:
    response = gateway.client.get("/health")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_accepted_trigger_is_an_outbox_row_and_a_resend_is_a_duplicate(gateway: Gateway) -> None:
    payload = {"study_uid": "1.2.826.0.1.3680043.8.498.10", "accession_number": "ACC1"}
    first = gateway.post("/hooks/stroke_triage/studies", payload)
    assert first.status_code == 202, first.text
    key = idempotency_key("stroke_triage", payload["study_uid"])
    body = first.json()
    assert body["idempotency_key"] == key
    assert (body["state"], body["duplicate"], body["pathway"]) == (
        "pending",
        False,
        "stroke_triage",
    )
    [row] = gateway.rows()
    assert (row.id, row.source, row.pathway, row.study_uid) == (
        body["outbox_id"],
        "webhook",
        "stroke_triage",
        payload["study_uid"],
    )
    assert row.parameters == {"study_uid": payload["study_uid"], "accession_number": "ACC1"}
    assert [r.id for r in gateway.triggered] == [row.id]

    # the same request re-sent later: new timestamp, so a new valid signature
    again = gateway.post("/hooks/stroke_triage/studies", payload, timestamp=int(time.time()) + 1)
    assert again.status_code == 202, again.text
    assert again.json() | {"duplicate": False} == body
    assert again.json()["duplicate"] is True
    assert gateway.count() == 1
    assert len(gateway.triggered) == 1  # no wake-up for a duplicate


def test_pathway_from_the_body_on_the_generic_endpoint(gateway: Gateway) -> None:
    payload = {"study_uid": "1.2.3.4", "pathway": "nodule_followup", "priority": "stat"}
    response = gateway.post("/hooks/studies", payload)
    assert response.status_code == 202, response.text
    [row] = gateway.rows()
    assert (row.pathway, row.parameters["priority"]) == ("nodule_followup", "stat")

    missing = gateway.post("/hooks/studies", {"study_uid": "1.2.3.5"})
    assert missing.status_code == 422
    assert "pathway: required" in missing.json()["detail"]
    unknown = gateway.post("/hooks/studies", {"study_uid": "1.2.3.5", "pathway": "bone_age"})
    assert unknown.status_code == 422
    assert "unknown 'bone_age'" in unknown.json()["detail"]
    conflict = gateway.post(
        "/hooks/stroke_triage/studies", {"study_uid": "1.2.3.5", "pathway": "nodule_followup"}
    )
    assert conflict.status_code == 422
    assert "differs from the path" in conflict.json()["detail"]
    assert gateway.count() == 1


def test_refusals_have_reasons_create_nothing_and_a_good_request_still_works(
    gateway: Gateway,
) -> None:
    path = "/hooks/stroke_triage/studies"
    good = {"study_uid": "1.2.3.99"}

    bad_signature = gateway.post(path, good, secret="not-the-secret")
    assert bad_signature.status_code == 401
    assert bad_signature.json() == {"detail": "signature does not match the body and timestamp"}
    assert "WWW-Authenticate" in bad_signature.headers

    unsigned = gateway.client.post(path, json=good)
    assert unsigned.status_code == 401
    assert "missing X-Pacsflow-Timestamp" in unsigned.json()["detail"]

    stale = gateway.post(path, good, timestamp=int(time.time()) - WINDOW_S - 60)
    assert stale.status_code == 401
    assert "stale timestamp" in stale.json()["detail"]

    bad_json = gateway.post(path, None, raw=b'{"study_uid": "1.2.3.99",')
    assert bad_json.status_code == 422
    assert "Invalid JSON" in bad_json.json()["detail"]

    not_an_object = gateway.post(path, ["1.2.3.99"])
    assert not_an_object.status_code == 422

    for uid in ["1.2.3.ABC", "1..2", "." + "1" * 10, "1." * 40 + "1"]:
        invalid_uid = gateway.post(path, {"study_uid": uid})
        assert invalid_uid.status_code == 422, uid
        assert invalid_uid.json()["detail"].startswith("study_uid: Value error, must be a DICOM")

    unknown_field = gateway.post(path, {**good, "patient_name": "Doe^Jane"})
    assert unknown_field.status_code == 422
    assert "patient_name: Extra inputs are not permitted" in unknown_field.json()["detail"]
    assert "Doe" not in unknown_field.text  # refused values are not echoed

    unknown_pathway = gateway.post("/hooks/bone_age/studies", good)
    assert unknown_pathway.status_code == 404
    assert "unknown pathway 'bone_age'" in unknown_pathway.json()["detail"]

    # an unauthenticated caller learns nothing about pathways: the signature comes first
    probe = gateway.post("/hooks/bone_age/studies", good, secret="guess")
    assert probe.status_code == 401

    assert gateway.count() == 0
    assert gateway.triggered == []

    # signatures are single-use: the 404 above spent this body's signature for its second,
    # so the corrected request is signed anew (the path is not part of the signed message)
    ok = gateway.post(path, good, timestamp=int(time.time()) + 1)
    assert ok.status_code == 202, ok.text
    assert gateway.count() == 1


def test_an_exact_replay_is_refused(gateway: Gateway) -> None:
    body = json.dumps({"study_uid": "1.2.3.7"}).encode()
    headers = {"Content-Type": "application/json", **sign(SECRET, int(time.time()), body)}
    first = gateway.client.post("/hooks/screening_cohort/studies", content=body, headers=headers)
    assert first.status_code == 202, first.text
    replay = gateway.client.post("/hooks/screening_cohort/studies", content=body, headers=headers)
    assert replay.status_code == 401
    assert "replayed request" in replay.json()["detail"]
    assert gateway.count() == 1


def test_an_oversized_body_is_refused(gateway: Gateway) -> None:
    raw = b'{"study_uid": "1.2.3", "requested_by": "' + b"x" * 70_000 + b'"}'
    response = gateway.post("/hooks/stroke_triage/studies", None, raw=raw)
    assert response.status_code == 413
    assert gateway.count() == 0


def test_a_trigger_the_database_could_not_record_is_503_and_can_be_resent(tmp_path: Path) -> None:
    settings, url = make_gateway(tmp_path, migrate=False)  # no tables yet: inserts fail
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    app = create_gateway_app(settings, sessions, Outbox(sessions))
    body = json.dumps({"study_uid": "1.2.3.8"}).encode()
    headers = {"Content-Type": "application/json", **sign(SECRET, int(time.time()), body)}
    try:
        with serving(app) as client:
            failed = client.post("/hooks/stroke_triage/studies", content=body, headers=headers)
            assert failed.status_code == 503
            assert failed.headers["Retry-After"] == "5"
            assert "could not be recorded" in failed.json()["detail"]
            upgrade(url)
            # nothing was recorded, so the very same signed request is not a replay
            retried = client.post("/hooks/stroke_triage/studies", content=body, headers=headers)
            assert retried.status_code == 202, retried.text
            assert retried.json()["duplicate"] is False
    finally:
        engine.dispose()
