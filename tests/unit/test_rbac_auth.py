"""Authentication: argon2 users, session tokens, OIDC tokens against a JWKS, API tokens.

The OIDC identity provider is played by the test: it makes its own RSA keys and JWKS.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from argon2 import PasswordHasher
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.db.session import make_engine, make_sessionmaker, upgrade
from pacsflow.db.tables import User
from pacsflow.errors import ConfigError, InvalidInputError
from pacsflow.governance.auth import AuthConfig, Authenticator, OIDCConfig, SessionTokens
from pacsflow.governance.rbac import AccessDenied, AuthenticationError, Role
from pacsflow.governance.users import UserExistsError, UserStore

ISSUER = "https://idp.example.test/realms/hospital"
AUDIENCE = "pacsflow"
SECRET = "s" * 40
PASSWORD = "a long enough password"


class IdentityProvider:
    """Signs tokens with its own RSA key and publishes the public half as a JWKS."""

    def __init__(self, kid: str = "idp-key-1") -> None:
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> dict[str, Any]:
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**public, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def token(self, **overrides: Any) -> str:
        now = datetime.now(UTC)
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "f3a1c2",
            "preferred_username": "dr.oidc",
            "roles": ["offline_access", "resident"],
            "departments": ["neuro"],
            "iat": int(now.timestamp()),
            "exp": int((now + timedelta(minutes=5)).timestamp()),
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    url = f"sqlite:///{tmp_path / 'auth.db'}"
    upgrade(url)
    return make_sessionmaker(make_engine(url))


@pytest.fixture
def users(sessions: sessionmaker[Session]) -> UserStore:
    return UserStore(sessions, PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture(scope="module")
def idp() -> IdentityProvider:
    return IdentityProvider()


@pytest.fixture
def authenticator(users: UserStore, idp: IdentityProvider) -> Authenticator:
    oidc = OIDCConfig(issuer=ISSUER, audience=AUDIENCE, jwks=idp.jwks())
    return Authenticator(AuthConfig(secret_key=SECRET, oidc=oidc), users)


# --- users --------------------------------------------------------------------------------
def test_password_is_stored_as_argon2id(users: UserStore, sessions: sessionmaker[Session]) -> None:
    users.add("rita", role=Role.RESIDENT, departments=["neuro"], password=PASSWORD)
    with sessions() as s:
        stored = s.query(User).one().password_hash
    assert stored is not None and stored.startswith("$argon2id$") and PASSWORD not in stored
    assert users.verify_password("rita", PASSWORD).role is Role.RESIDENT


def test_wrong_password_unknown_user_and_disabled_user_get_the_same_refusal(
    users: UserStore,
) -> None:
    users.add("rita", role=Role.RESIDENT, departments=["neuro"], password=PASSWORD)
    users.add("carl", role=Role.RESIDENT, departments=["neuro"], password=PASSWORD)
    users.disable("carl")
    messages = set()
    for name, password in (("rita", "wrong password!"), ("nobody", PASSWORD), ("carl", PASSWORD)):
        with pytest.raises(AuthenticationError) as info:
            users.verify_password(name, password)
        messages.add(str(info.value))
    assert messages == {"unknown user or wrong password"}


def test_user_validation(users: UserStore) -> None:
    with pytest.raises(InvalidInputError, match="at least 10"):
        users.add("rita", role=Role.RESIDENT, password="short")
    with pytest.raises(InvalidInputError, match="invalid username"):
        users.add("rita smith", role=Role.RESIDENT, password=PASSWORD)
    with pytest.raises(InvalidInputError, match="API tokens"):
        users.add("robot", role=Role.SERVICE, password=PASSWORD)
    users.add("rita", role=Role.RESIDENT, password=PASSWORD)
    with pytest.raises(UserExistsError):
        users.add("rita", role=Role.ATTENDING, password=PASSWORD)


def test_api_tokens_of_service_accounts(users: UserStore, authenticator: Authenticator) -> None:
    users.add("ris", role=Role.SERVICE, departments=["*"])
    token = users.issue_api_token("ris")
    principal = authenticator.authenticate(token)
    assert (principal.username, principal.role, principal.method) == (
        "ris",
        Role.SERVICE,
        "api_token",
    )
    with pytest.raises(AuthenticationError, match="unknown API token"):
        authenticator.authenticate(token[:-2] + "xx")
    users.disable("ris")
    with pytest.raises(AuthenticationError, match="revoked"):
        authenticator.authenticate(token)
    users.add("rita", role=Role.RESIDENT, password=PASSWORD)
    with pytest.raises(InvalidInputError, match="not a service account"):
        users.issue_api_token("rita")


# --- session tokens ------------------------------------------------------------------------
def test_login_issues_a_session_token_that_authenticates(
    users: UserStore, authenticator: Authenticator
) -> None:
    users.add("rita", role=Role.RESIDENT, departments=["neuro"], password=PASSWORD)
    _, session = authenticator.login("rita", PASSWORD)
    assert session.expires_at > datetime.now(UTC) + timedelta(hours=7)
    again = authenticator.authenticate(session.token)
    assert (again.username, again.role, again.departments) == ("rita", Role.RESIDENT, {"neuro"})


def test_expired_tampered_and_foreign_session_tokens_are_refused(
    users: UserStore, authenticator: Authenticator
) -> None:
    users.add("rita", role=Role.RESIDENT, password=PASSWORD)
    tokens = SessionTokens(authenticator.config)
    old = tokens.issue("rita", now=datetime.now(UTC) - timedelta(hours=9))
    with pytest.raises(AuthenticationError, match="expired"):
        authenticator.authenticate(old.token)
    forged = SessionTokens(AuthConfig(secret_key="x" * 40)).issue("rita")
    with pytest.raises(AuthenticationError, match="Signature verification failed"):
        authenticator.authenticate(forged.token)
    header, payload, signature = tokens.issue("rita").token.split(".")
    with pytest.raises(AuthenticationError):
        authenticator.authenticate(f"{header}.{payload}.{signature[:-4]}AAAA")
    with pytest.raises(AuthenticationError, match="malformed"):
        authenticator.authenticate("not-a-token")


def test_disabling_a_user_ends_their_sessions(
    users: UserStore, authenticator: Authenticator
) -> None:
    users.add("rita", role=Role.RESIDENT, password=PASSWORD)
    _, session = authenticator.login("rita", PASSWORD)
    users.disable("rita")
    with pytest.raises(AuthenticationError, match="disabled"):
        authenticator.authenticate(session.token)


def test_short_secret_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least 32"):
        AuthConfig(secret_key="short")


# --- OIDC -------------------------------------------------------------------------------------
def test_oidc_token_maps_to_principal(authenticator: Authenticator, idp: IdentityProvider) -> None:
    principal = authenticator.authenticate(idp.token())
    assert principal.username == "dr.oidc"
    assert principal.role is Role.RESIDENT  # first recognised role; offline_access ignored
    assert principal.departments == {"neuro"}
    assert principal.method == "oidc"


def test_oidc_token_signed_by_another_key_is_refused(authenticator: Authenticator) -> None:
    impostor = IdentityProvider(kid="idp-key-1")  # same kid, different key
    with pytest.raises(AuthenticationError, match="Signature verification failed"):
        authenticator.authenticate(impostor.token())


def test_oidc_token_with_unknown_kid_is_refused(authenticator: Authenticator) -> None:
    with pytest.raises(AuthenticationError, match="no key 'other'"):
        authenticator.authenticate(IdentityProvider(kid="other").token())


def test_expired_oidc_token_is_refused(authenticator: Authenticator, idp: IdentityProvider) -> None:
    past = datetime.now(UTC) - timedelta(hours=1)
    token = idp.token(iat=int(past.timestamp()), exp=int((past + timedelta(minutes=5)).timestamp()))
    with pytest.raises(AuthenticationError, match="expired"):
        authenticator.authenticate(token)


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"aud": "another-app"}, "(?i)audience"),
        ({"iss": "https://evil.example.test"}, "issuer"),
        ({"exp": None}, "exp"),
    ],
)
def test_oidc_claims_are_checked(
    authenticator: Authenticator, idp: IdentityProvider, claims: dict[str, Any], message: str
) -> None:
    with pytest.raises(AuthenticationError, match=message):
        authenticator.authenticate(idp.token(**claims))


def test_oidc_token_without_pacsflow_role_is_forbidden(
    authenticator: Authenticator, idp: IdentityProvider
) -> None:
    with pytest.raises(AccessDenied, match="no pacsflow role"):
        authenticator.authenticate(idp.token(roles=["offline_access"]))


def test_hs256_token_signed_with_the_idp_public_key_is_refused(
    authenticator: Authenticator, idp: IdentityProvider
) -> None:
    """Algorithm confusion: an HS256 token goes the session path, keyed by pacsflow's secret."""
    public_pem = idp.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "rita", "iat": 0, "exp": 2**31}
    # PyJWT refuses to sign like this, so the attacker's token is built by hand.
    signing_input = b".".join(
        base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=")
        for part in ({"alg": "HS256", "typ": "JWT"}, claims)
    )
    mac = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
    token = (signing_input + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode()
    with pytest.raises(AuthenticationError):
        authenticator.authenticate(token)


def test_local_row_can_block_an_oidc_user(
    users: UserStore, authenticator: Authenticator, idp: IdentityProvider
) -> None:
    users.add("dr.oidc", role=Role.RESIDENT, password=PASSWORD)
    users.disable("dr.oidc")
    with pytest.raises(AuthenticationError, match="disabled"):
        authenticator.authenticate(idp.token())


def test_without_idp_oidc_tokens_are_refused(users: UserStore, idp: IdentityProvider) -> None:
    plain = Authenticator(AuthConfig(secret_key=SECRET), users)
    with pytest.raises(AuthenticationError, match="no identity provider"):
        plain.authenticate(idp.token())


def test_oidc_config_needs_exactly_one_key_source(idp: IdentityProvider) -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        OIDCConfig(issuer=ISSUER, audience=AUDIENCE)
    with pytest.raises(ConfigError, match="not allowed"):
        OIDCConfig(issuer=ISSUER, audience=AUDIENCE, jwks=idp.jwks(), algorithms=("HS256",))
