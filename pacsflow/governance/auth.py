"""Authentication: signed session tokens, OIDC bearer tokens, service-account API tokens.

Three kinds of bearer credential, told apart before any is trusted:

- `pfs_...`                 an API token of a service account (users.py);
- a JWT with alg HS256      a pacsflow session token (RFC 7519, signed with the site's secret,
                            expiring), issued at login;
- a JWT with another alg    an OIDC access/ID token of the site's identity provider, verified
                            against its JWKS (RFC 7517) with the configured issuer and audience.

Each path verifies with its own fixed algorithm list, so a token cannot pick its own key
(no alg confusion). Session tokens only prove identity: role and departments are read
from the user table on every request, so disabling a user ends their sessions at once.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from pacsflow.errors import ConfigError
from pacsflow.governance.rbac import AccessDenied, AuthenticationError, Principal, Role
from pacsflow.governance.users import API_TOKEN_PREFIX, UserStore

SESSION_ALGORITHM = "HS256"
SESSION_AUDIENCE = "pacsflow-web"
MIN_SECRET_LENGTH = 32
# Asymmetric algorithms only: an IdP's JWKS never holds a shared secret for pacsflow.
OIDC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384")


@dataclass(frozen=True)
class OIDCConfig:
    """The site's identity provider. Give its JWKS as a dict (tests, pinned keys) or a URL."""

    issuer: str
    audience: str
    jwks: Mapping[str, Any] | None = None
    jwks_url: str | None = None
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    username_claim: str = "preferred_username"
    role_claim: str = "roles"
    departments_claim: str = "departments"
    leeway_s: int = 30

    def __post_init__(self) -> None:
        if (self.jwks is None) == (self.jwks_url is None):
            raise ConfigError("OIDC: give exactly one of jwks (a JWKS dict) or jwks_url")
        bad = set(self.algorithms) - set(OIDC_ALGORITHMS)
        if bad:
            raise ConfigError(f"OIDC: algorithms {sorted(bad)} are not allowed")


@dataclass(frozen=True)
class AuthConfig:
    secret_key: str = field(repr=False)
    session_ttl_s: int = 8 * 3600
    issuer: str = "pacsflow"
    oidc: OIDCConfig | None = None

    def __post_init__(self) -> None:
        if len(self.secret_key) < MIN_SECRET_LENGTH:
            raise ConfigError(
                f"the session secret must have at least {MIN_SECRET_LENGTH} characters"
            )

    @classmethod
    def ephemeral(cls, **kwargs: Any) -> AuthConfig:
        """A random secret for this process only (development: sessions end on restart)."""
        return cls(secret_key=secrets.token_urlsafe(48), **kwargs)


@dataclass(frozen=True)
class SessionToken:
    token: str
    expires_at: datetime


class SessionTokens:
    """Signed, expiring session tokens (JWT HS256)."""

    def __init__(self, config: AuthConfig) -> None:
        self.config = config

    def issue(self, username: str, now: datetime | None = None) -> SessionToken:
        now = now or datetime.now(UTC)
        expires = now + timedelta(seconds=self.config.session_ttl_s)
        claims = {
            "iss": self.config.issuer,
            "aud": SESSION_AUDIENCE,
            "sub": username,
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "jti": secrets.token_urlsafe(12),
        }
        token = jwt.encode(claims, self.config.secret_key, algorithm=SESSION_ALGORITHM)
        return SessionToken(token=token, expires_at=expires)

    def verify(self, token: str) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                self.config.secret_key,
                algorithms=[SESSION_ALGORITHM],
                audience=SESSION_AUDIENCE,
                issuer=self.config.issuer,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("session expired; sign in again") from None
        except jwt.InvalidTokenError as exc:
            raise AuthenticationError(f"invalid session token: {exc}") from None


class OIDCVerifier:
    """Validates the IdP's JWTs: signature (JWKS), issuer, audience, expiry."""

    def __init__(self, config: OIDCConfig) -> None:
        self.config = config
        self._keys = jwt.PyJWKSet.from_dict(dict(config.jwks)) if config.jwks else None
        self._client = jwt.PyJWKClient(config.jwks_url) if config.jwks_url else None

    def _signing_key(self, token: str) -> Any:
        if self._client is not None:
            try:
                return self._client.get_signing_key_from_jwt(token).key
            except jwt.PyJWKClientError as exc:
                raise AuthenticationError(f"OIDC: no usable signing key: {exc}") from None
        assert self._keys is not None
        kid = jwt.get_unverified_header(token).get("kid")
        if kid is None:
            if len(self._keys.keys) != 1:
                raise AuthenticationError("OIDC: token has no kid and the JWKS has many keys")
            return self._keys.keys[0].key
        try:
            return self._keys[kid].key
        except KeyError:
            raise AuthenticationError(f"OIDC: no key {kid!r} in the JWKS") from None

    def claims(self, token: str) -> dict[str, Any]:
        try:
            key = self._signing_key(token)
            return jwt.decode(
                token,
                key,
                algorithms=list(self.config.algorithms),
                audience=self.config.audience,
                issuer=self.config.issuer,
                leeway=self.config.leeway_s,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("OIDC token expired") from None
        except jwt.InvalidTokenError as exc:
            raise AuthenticationError(f"OIDC token refused: {exc}") from None

    def principal(self, token: str) -> Principal:
        claims = self.claims(token)
        return principal_from_claims(claims, self.config)


def principal_from_claims(claims: Mapping[str, Any], config: OIDCConfig) -> Principal:
    """Map verified OIDC claims onto a pacsflow principal (first recognised role wins)."""
    username = claims.get(config.username_claim) or claims["sub"]
    raw_roles = claims.get(config.role_claim, [])
    if isinstance(raw_roles, str):
        raw_roles = [raw_roles]
    known = {r.value for r in Role}
    roles = [Role(r) for r in raw_roles if isinstance(r, str) and r in known]
    if not roles:
        raise AccessDenied(f"OIDC token of {username!r} carries no pacsflow role")
    raw_depts = claims.get(config.departments_claim, [])
    if isinstance(raw_depts, str):
        raw_depts = [raw_depts]
    departments = frozenset(d for d in raw_depts if isinstance(d, str))
    return Principal(str(username), roles[0], departments, "oidc")


class Authenticator:
    """Turns a password or a bearer credential into a Principal, or refuses."""

    def __init__(self, config: AuthConfig, users: UserStore) -> None:
        self.config = config
        self.users = users
        self.sessions = SessionTokens(config)
        self.oidc = OIDCVerifier(config.oidc) if config.oidc else None

    def login(self, username: str, password: str) -> tuple[Principal, SessionToken]:
        user = self.users.verify_password(username, password)
        return user.principal("password"), self.sessions.issue(user.username)

    def authenticate(self, credential: str) -> Principal:
        """A bearer credential of any kind: API token, session token or OIDC token."""
        if credential.startswith(API_TOKEN_PREFIX):
            return self.users.authenticate_api_token(credential).principal("api_token")
        try:
            header = jwt.get_unverified_header(credential)
        except jwt.InvalidTokenError:
            raise AuthenticationError("malformed bearer token") from None
        if header.get("alg") == SESSION_ALGORITHM:
            return self.authenticate_session(credential)
        if self.oidc is None:
            raise AuthenticationError("OIDC tokens are not accepted here (no identity provider)")
        principal = self.oidc.principal(credential)
        local = self.users.get(principal.username)
        if local is not None and local.disabled:  # a local row can block an IdP user
            raise AuthenticationError("account disabled")
        return principal

    def authenticate_session(self, token: str) -> Principal:
        """A pacsflow session token only (the UI's cookie)."""
        claims = self.sessions.verify(token)
        user = self.users.get(claims["sub"])
        if user is None or user.disabled:
            raise AuthenticationError("account unknown or disabled")
        return user.principal("session")
