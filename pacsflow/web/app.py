"""The clinical web app: JSON API under /api and server-rendered pages, one FastAPI app.

    app = create_web_app(settings, sessions, policy=load_policy(), auth=AuthConfig(...),
                         model_versions=..., key_image=..., approve_model=...)

Errors map onto HTTP here, once: AuthenticationError 401, AccessDenied 403, a case out of
scope 404, InvalidInputError 422, PeerUnavailableError 503. API paths answer JSON
{"detail": ...}; pages answer HTML, and a page without a session redirects to /login.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from argon2 import PasswordHasher
from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pacsflow.config import Settings
from pacsflow.errors import ConfigError, InvalidInputError, PeerUnavailableError
from pacsflow.gateway.rate_limit import RateLimiter, add_rate_limit, api_client_key
from pacsflow.governance.audit import AuditLog
from pacsflow.governance.auth import AuthConfig, Authenticator
from pacsflow.governance.rbac import AccessDenied, AuthenticationError, Policy
from pacsflow.governance.users import UserStore
from pacsflow.web.context import (
    KeyImage,
    ModelApprover,
    ModelVersions,
    PatientTimeline,
    WebContext,
)
from pacsflow.web.deps import CaseNotFound, LoginRequired
from pacsflow.web.pages import router as pages_router
from pacsflow.web.routes.auth import router as auth_router
from pacsflow.web.routes.cases import router as cases_router
from pacsflow.web.routes.governance import router as governance_router

WEB_DIR = Path(__file__).resolve().parent
# No inline script or style anywhere, so the policy can be strict.
SECURITY_HEADERS = {
    b"cache-control": b"no-store",
    b"x-content-type-options": b"nosniff",
    b"x-frame-options": b"DENY",
    b"referrer-policy": b"same-origin",
    b"content-security-policy": b"default-src 'self'; img-src 'self'; style-src 'self'; "
    b"script-src 'none'; form-action 'self'; frame-ancestors 'none'",
}


class SecurityHeaders:
    """Adds the headers above to every response (PHI: nothing cached, nothing framed)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS.items() if k not in present]
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_web_app(
    settings: Settings,
    sessions: sessionmaker[Session],
    *,
    policy: Policy,
    auth: AuthConfig | None = None,
    model_versions: ModelVersions | None = None,
    key_image: KeyImage | None = None,
    approve_model: ModelApprover | None = None,
    patient_timeline: PatientTimeline | None = None,
    password_hasher: PasswordHasher | None = None,
    rate_limiter: RateLimiter | None = None,
) -> FastAPI:
    """The web app over pacsflow's database.

    auth: session secret, token lifetime, optional OIDC provider. Unset, a random secret is
    made for this process (development only; refused in production).
    model_versions / key_image / approve_model: injected by the composition root (the
    platform does not import models/); unset, those pages say so.
    rate_limiter: per-client limit on /api/ (429 past it); unset = from settings.rate_limit.
    """
    if auth is None:
        if settings.environment != "development":
            raise ConfigError("the web app needs an explicit session secret in production")
        auth = AuthConfig.ephemeral()
    users = UserStore(sessions, password_hasher)
    ctx = WebContext(
        settings=settings,
        sessions=sessions,
        policy=policy,
        auth=Authenticator(auth, users),
        users=users,
        audit=AuditLog(sessions),
        templates=Jinja2Templates(directory=str(WEB_DIR / "templates")),
        model_versions=model_versions,
        key_image=key_image,
        approve_model=approve_model,
        patient_timeline=patient_timeline,
    )
    app = FastAPI(
        title="pacsflow",
        summary="Prioritized worklist, AI findings by role, decisions, audit trail",
        docs_url="/api/docs",
        openapi_url="/api/openapi.json",
        redoc_url=None,
    )
    app.state.pacsflow = ctx
    # Added first so that it sits inside SecurityHeaders: a 429 gets those headers too.
    rl = settings.rate_limit
    add_rate_limit(app, rl, rl.api_per_minute, ("/api/",), api_client_key, rate_limiter)
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=str(WEB_DIR / "static")), name="static")
    for router in (auth_router, cases_router, governance_router, pages_router):
        app.include_router(router)
    _add_error_handlers(app, ctx)

    @app.get("/health", include_in_schema=False)
    def health() -> JSONResponse:
        try:
            with sessions() as session:
                session.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return JSONResponse({"status": "database unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    return app


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _add_error_handlers(app: FastAPI, ctx: WebContext) -> None:
    def answer(request: Request, code: int, message: str) -> Response:
        if _is_api(request):
            headers = {"WWW-Authenticate": "Bearer"} if code == 401 else None
            return JSONResponse({"detail": message}, status_code=code, headers=headers)
        return ctx.templates.TemplateResponse(
            request,
            "error.html",
            {"principal": None, "nav": [], "csrf": "", "code": code, "message": message},
            status_code=code,
        )

    @app.exception_handler(LoginRequired)
    def _login(request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse(
            f"/login?next={quote(exc.next_path, safe='/')}", status.HTTP_303_SEE_OTHER
        )

    @app.exception_handler(AuthenticationError)
    def _unauthenticated(request: Request, exc: AuthenticationError) -> Response:
        return answer(request, 401, str(exc))

    @app.exception_handler(AccessDenied)
    def _forbidden(request: Request, exc: AccessDenied) -> Response:
        return answer(request, 403, str(exc))

    @app.exception_handler(CaseNotFound)
    def _not_found(request: Request, exc: CaseNotFound) -> Response:
        return answer(request, 404, str(exc))

    @app.exception_handler(InvalidInputError)
    def _invalid(request: Request, exc: InvalidInputError) -> Response:
        return answer(request, 422, str(exc))

    @app.exception_handler(PeerUnavailableError)
    def _unavailable(request: Request, exc: PeerUnavailableError) -> Response:
        return answer(request, 503, str(exc))
