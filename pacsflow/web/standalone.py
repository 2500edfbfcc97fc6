"""The clinical web app as the gateway mounts it, and `pacsflow web`: that app alone.

The api image runs `pacsflow web`: the web UI and REST API on web.host:web.port over
pacsflow's database, with no DICOM or MLLP listener, no spool and no outbox dispatcher, so
it scales out to any number of replicas. HTTPS follows tls.http, as on the gateway.
"""

from __future__ import annotations

import logging
from typing import Any

import uvicorn
from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.config import Settings
from pacsflow.config.tls import uvicorn_tls_options
from pacsflow.db.session import make_engine, make_sessionmaker, upgrade
from pacsflow.governance.auth import AuthConfig, OIDCConfig
from pacsflow.governance.rbac import load_policy
from pacsflow.pathways.timeline import timeline_source
from pacsflow.web.app import create_web_app
from pacsflow.web.case_images import key_image_source
from pacsflow.web.context import ModelApprover, ModelVersions

log = logging.getLogger(__name__)


def auth_config(settings: Settings) -> AuthConfig:
    """Session signing and the optional OIDC provider, from the `web` settings group."""
    w = settings.web
    oidc = None
    if w.oidc_issuer and w.oidc_audience:
        oidc = OIDCConfig(
            issuer=w.oidc_issuer,
            audience=w.oidc_audience,
            jwks_url=w.oidc_jwks_url,
            username_claim=w.oidc_username_claim,
            role_claim=w.oidc_role_claim,
            departments_claim=w.oidc_departments_claim,
        )
    return AuthConfig(
        secret_key=w.session_secret.get_secret_value(), session_ttl_s=w.session_ttl_s, oidc=oidc
    )


def build_web_app(
    settings: Settings,
    sessions: sessionmaker[Session],
    *,
    model_versions: ModelVersions | None = None,
    approve_model: ModelApprover | None = None,
) -> FastAPI:
    """The web app with the policy, authentication, key images and patient timeline the
    settings describe; the registry callables come from the composition root (the CLI)."""
    return create_web_app(
        settings,
        sessions,
        policy=load_policy(settings.web.policy_file),
        auth=auth_config(settings),
        model_versions=model_versions,
        approve_model=approve_model,
        key_image=key_image_source(settings),  # type: ignore[arg-type]
        patient_timeline=timeline_source(settings),
    )


def web_server(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    model_versions: ModelVersions | None = None,
    approve_model: ModelApprover | None = None,
) -> uvicorn.Server:
    """A uvicorn server of the web app alone, on web.host:web.port unless given."""
    # Check the TLS files before migrating or listening: a bad file fails the start.
    tls_options: dict[str, Any] = uvicorn_tls_options(settings.tls)
    upgrade(settings.database_url)
    sessions = make_sessionmaker(make_engine(settings.database_url))
    app = build_web_app(
        settings, sessions, model_versions=model_versions, approve_model=approve_model
    )
    config = uvicorn.Config(
        app,
        host=host or settings.web.host,
        port=settings.web.port if port is None else port,
        log_level="warning",
        lifespan="on",
        **tls_options,
    )
    return uvicorn.Server(config)


def run_web(settings: Settings, **options: Any) -> None:
    """Serve until SIGTERM or SIGINT (uvicorn's own handlers drain open requests)."""
    server = web_server(settings, **options)
    c = server.config
    log.info(
        "web UI/API listening on %s://%s:%s",
        "https" if settings.tls.http else "http",
        c.host,
        c.port,
    )
    server.run()
