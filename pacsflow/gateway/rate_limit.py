"""Token-bucket rate limits for the HTTP listeners (webhook /hooks/..., web API /api/...).

    limiter = RateLimiter(per_minute=600, burst=50)
    decision = limiter.check("ip:10.0.0.7")  # .allowed, .retry_after_s

    app.add_middleware(RateLimitMiddleware, limiter=limiter, prefixes=("/api/",),
                       client_key=api_client_key)

Each client has a bucket of `burst` tokens that refills at `per_minute / 60` tokens a second;
a request takes one token, and a request finding the bucket empty is answered 429 with a
Retry-After header (RFC 6585 section 4, RFC 9110 section 10.2.3) and a JSON reason.

The buckets live in this process's memory: with several gateway processes each enforces its
own limit, so a client may get up to N times the configured rate across N processes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from pacsflow.config.settings import RateLimitSettings
from pacsflow.errors import ConfigError

log = logging.getLogger(__name__)

Clock = Callable[[], float]
ClientKey = Callable[[Scope], str]

# Buckets kept at most; past this, buckets that have refilled completely are dropped first
# (a full bucket carries no state a new one would not have).
DEFAULT_MAX_CLIENTS = 10_000


@dataclass(frozen=True)
class Decision:
    """The answer for one request: allowed, or refused with the seconds until a token."""

    allowed: bool
    remaining: int
    retry_after_s: float = 0.0


@dataclass
class TokenBucket:
    """One client's bucket. Not locked by itself: `RateLimiter` serialises access."""

    capacity: float
    rate_per_s: float
    tokens: float
    updated: float

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)  # a clock that steps back never adds tokens
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate_per_s)
        self.updated = max(self.updated, now)

    def take(self, now: float) -> Decision:
        self.refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return Decision(True, int(self.tokens))
        return Decision(False, 0, (1.0 - self.tokens) / self.rate_per_s)

    def full(self, now: float) -> bool:
        self.refill(now)
        return self.tokens >= self.capacity


class RateLimiter:
    """Token buckets by client key, thread-safe, in this process's memory only."""

    def __init__(
        self,
        per_minute: float,
        burst: int,
        *,
        clock: Clock = time.monotonic,
        max_clients: int = DEFAULT_MAX_CLIENTS,
    ) -> None:
        if per_minute <= 0:
            raise ConfigError(f"rate limit per_minute must be > 0, got {per_minute}")
        if burst < 1:
            raise ConfigError(f"rate limit burst must be >= 1, got {burst}")
        self.per_minute = per_minute
        self.burst = burst
        self._rate_per_s = per_minute / 60.0
        self._clock = clock
        self._max_clients = max_clients
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> Decision:
        """Take one token from `key`'s bucket (a new client starts with a full bucket)."""
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self._max_clients:
                    self._prune(now)
                bucket = TokenBucket(self.burst, self._rate_per_s, float(self.burst), now)
                self._buckets[key] = bucket
            return bucket.take(now)

    def clients(self) -> int:
        with self._lock:
            return len(self._buckets)

    def _prune(self, now: float) -> None:
        for key in [k for k, b in self._buckets.items() if b.full(now)]:
            del self._buckets[key]
        # Still too many (a flood of distinct keys): drop the least recently used half.
        if len(self._buckets) >= self._max_clients:
            by_age = sorted(self._buckets, key=lambda k: self._buckets[k].updated)
            for key in by_age[: len(by_age) // 2]:
                del self._buckets[key]


# --- client keys -------------------------------------------------------------------------


def client_ip(scope: Scope) -> str:
    """The peer address of the connection. X-Forwarded-For is not trusted: behind a proxy,
    run uvicorn with --proxy-headers so that the proxy's view becomes scope["client"]."""
    client = scope.get("client")
    return f"ip:{client[0]}" if client else "ip:unknown"


def ip_client_key(scope: Scope) -> str:
    """The webhook's key: its callers share one secret, so the address is the client."""
    return client_ip(scope)


def api_client_key(scope: Scope) -> str:
    """The API's key: the bearer token (session, OIDC or API token) when one is sent, else
    the address. The token is hashed, never kept. It is not verified here (that costs a
    database look-up): an invalid token gets its own bucket and then a 401 from the app."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            if scheme.lower() == "bearer" and token:
                digest = hashlib.sha256(token.encode("utf-8")).hexdigest()[:24]
                return f"token:{digest}"
    return client_ip(scope)


# --- ASGI middleware ---------------------------------------------------------------------


def _path(scope: Scope) -> str:
    """The path inside the app, also when the app is mounted under a prefix."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def too_many_requests(limiter: RateLimiter, decision: Decision) -> tuple[bytes, str]:
    """(JSON body, Retry-After seconds) of a 429 answer."""
    retry_after = max(1, math.ceil(decision.retry_after_s))
    reason = (
        f"rate limit exceeded: at most {limiter.per_minute:g} requests per minute "
        f"(bursts of {limiter.burst}) per client; retry after {retry_after} s"
    )
    return json.dumps({"detail": reason}).encode("utf-8"), str(retry_after)


class RateLimitMiddleware:
    """Answers 429 for requests under `prefixes` whose client is past the limit; every
    other path (/health above all) passes untouched."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: RateLimiter,
        prefixes: Sequence[str],
        client_key: ClientKey = ip_client_key,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.prefixes = tuple(prefixes)
        self.client_key = client_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _path(scope).startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        key = self.client_key(scope)
        decision = self.limiter.check(key)
        if decision.allowed:
            await self.app(scope, receive, send)
            return
        body, retry_after = too_many_requests(self.limiter, decision)
        log.warning(
            "rate limit: %s refused on %s, retry after %s s", key, _path(scope), retry_after
        )
        await send(
            {
                "type": "http.response.start",
                "status": 429,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode("ascii")),
                    (b"retry-after", retry_after.encode("ascii")),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def add_rate_limit(
    app: Starlette,
    settings: RateLimitSettings,
    per_minute: float,
    prefixes: Sequence[str],
    client_key: ClientKey,
    limiter: RateLimiter | None = None,
) -> RateLimiter | None:
    """Install the middleware on `app` (an explicit `limiter` is used even when the settings
    disable limits: tests inject one with their own clock). Returns the limiter in use."""
    if limiter is None:
        if not settings.enabled:
            return None
        limiter = RateLimiter(per_minute, settings.burst)
    app.add_middleware(
        RateLimitMiddleware, limiter=limiter, prefixes=prefixes, client_key=client_key
    )
    return limiter
