"""Hostile input on the gateway's signed webhook (issue 9, "Hostile input").

More than 1,000 generated requests on keep-alive connections: forged, stale and replayed
signatures, bodies that are not JSON, not a trigger, too deep or too big, unknown and odd
pathways. Every answer must be the status the webhook documents (202/401/404/413/422, never
a 500), every 202 must have its outbox row, and a known-good trigger every few requests
must still be accepted.
"""

from __future__ import annotations

import json
import socket
import time
from collections import Counter

import httpx
import pytest
from hypothesis import HealthCheck, given, settings

from pacsflow.gateway.signing import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    compute_signature,
    sign,
)

from .live import LiveGateway
from .webhook_cases import ALLOWED, MAX_BODY_BYTES, HookCase, Signing, hook_cases

pytestmark = [pytest.mark.reliability]

MIN_REQUESTS = 1_000
GOOD_EVERY = 5


def _headers(case: HookCase, secret: str, window_s: int) -> dict[str, str | bytes]:
    now = int(time.time())
    timestamp = {Signing.STALE: now - window_s - 60, Signing.FUTURE: now + window_s + 60}.get(
        case.signing, now
    )
    body = case.body + b" " if case.signing is Signing.OTHER_BODY else case.body
    key = "not-the-webhook-secret" if case.signing is Signing.WRONG_SECRET else secret
    digest = compute_signature(key, timestamp, body)
    signature = {
        Signing.VALID_UPPER_HEX: "sha256=" + digest.upper(),
        Signing.BAD_SCHEME: digest,
        Signing.SHORT_DIGEST: "sha256=" + digest[:63],
        Signing.NOT_HEX: "sha256=" + "g" * 64,
    }.get(case.signing, "sha256=" + digest)
    headers: dict[str, str | bytes] = {
        "Content-Type": case.content_type.encode("utf-8"),
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature,
    }
    if case.signing is Signing.BAD_TIMESTAMP:
        headers[TIMESTAMP_HEADER] = case.bad_timestamp.encode("utf-8")
    if case.signing is Signing.NO_TIMESTAMP:
        del headers[TIMESTAMP_HEADER]
    if case.signing is Signing.NO_SIGNATURE:
        del headers[SIGNATURE_HEADER]
    return headers


def _remembered(case: HookCase, headers: dict[str, str | bytes]) -> str | None:
    """The signature the webhook remembers after this request (to refuse its replay)."""
    if not (case.signing.authentic and case.checks_signature):
        return None
    return str(headers[SIGNATURE_HEADER]).lower()


def test_webhook_answers_every_hostile_request_with_its_documented_status(
    live_gateway: LiveGateway,
) -> None:
    secret = live_gateway.webhook_secret
    window_s = live_gateway.settings.gateway.webhook_replay_window_s
    seen: Counter[int | str] = Counter()
    remembered: set[str] = set()

    def post(
        client: httpx.Client, case: HookCase, headers: dict[str, str | bytes]
    ) -> httpx.Response:
        response = client.post(case.path, content=case.body, headers=headers)
        assert response.status_code in ALLOWED, (
            f"{case!r}: {response.status_code} {response.text[:300]}"
        )
        if response.status_code != 202:
            assert "detail" in response.json(), f"{case!r}: error body {response.text[:200]}"
        return response

    with live_gateway.http_client() as client:

        @settings(
            max_examples=1_010,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(case=hook_cases())
        def hostile_request(case: HookCase) -> None:
            headers = _headers(case, secret, window_s)
            signature = _remembered(case, headers)
            # The same body in the same second signs the same: the webhook sees a replay.
            expected = frozenset({401}) if signature in remembered else case.expected
            response = post(client, case, headers)
            if signature:
                remembered.add(signature)
            status = response.status_code
            assert status in expected, f"{case!r}: {status}, expected {sorted(expected)}"
            if status == 202:
                key = response.json()["idempotency_key"]
                assert live_gateway.outbox_row_exists(key), f"{case!r}: 202 but no outbox row"
                if case.replay:
                    replayed = post(client, case, headers).status_code
                    assert replayed == 401, f"{case!r}: replay answered {replayed}"
            seen[status] += 1
            seen["hostile"] += 1
            if seen["hostile"] % GOOD_EVERY == 0:
                live_gateway.post_good_webhook(client)

        hostile_request()
    assert seen["hostile"] >= MIN_REQUESTS, seen
    assert all(seen[status] > 0 for status in ALLOWED), seen
    live_gateway.assert_alive()


def _raw_http(live: LiveGateway, request: bytes) -> bytes:
    """Write bytes to the HTTP port; the status line and headers that come back, or what came
    before the server closed (a server that neither answers nor closes times out: a failure)."""
    port = live.settings.gateway.http_port
    with socket.create_connection((live.host, port), timeout=15) as sock:
        sock.sendall(request)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
                if b"\r\n\r\n" in answer:  # the status line and headers are enough
                    break
        except ConnectionResetError:
            pass
        return answer


def test_webhook_refuses_oversize_bodies_however_framed_and_survives_non_http(
    live_gateway: LiveGateway,
) -> None:
    """413 for a body past 64 KiB whether it is declared up front (and never sent) or
    streamed chunked; bytes that are not HTTP get 400 or a close, and nothing else."""
    live = live_gateway
    body = json.dumps({"study_uid": "1.2.3", "pathway": "stroke_triage"}).encode()
    body += b" " * (MAX_BODY_BYTES + 1 - len(body))
    headers = {
        "Content-Type": "application/json",
        **sign(live.webhook_secret, int(time.time()), body),
    }
    with live.http_client() as client:
        chunks = (body[i : i + 8192] for i in range(0, len(body), 8192))
        assert client.post("/hooks/studies", content=chunks, headers=headers).status_code == 413

    declared_only = (
        b"POST /hooks/studies HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        b'Content-Length: 70000\r\n\r\n{"study_uid"'
    )
    assert _raw_http(live, declared_only).startswith(b"HTTP/1.1 413 ")
    for garbage in (
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(32),
        b"\x0bMSH|^~\\&|\r\x1c\r",
    ):
        answer = _raw_http(live, garbage)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 400 "), answer[:80]
    live.assert_alive()
