"""FHIR R4 REST client: post a transaction Bundle to the EHR's base URL (FHIR R4 3.1.0.11).

Errors are mapped by what the caller should do: connection failures, timeouts, 429 and 5xx
are PeerUnavailableError (retry later); any other 4xx is InvalidInputError carrying the
OperationOutcome's diagnostics (retrying the same Bundle will not help).
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from pacsflow.errors import InvalidInputError, PeerUnavailableError

FHIR_JSON = "application/fhir+json"


def post_bundle(
    base_url: str,
    bundle: dict[str, Any],
    *,
    timeout_s: float,
    client: httpx.Client | None = None,
) -> dict[str, Any]:
    """POST ``bundle`` to ``base_url`` and return the response Bundle as a dict.

    ``client`` (for connection reuse, TLS and authentication settings) is used as given and
    left open; without it a client is made for this call.
    """
    url = base_url.rstrip("/") or base_url
    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
    body = json.dumps(bundle).encode()
    try:
        if client is None:
            with httpx.Client(timeout=timeout_s) as own:
                response = own.post(url, content=body, headers=headers)
        else:
            response = client.post(url, content=body, headers=headers, timeout=timeout_s)
    except httpx.TimeoutException as exc:
        raise PeerUnavailableError(f"FHIR server {url} did not answer in {timeout_s} s") from exc
    except httpx.TransportError as exc:
        raise PeerUnavailableError(f"FHIR server {url} unreachable: {exc}") from exc

    status = response.status_code
    if status >= 500 or status == 429:
        raise PeerUnavailableError(
            f"FHIR server {url} answered {status}: {_outcome_text(response)}"
        )
    if status >= 400:
        raise InvalidInputError(
            f"FHIR server {url} refused the Bundle ({status}): {_outcome_text(response)}"
        )
    try:
        answer = response.json()
    except ValueError:
        raise InvalidInputError(
            f"FHIR server {url} answered {status} without a JSON body"
        ) from None
    if not isinstance(answer, dict) or answer.get("resourceType") != "Bundle":
        raise InvalidInputError(f"FHIR server {url} answered {status} without a Bundle")
    return answer


def _outcome_text(response: httpx.Response) -> str:
    """The diagnostics of an OperationOutcome, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        texts = [
            issue.get("diagnostics") or (issue.get("details") or {}).get("text") or ""
            for issue in body.get("issue", [])
        ]
        joined = "; ".join(t for t in texts if t)
        if joined:
            return joined
    return json.dumps(body)[:300]
