"""PrefectApi against a busy server: Prefect answers 503 while its database is locked and
expects the client to ask again; an unreachable server is reported at once."""

from __future__ import annotations

import json

import httpx
import pytest

from pacsflow.errors import PeerUnavailableError
from pacsflow.orchestration.prefect_api import PrefectApi

DEPLOYMENT_ID = "abe85661-83e6-4e6a-9dea-445d8839cb9d"


class BusyPrefect:
    """Test double of the Prefect REST API: answers `busy` 503s to run creation first."""

    def __init__(self, busy: int, status: int = 503) -> None:
        self.busy = busy
        self.status = status
        self.creates: list[dict[str, object]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/deployments/name/flow/dep":
            return httpx.Response(200, json={"id": DEPLOYMENT_ID})
        if request.url.path == f"/api/deployments/{DEPLOYMENT_ID}/create_flow_run":
            self.creates.append(json.loads(request.content))
            if len(self.creates) <= self.busy:
                return httpx.Response(
                    self.status, json={"exception_message": "Service Unavailable"}
                )
            return httpx.Response(201, json={"id": "run-1"})
        return httpx.Response(404)


def _api(server: BusyPrefect, delays: tuple[float, ...] = (0.0, 0.0, 0.0)) -> PrefectApi:
    return PrefectApi(
        "http://prefect.test/api",
        busy_retry_delays_s=delays,
        transport=httpx.MockTransport(server),
    )


@pytest.mark.parametrize("status", [503, 429, 502])
def test_a_busy_answer_is_asked_again_with_the_same_idempotency_key(status: int) -> None:
    server = BusyPrefect(busy=2, status=status)
    run_id = _api(server).create_flow_run("flow/dep", {"a": 1}, idempotency_key="key-1")
    assert run_id == "run-1"
    assert [c["idempotency_key"] for c in server.creates] == ["key-1"] * 3


def test_busy_past_the_last_delay_is_reported_as_unavailable() -> None:
    server = BusyPrefect(busy=10)
    with pytest.raises(PeerUnavailableError, match="503"):
        _api(server).create_flow_run("flow/dep", {}, idempotency_key="key-2")
    assert len(server.creates) == 4  # the first ask and one per delay


def test_an_unreachable_server_is_reported_without_waiting() -> None:
    calls: list[httpx.Request] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ConnectError("connection refused", request=request)

    api = PrefectApi(
        "http://prefect.test/api",
        busy_retry_delays_s=(60.0,),
        transport=httpx.MockTransport(refuse),
    )
    with pytest.raises(PeerUnavailableError, match="unreachable"):
        api.create_flow_run("flow/dep", {}, idempotency_key="key-3")
    assert len(calls) == 1
