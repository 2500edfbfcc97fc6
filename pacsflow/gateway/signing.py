"""Signed webhooks: HMAC-SHA256 over the timestamp and the raw body, with replay protection.

A sender computes

    signature = hex(HMAC-SHA256(secret, f"{timestamp}.".encode() + raw_body))

and sends the headers `X-Pacsflow-Timestamp: <unix seconds>` and
`X-Pacsflow-Signature: sha256=<signature>`. The receiver verifies the bytes it received,
before any JSON parsing, so a re-serialised body can never pass.

A request is refused when a header is missing or malformed, when the timestamp is further
than the replay window from the receiver's clock (either direction, to absorb clock skew),
when the signature does not match (compared in constant time), or when the same signature
was already accepted within the window. The replay memory is in-process and bounded
(`ReplayCache`): it does not survive a restart and is not shared between gateway replicas.
That is acceptable because it is a second line: a replayed trigger maps to the same outbox
idempotency key and creates nothing new.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

from pydantic import SecretStr

from pacsflow.errors import PermanentError

log = logging.getLogger(__name__)

TIMESTAMP_HEADER = "X-Pacsflow-Timestamp"
SIGNATURE_HEADER = "X-Pacsflow-Signature"
SCHEME = "sha256="
_HEX_DIGEST_LENGTH = 64


class SignatureRejected(PermanentError):
    """The request is not authentic or not fresh; the message says why (HTTP 401)."""


def _secret_bytes(secret: str | bytes | SecretStr) -> bytes:
    if isinstance(secret, SecretStr):
        secret = secret.get_secret_value()
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def compute_signature(secret: str | bytes | SecretStr, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of f"{timestamp}." followed by the raw body."""
    message = f"{timestamp}.".encode("ascii") + body
    return hmac.new(_secret_bytes(secret), message, hashlib.sha256).hexdigest()


def sign(secret: str | bytes | SecretStr, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers a client sends with `body` (for clients and tests)."""
    return {
        TIMESTAMP_HEADER: str(int(timestamp)),
        SIGNATURE_HEADER: SCHEME + compute_signature(secret, int(timestamp), body),
    }


class ReplayCache:
    """Signatures accepted recently, each kept until its timestamp leaves the window.

    Bounded: when full of unexpired entries the oldest is dropped (and a warning logged), so
    memory stays fixed under any load; the outbox idempotency key still makes a replay of a
    dropped entry a no-op.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._expiry: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._expiry)

    def add_if_new(self, signature: str, expires_at: float, now: float) -> bool:
        """Remember the signature; False when it is already remembered (a replay).
        Check and insert are one atomic step, so two concurrent copies cannot both pass."""
        with self._lock:
            self._purge(now)
            if signature in self._expiry:
                return False
            if len(self._expiry) >= self.max_entries:
                self._expiry.popitem(last=False)
                log.warning("webhook replay cache full (%d): dropped oldest", self.max_entries)
            self._expiry[signature] = expires_at
            return True

    def forget(self, signature: str) -> None:
        """Drop a signature whose request was not recorded after all (server-side failure),
        so the sender's retry of the very same request is not refused as a replay."""
        with self._lock:
            self._expiry.pop(signature, None)

    def _purge(self, now: float) -> None:
        # Insertion order is close to expiry order (timestamps within one window), so stop at
        # the first live entry; a few stragglers are dropped on a later purge.
        while self._expiry:
            signature, expires_at = next(iter(self._expiry.items()))
            if expires_at >= now:
                break
            del self._expiry[signature]


def _header(headers: Mapping[str, str], name: str) -> str:
    # Starlette's Headers and httpx's are case-insensitive; a plain dict may not be.
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name.lower()), None)
    if value is None or not value.strip():
        raise SignatureRejected(f"missing {name} header")
    return value.strip()


class SignatureVerifier:
    """Checks a request's signature headers against its raw body."""

    def __init__(
        self,
        secret: str | bytes | SecretStr,
        window_s: int,
        *,
        cache: ReplayCache | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if window_s <= 0:
            raise ValueError("the replay window must be positive")
        if not _secret_bytes(secret):
            raise ValueError("the webhook secret must not be empty")
        self._secret = _secret_bytes(secret)
        self.window_s = window_s
        self.cache = cache if cache is not None else ReplayCache()
        self.clock = clock

    def verify(self, headers: Mapping[str, str], body: bytes) -> str:
        """Return the accepted signature when the request is authentic, fresh and new; else
        raise SignatureRejected with the reason."""
        raw_timestamp = _header(headers, TIMESTAMP_HEADER)
        raw_signature = _header(headers, SIGNATURE_HEADER)
        if not raw_timestamp.isascii() or not raw_timestamp.isdigit():
            raise SignatureRejected(f"{TIMESTAMP_HEADER} must be unix seconds (digits only)")
        timestamp = int(raw_timestamp)
        now = self.clock()
        if abs(now - timestamp) > self.window_s:
            raise SignatureRejected(
                f"stale timestamp: {TIMESTAMP_HEADER} is {int(now - timestamp)} s from the "
                f"gateway's clock (window {self.window_s} s)"
            )
        if not raw_signature.startswith(SCHEME):
            raise SignatureRejected(f"{SIGNATURE_HEADER} must be 'sha256=<hex digest>'")
        given = raw_signature.removeprefix(SCHEME).lower()
        if len(given) != _HEX_DIGEST_LENGTH or not given.isascii():
            raise SignatureRejected(f"{SIGNATURE_HEADER} must carry a 64-digit hex digest")
        expected = compute_signature(self._secret, timestamp, body)
        if not hmac.compare_digest(given.encode("ascii"), expected.encode("ascii")):
            raise SignatureRejected("signature does not match the body and timestamp")
        # Only authentic requests enter the cache, so forged ones cannot evict real entries.
        if not self.cache.add_if_new(expected, timestamp + self.window_s, now):
            raise SignatureRejected("replayed request: this signature was already accepted")
        return expected
