"""A small client of the Prefect server's REST API: create flow runs, emit events."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from pacsflow.errors import InvalidInputError, PeerUnavailableError

# The server answers 503 when its database is busy (SQLite's lock, a dropped PostgreSQL
# connection) and expects the client to ask again, as Prefect's own client does.
RETRYABLE_STATUSES = frozenset({429, 502, 503})
BUSY_RETRY_DELAYS_S = (0.25, 0.5, 1.0, 2.0, 4.0)


class PrefectApi:
    """Create flow runs of named deployments with an idempotency key (same key, same run).

    A busy server (429/502/503) is asked again after `busy_retry_delays_s`; an unreachable
    one is not, so callers with a queue of their own (the gateway's outbox) hear at once."""

    def __init__(
        self,
        api_url: str,
        *,
        timeout_s: float = 10.0,
        busy_retry_delays_s: Sequence[float] = BUSY_RETRY_DELAYS_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._client = httpx.Client(base_url=self.api_url, timeout=timeout_s, transport=transport)
        self._busy_retry_delays_s = tuple(busy_retry_delays_s)
        self._deployment_ids: dict[str, str] = {}

    def close(self) -> None:
        self._client.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Every call here is safe to repeat: reads, runs created under an idempotency
        key, events with their own id."""
        for delay in (*self._busy_retry_delays_s, None):
            try:
                response = self._client.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                raise PeerUnavailableError(
                    f"Prefect API unreachable ({self.api_url}): {exc}"
                ) from exc
            if response.status_code not in RETRYABLE_STATUSES or delay is None:
                break
            time.sleep(_retry_after_s(response, delay))
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise PeerUnavailableError(f"Prefect API answered {response.status_code} on {path}")
        return response

    @staticmethod
    def _ok(response: httpx.Response, what: str) -> httpx.Response:
        """4xx other than the ones handled by the caller: the request itself is wrong."""
        if response.status_code >= 400:
            raise InvalidInputError(
                f"Prefect refused {what}: {response.status_code} {response.text}"
            )
        return response

    def healthy(self) -> bool:
        try:
            return self._request("GET", "/health").status_code == 200
        except PeerUnavailableError:
            return False

    def deployment_id(self, deployment: str) -> str:
        """Resolve 'flow-name/deployment-name' to its id (cached)."""
        if deployment in self._deployment_ids:
            return self._deployment_ids[deployment]
        flow_name, _, name = deployment.partition("/")
        if not name:
            raise InvalidInputError(f"deployment must be 'flow/deployment', got {deployment!r}")
        response = self._request("GET", f"/deployments/name/{flow_name}/{name}")
        if response.status_code == 404:
            # Not deployed yet (the runner may still be starting): worth retrying.
            raise PeerUnavailableError(f"deployment {deployment!r} is not registered yet")
        self._ok(response, f"deployment lookup {deployment}")
        self._deployment_ids[deployment] = str(response.json()["id"])
        return self._deployment_ids[deployment]

    def create_flow_run(
        self,
        deployment: str,
        parameters: dict[str, Any],
        *,
        idempotency_key: str,
        name: str | None = None,
        tags: list[str] | None = None,
    ) -> str:
        """Create (or find, for a known key) a flow run; returns its id without waiting."""
        dep_id = self.deployment_id(deployment)
        body: dict[str, Any] = {
            "parameters": parameters,
            "idempotency_key": idempotency_key,
            "tags": tags or [],
        }
        if name:
            body["name"] = name
        response = self._request("POST", f"/deployments/{dep_id}/create_flow_run", json=body)
        if response.status_code == 404:
            self._deployment_ids.pop(deployment, None)
            raise PeerUnavailableError(f"deployment {deployment!r} disappeared")
        if response.status_code >= 400:
            raise InvalidInputError(
                f"Prefect refused a run of {deployment}: {response.status_code} {response.text}"
            )
        return str(response.json()["id"])

    def emit_event(
        self, event: str, resource_id: str, payload: dict[str, Any], **labels: str
    ) -> None:
        """Record an event (operators see arrivals in the UI; triggers may react)."""
        body = [
            {
                "id": str(uuid.uuid4()),
                "occurred": datetime.now(UTC).isoformat(),
                "event": event,
                "resource": {"prefect.resource.id": resource_id, **labels},
                "related": [],
                "payload": payload,
            }
        ]
        response = self._request("POST", "/events", json=body)
        if response.status_code >= 400:
            raise InvalidInputError(f"Prefect refused event {event}: {response.text}")

    def flow_run(self, flow_run_id: str) -> dict[str, Any]:
        response = self._ok(self._request("GET", f"/flow_runs/{flow_run_id}"), "flow run read")
        return dict(response.json())

    def flow_runs_of(self, deployment: str, limit: int = 200) -> list[dict[str, Any]]:
        dep_id = self.deployment_id(deployment)
        body = {"deployments": {"id": {"any_": [dep_id]}}, "limit": limit}
        response = self._ok(self._request("POST", "/flow_runs/filter", json=body), "run filter")
        return list(response.json())


def _retry_after_s(response: httpx.Response, default_s: float) -> float:
    """The server's Retry-After in seconds when it gives one (capped at 30 s), else
    `default_s`."""
    try:
        return min(30.0, max(0.0, float(response.headers.get("retry-after", default_s))))
    except ValueError:  # an HTTP date: not worth parsing for a busy database
        return default_s
