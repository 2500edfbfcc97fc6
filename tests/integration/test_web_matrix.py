"""Authorization matrix over a real socket: every API route x every role (and no credential)
gives the expected status, against the web app served by uvicorn on a free loopback port.

Cases: STROKE (neuro, stroke_triage) and NODULE (chest, nodule_followup). Users: resident and
attending in neuro, coordinator in chest (screening pathways only), admin, auditor and the
service account in every department. A case out of scope answers 404, like a missing one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from pacsflow.governance.auth import AuthConfig, OIDCConfig
from pacsflow.web.sample import (
    NODULE_URGENT,
    SAMPLE_PASSWORD,
    STROKE_CRITICAL,
    SampleSite,
    build_sample_site,
)
from pacsflow.web.server import serving

ROLES = ("anonymous", "resident", "attending", "coordinator", "admin", "auditor", "service")
USERS = {
    "resident": "rita.resident",
    "attending": "alan.attending",
    "coordinator": "cora.coordinator",
    "admin": "ada.admin",
    "auditor": "otto.auditor",
    "service": "ris.integration",
}
STROKE, NODULE = STROKE_CRITICAL, NODULE_URGENT
APPROVAL = {"evidence_run": "run-1", "intended_use": "triage", "limitations": "synthetic"}

#  route                                         anon res  att  coord admin audit service
MATRIX: list[tuple[str, str, dict[str, Any] | None, tuple[int, ...]]] = [
    ("GET", "/api/auth/me", None, (401, 200, 200, 200, 200, 200, 200)),
    ("GET", "/api/worklist", None, (401, 200, 200, 200, 403, 403, 200)),
    ("GET", f"/api/cases/{STROKE}", None, (401, 200, 200, 404, 403, 403, 200)),
    ("GET", f"/api/cases/{NODULE}", None, (401, 404, 404, 200, 403, 403, 200)),
    ("GET", "/api/cases/9.9.9.9", None, (401, 404, 404, 404, 403, 403, 404)),
    ("GET", f"/api/cases/{STROKE}/key-image", None, (401, 200, 403, 404, 403, 403, 403)),
    ("GET", f"/api/cases/{STROKE}/timeline", None, (401, 200, 200, 404, 403, 403, 200)),
    ("GET", f"/api/cases/{NODULE}/timeline", None, (401, 404, 404, 200, 403, 403, 200)),
    (
        "POST",
        f"/api/cases/{STROKE}/decision",
        {"decision": "confirm"},
        (401, 201, 201, 403, 403, 403, 403),
    ),
    (
        "POST",
        f"/api/cases/{STROKE}/decision",
        {"decision": "override", "corrected_priority": "urgent", "reason": "small"},
        (401, 201, 201, 403, 403, 403, 403),
    ),
    ("GET", "/api/review", None, (401, 200, 200, 403, 403, 403, 403)),
    ("GET", "/api/audit", None, (401, 403, 403, 403, 200, 200, 403)),
    ("GET", "/api/audit/verify", None, (401, 403, 403, 403, 200, 200, 403)),
    ("GET", "/api/models", None, (401, 403, 200, 403, 200, 200, 403)),
    (
        "POST",
        "/api/models/pacsflow-ich/versions/4/approval",
        APPROVAL,
        (401, 403, 403, 403, 201, 403, 403),
    ),
    ("GET", "/api/usage", None, (401, 403, 403, 403, 200, 200, 403)),
    ("GET", "/api/usage.csv", None, (401, 403, 403, 403, 200, 200, 403)),
]
# Routes that take no bearer token (checked separately below).
PUBLIC_API_ROUTES = {("POST", "/api/auth/login")}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> SampleSite:
    db = tmp_path_factory.mktemp("web") / "web.db"
    return build_sample_site(f"sqlite:///{db}", auth=AuthConfig(secret_key="k" * 48))


@pytest.fixture(scope="module")
def base_url(site: SampleSite) -> Iterator[str]:
    with serving(site.app) as url:
        yield url


@pytest.fixture(scope="module")
def headers(site: SampleSite, base_url: str) -> dict[str, dict[str, str]]:
    """Credentials per role, obtained over the socket (password login; API token)."""
    out: dict[str, dict[str, str]] = {"anonymous": {}}
    with httpx.Client(base_url=base_url) as client:
        for role, username in USERS.items():
            if role == "service":
                token = site.credentials[username]
            else:
                r = client.post(
                    "/api/auth/login", json={"username": username, "password": SAMPLE_PASSWORD}
                )
                assert r.status_code == 200, r.text
                token = r.json()["access_token"]
            out[role] = {"Authorization": f"Bearer {token}"}
    return out


def _route_template(path: str) -> str:
    return (
        path.replace(STROKE, "{study_uid}")
        .replace(NODULE, "{study_uid}")
        .replace("9.9.9.9", "{study_uid}")
        .replace("pacsflow-ich/versions/4", "{name}/versions/{version}")
    )


def test_matrix_covers_every_api_route(site: SampleSite) -> None:
    """A new API route fails this test until it has a row in the matrix."""
    routes = {
        (method.upper(), path)
        for path, operations in site.app.openapi()["paths"].items()
        for method in operations
    }
    assert all(path.startswith("/api/") for _, path in routes)
    covered = {(m, _route_template(p)) for m, p, _, _ in MATRIX} | PUBLIC_API_ROUTES
    assert routes == covered


@pytest.mark.parametrize(
    ("method", "path", "body", "role", "expected"),
    [
        pytest.param(m, p, b, role, codes[i], id=f"{m} {_route_template(p)} {role}")
        for m, p, b, codes in MATRIX
        for i, role in enumerate(ROLES)
    ],
)
def test_authorization_matrix(
    base_url: str,
    headers: dict[str, dict[str, str]],
    method: str,
    path: str,
    body: dict[str, Any] | None,
    role: str,
    expected: int,
) -> None:
    with httpx.Client(base_url=base_url) as client:
        r = client.request(method, path, json=body, headers=headers[role])
    assert r.status_code == expected, f"{role} {method} {path}: {r.status_code} {r.text[:200]}"
    if expected == 401:
        assert r.headers["www-authenticate"] == "Bearer"
    if expected >= 400:
        assert isinstance(r.json()["detail"], str)


def test_login_over_socket(base_url: str) -> None:
    with httpx.Client(base_url=base_url) as client:
        ok = client.post(
            "/api/auth/login", json={"username": USERS["auditor"], "password": SAMPLE_PASSWORD}
        )
        bad = client.post(
            "/api/auth/login", json={"username": USERS["auditor"], "password": "nope-nope"}
        )
        extra = client.post("/api/auth/login", json={"username": "x", "password": "y", "z": 1})
    assert ok.status_code == 200 and ok.json()["token_type"] == "bearer"
    assert bad.status_code == 401
    assert extra.status_code == 422


def test_garbage_and_wrong_scheme_credentials(base_url: str) -> None:
    with httpx.Client(base_url=base_url) as client:
        for value in (
            "Bearer nonsense",
            "Bearer pfs_unknown",
            "Basic dXNlcjpwYXNz",
            "Bearer a.b.c",
        ):
            r = client.get("/api/worklist", headers={"Authorization": value})
            assert r.status_code == 401, value


def test_oidc_bearer_over_socket(tmp_path: Path) -> None:
    """An IdP token is accepted, one signed by another key or expired is refused."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwks = {"keys": [{**public, "kid": "k1", "alg": "RS256", "use": "sig"}]}
    oidc = OIDCConfig(issuer="https://idp.test", audience="pacsflow", jwks=jwks)
    site = build_sample_site(
        f"sqlite:///{tmp_path / 'oidc.db'}", auth=AuthConfig(secret_key="k" * 48, oidc=oidc)
    )

    def token(signing_key: Any, minutes: int) -> str:
        now = datetime.now(UTC)
        claims = {
            "iss": "https://idp.test",
            "aud": "pacsflow",
            "sub": "abc",
            "preferred_username": "dr.idp",
            "roles": ["attending"],
            "departments": ["neuro"],
            "iat": int((now - timedelta(minutes=10)).timestamp()),
            "exp": int((now + timedelta(minutes=minutes)).timestamp()),
        }
        return jwt.encode(claims, signing_key, algorithm="RS256", headers={"kid": "k1"})

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with serving(site.app) as url, httpx.Client(base_url=url) as client:
        good = client.get(
            f"/api/cases/{STROKE}", headers={"Authorization": f"Bearer {token(key, 5)}"}
        )
        wrong_key = client.get(
            "/api/worklist", headers={"Authorization": f"Bearer {token(other, 5)}"}
        )
        expired = client.get("/api/worklist", headers={"Authorization": f"Bearer {token(key, -5)}"})
    assert good.status_code == 200 and "findings" not in good.json()  # attending: alert only
    assert wrong_key.status_code == 401 and "Signature" in wrong_key.json()["detail"]
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]
