"""Rate limits over a real socket: the gateway's HTTP app (webhook + web API mounted at /, as
the gateway serves them) under uvicorn on a free loopback port, with limiters on an injected
clock so that "after the window" needs no sleep.

A second client on the webhook is a second address: the test binds its source address to
127.0.0.2 (the whole 127/8 is loopback on Linux).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.config import load_settings
from pacsflow.db.session import make_engine, make_sessionmaker, upgrade
from pacsflow.db.tables import OutboxEntry
from pacsflow.gateway.outbox import Outbox
from pacsflow.gateway.rate_limit import RateLimiter
from pacsflow.gateway.signing import sign
from pacsflow.gateway.webhook import create_gateway_app
from pacsflow.governance.auth import AuthConfig
from pacsflow.governance.rbac import load_policy
from pacsflow.governance.users import UserStore
from pacsflow.web.app import create_web_app
from pacsflow.web.sample import SAMPLE_PASSWORD, add_sample_users
from pacsflow.web.server import serving

SECRET = "rate-limit-webhook-secret"
BURST = 3
PER_MINUTE = 60  # one token a second on the injected clock


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Site:
    base_url: str
    clock: FakeClock
    sessions: sessionmaker[Session]
    serial: int = 0

    def client(self, source: str = "127.0.0.1") -> httpx.Client:
        transport = httpx.HTTPTransport(local_address=source)
        return httpx.Client(base_url=self.base_url, transport=transport, timeout=30)

    def trigger(self, client: httpx.Client) -> httpx.Response:
        self.serial += 1
        body = json.dumps(
            {"study_uid": f"1.2.826.0.1.3680043.10.998.{self.serial}", "pathway": "stroke_triage"}
        ).encode()
        headers = {"Content-Type": "application/json", **sign(SECRET, int(time.time()), body)}
        return client.post("/hooks/studies", content=body, headers=headers)

    def outbox_rows(self) -> int:
        with self.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(OutboxEntry)) or 0)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    url = f"sqlite:///{tmp_path / 'pacsflow.db'}"
    upgrade(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    add_sample_users(UserStore(sessions, hasher), SAMPLE_PASSWORD)
    settings = load_settings(
        paths={"var_dir": tmp_path / "var"},
        database={"url": url},
        gateway={"webhook_secret": SECRET},
    )
    clock = FakeClock()
    app = create_gateway_app(
        settings,
        sessions,
        Outbox(sessions),
        rate_limiter=RateLimiter(PER_MINUTE, BURST, clock=clock),
    )
    web = create_web_app(
        settings,
        sessions,
        policy=load_policy(),
        auth=AuthConfig(secret_key="r" * 48),
        password_hasher=hasher,
        rate_limiter=RateLimiter(PER_MINUTE, BURST, clock=clock),
    )
    app.mount("/", web)  # as Gateway.serve does
    try:
        with serving(app) as base_url:
            yield Site(base_url, clock, sessions)
    finally:
        engine.dispose()


def assert_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["retry-after"] == "1"
    assert response.headers["content-type"] == "application/json"
    assert "rate limit exceeded" in response.json()["detail"]


def test_webhook_past_the_rate_answers_429_per_address_and_recovers(site: Site) -> None:
    with site.client("127.0.0.1") as a, site.client("127.0.0.2") as b:
        assert [site.trigger(a).status_code for _ in range(BURST)] == [202] * BURST
        refused = site.trigger(a)
        assert_limited(refused)
        assert site.outbox_rows() == BURST  # the refused trigger was not recorded

        assert site.trigger(b).status_code == 202  # another client is not affected
        for _ in range(2 * BURST):  # /health is never limited
            assert a.get("/health").status_code == 200

        site.clock.now += 1.0  # one token back
        assert site.trigger(a).status_code == 202
        assert_limited(site.trigger(a))
        assert site.outbox_rows() == BURST + 2


def test_api_past_the_rate_answers_429_per_token_and_recovers(site: Site) -> None:
    with site.client() as client:
        tokens = {}
        for user in ("rita.resident", "alan.attending"):
            login = client.post(
                "/api/auth/login", json={"username": user, "password": SAMPLE_PASSWORD}
            )
            assert login.status_code == 200, login.text
            tokens[user] = {"Authorization": f"Bearer {login.json()['access_token']}"}
        rita, alan = tokens["rita.resident"], tokens["alan.attending"]

        statuses = [client.get("/api/worklist", headers=rita).status_code for _ in range(BURST)]
        assert statuses == [200] * BURST
        assert_limited(client.get("/api/worklist", headers=rita))
        assert_limited(client.get("/api/auth/me", headers=rita))  # the whole API, one bucket

        # Another token on the same address is another client.
        assert client.get("/api/worklist", headers=alan).status_code == 200
        assert client.get("/health").status_code == 200

        site.clock.now += 1.0
        assert client.get("/api/worklist", headers=rita).status_code == 200
        assert_limited(client.get("/api/worklist", headers=rita))
        site.clock.now += 60.0  # a full window: the whole burst again
        statuses = [client.get("/api/worklist", headers=rita).status_code for _ in range(BURST)]
        assert statuses == [200] * BURST


def test_api_without_a_token_is_limited_by_address(site: Site) -> None:
    with site.client("127.0.0.1") as a, site.client("127.0.0.2") as b:
        assert [a.get("/api/worklist").status_code for _ in range(BURST)] == [401] * BURST
        assert_limited(a.get("/api/worklist"))
        assert b.get("/api/worklist").status_code == 401
