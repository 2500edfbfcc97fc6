"""Webhook signatures: HMAC-SHA256 over timestamp + raw body, freshness, replays."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from pydantic import SecretStr

from pacsflow.gateway.signing import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    ReplayCache,
    SignatureRejected,
    SignatureVerifier,
    compute_signature,
    sign,
)

SECRET = "a-long-webhook-secret"
BODY = b'{"study_uid": "1.2.3"}'
NOW = 1_800_000_000


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def verifier(
    clock: Clock, window_s: int = 300, cache: ReplayCache | None = None
) -> SignatureVerifier:
    return SignatureVerifier(SecretStr(SECRET), window_s, cache=cache, clock=clock)


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert compute_signature(SECRET, NOW, BODY) == expected
    assert sign(SECRET, NOW, BODY) == {
        TIMESTAMP_HEADER: str(NOW),
        SIGNATURE_HEADER: f"sha256={expected}",
    }


def test_good_signature_passes_and_header_names_are_case_insensitive() -> None:
    check = verifier(Clock(NOW + 10))
    headers = {k.lower(): v for k, v in sign(SECRET, NOW, BODY).items()}
    assert check.verify(headers, BODY) == compute_signature(SECRET, NOW, BODY)


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        (sign("another-secret", NOW, BODY), BODY, "signature does not match"),
        (sign(SECRET, NOW, BODY), BODY + b" ", "signature does not match"),
        (sign(SECRET, NOW - 1, BODY) | {TIMESTAMP_HEADER: str(NOW)}, BODY, "does not match"),
        ({TIMESTAMP_HEADER: str(NOW)}, BODY, f"missing {SIGNATURE_HEADER}"),
        ({SIGNATURE_HEADER: "sha256=" + "0" * 64}, BODY, f"missing {TIMESTAMP_HEADER}"),
        (sign(SECRET, NOW, BODY) | {TIMESTAMP_HEADER: "1.8e9"}, BODY, "unix seconds"),
        (sign(SECRET, NOW, BODY) | {SIGNATURE_HEADER: "md5=abc"}, BODY, "sha256=<hex"),
        (sign(SECRET, NOW, BODY) | {SIGNATURE_HEADER: "sha256=abc"}, BODY, "64-digit hex"),
    ],
)
def test_bad_signatures_are_rejected_with_a_reason(
    headers: dict[str, str], body: bytes, reason: str
) -> None:
    with pytest.raises(SignatureRejected, match=reason):
        verifier(Clock(NOW)).verify(headers, body)


def test_stale_and_future_timestamps_are_rejected_at_the_window_edge() -> None:
    check = verifier(Clock(NOW), window_s=300)
    with pytest.raises(SignatureRejected, match="stale timestamp"):
        check.verify(sign(SECRET, NOW - 301, BODY), BODY)
    with pytest.raises(SignatureRejected, match="stale timestamp"):
        check.verify(sign(SECRET, NOW + 301, BODY), BODY)
    check.verify(sign(SECRET, NOW - 300, BODY), BODY)
    check.verify(sign(SECRET, NOW + 300, BODY), BODY)


def test_a_replay_within_the_window_is_rejected() -> None:
    clock = Clock(NOW)
    check = verifier(clock)
    headers = sign(SECRET, NOW, BODY)
    check.verify(headers, BODY)
    clock.now = NOW + 300  # last second of the window: still remembered
    with pytest.raises(SignatureRejected, match="replayed request"):
        check.verify(headers, BODY)
    clock.now = NOW + 301  # after the window the timestamp itself is stale
    with pytest.raises(SignatureRejected, match="stale timestamp"):
        check.verify(headers, BODY)
    # the same body signed anew is a new request
    check.verify(sign(SECRET, NOW + 301, BODY), BODY)


def test_forged_requests_do_not_enter_the_replay_cache() -> None:
    cache = ReplayCache()
    check = verifier(Clock(NOW), cache=cache)
    with pytest.raises(SignatureRejected):
        check.verify(sign("forged", NOW, BODY), BODY)
    assert len(cache) == 0


def test_replay_cache_is_bounded_and_expires_entries() -> None:
    cache = ReplayCache(max_entries=2)
    assert cache.add_if_new("a", expires_at=100, now=0)
    assert cache.add_if_new("b", expires_at=200, now=0)
    assert not cache.add_if_new("a", expires_at=100, now=50)
    assert cache.add_if_new("c", expires_at=300, now=50)  # full: drops the oldest ("a")
    assert len(cache) == 2
    assert cache.add_if_new("a", expires_at=400, now=50)
    assert cache.add_if_new("d", expires_at=500, now=350)  # "c" expired: no eviction needed
    assert not cache.add_if_new("a", expires_at=400, now=350)
    assert len(cache) == 2
    cache.forget("d")
    assert cache.add_if_new("d", expires_at=500, now=350)


def test_verifier_refuses_an_empty_secret_or_window() -> None:
    with pytest.raises(ValueError, match="secret"):
        SignatureVerifier("", 300)
    with pytest.raises(ValueError, match="window"):
        SignatureVerifier(SECRET, 0)
