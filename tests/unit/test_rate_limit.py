"""The token bucket and its client keys, on an injected clock (no sleeps)."""

from __future__ import annotations

import threading

import pytest

from pacsflow.config import load_settings
from pacsflow.errors import ConfigError
from pacsflow.gateway.rate_limit import (
    RateLimiter,
    api_client_key,
    ip_client_key,
    too_many_requests,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_new_client_gets_the_burst_then_is_refused() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=60, burst=3, clock=clock)
    decisions = [limiter.check("ip:a") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions[:3]] == [2, 1, 0]
    assert decisions[3].retry_after_s == pytest.approx(1.0)  # 1 token a second


def test_tokens_refill_at_the_configured_rate_and_never_beyond_the_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=120, burst=2, clock=clock)  # 2 tokens a second
    assert limiter.check("k").allowed and limiter.check("k").allowed
    assert not limiter.check("k").allowed
    clock.now += 0.25  # half a token
    refused = limiter.check("k")
    assert not refused.allowed and refused.retry_after_s == pytest.approx(0.25)
    clock.now += 0.25
    assert limiter.check("k").allowed
    assert not limiter.check("k").allowed
    clock.now += 3600  # a long pause refills to the burst, not more
    assert [limiter.check("k").allowed for _ in range(3)] == [True, True, False]


def test_clients_have_separate_buckets() -> None:
    limiter = RateLimiter(per_minute=60, burst=1, clock=FakeClock())
    assert limiter.check("ip:a").allowed
    assert not limiter.check("ip:a").allowed
    assert limiter.check("ip:b").allowed
    assert limiter.check("token:x").allowed


def test_a_clock_stepping_back_adds_no_tokens() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=60, burst=1, clock=clock)
    assert limiter.check("k").allowed
    clock.now -= 100
    assert not limiter.check("k").allowed
    clock.now += 100  # back where it was: still no time has passed since the last take
    assert not limiter.check("k").allowed
    clock.now += 1
    assert limiter.check("k").allowed


def test_concurrent_takes_never_exceed_the_burst() -> None:
    limiter = RateLimiter(per_minute=1, burst=500, clock=FakeClock())
    allowed: list[bool] = []
    lock = threading.Lock()

    def hammer() -> None:
        for _ in range(100):
            ok = limiter.check("shared").allowed
            with lock:
                allowed.append(ok)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (allowed.count(True), allowed.count(False)) == (500, 300)


def test_full_buckets_are_pruned_when_the_table_is_full() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=60, burst=2, clock=clock, max_clients=10)
    for i in range(10):
        limiter.check(f"ip:{i}")
    assert limiter.clients() == 10
    clock.now += 10  # every bucket has refilled: nothing worth keeping
    limiter.check("ip:new")
    assert limiter.clients() == 1


def test_a_flood_of_distinct_keys_keeps_the_table_bounded() -> None:
    limiter = RateLimiter(per_minute=60, burst=2, clock=FakeClock(), max_clients=100)
    for i in range(1000):
        limiter.check(f"token:{i}")
    assert limiter.clients() <= 100


@pytest.mark.parametrize(("per_minute", "burst"), [(0, 1), (-5, 1), (60, 0)])
def test_nonsense_limits_are_refused(per_minute: float, burst: int) -> None:
    with pytest.raises(ConfigError, match="rate limit"):
        RateLimiter(per_minute=per_minute, burst=burst)


def test_429_reason_and_retry_after_round_up_to_whole_seconds() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=24, burst=1, clock=clock)  # a token every 2.5 s
    limiter.check("k")
    body, retry_after = too_many_requests(limiter, limiter.check("k"))
    assert retry_after == "3"
    assert b"at most 24 requests per minute" in body and b"retry after 3 s" in body


def _scope(client: tuple[str, int] | None, **headers: str) -> dict[str, object]:
    return {
        "type": "http",
        "client": client,
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }


def test_api_key_is_the_hashed_bearer_token_else_the_address() -> None:
    with_token = api_client_key(_scope(("10.0.0.7", 5000), Authorization="Bearer s3cr3t-token"))
    assert with_token.startswith("token:") and "s3cr3t" not in with_token
    same = api_client_key(_scope(("10.0.0.8", 6000), Authorization="bearer s3cr3t-token"))
    assert same == with_token  # the same token from elsewhere is the same client
    assert api_client_key(_scope(("10.0.0.7", 5000))) == "ip:10.0.0.7"
    assert api_client_key(_scope(("10.0.0.7", 5000), Authorization="Basic abc")) == "ip:10.0.0.7"
    assert api_client_key(_scope(None)) == "ip:unknown"


def test_webhook_key_ignores_authorization_headers() -> None:
    # The webhook has no per-client credential: a header must not buy a fresh bucket.
    scope = _scope(("10.0.0.7", 5000), Authorization="Bearer anything")
    assert ip_client_key(scope) == "ip:10.0.0.7"


def test_settings_defaults_and_overrides() -> None:
    defaults = load_settings().rate_limit
    assert defaults.enabled and defaults.burst >= 1000  # the hostile-input fuzz sends 1,000+
    tuned = load_settings(rate_limit={"webhook_per_minute": 30, "api_per_minute": 90, "burst": 5})
    assert (tuned.rate_limit.webhook_per_minute, tuned.rate_limit.api_per_minute) == (30, 90)
    with pytest.raises(ConfigError):
        load_settings(rate_limit={"burst": 0})
