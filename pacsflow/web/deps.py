"""Access checks as FastAPI dependencies, for the API (bearer) and the UI (session cookie).

The API takes `Authorization: Bearer <token>` only (session token, OIDC token or service
API token); the UI takes the session cookie only, and its forms carry a CSRF token. So a
cookie never authorises an API call and a stolen page cannot post a decision.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pacsflow.governance.rbac import (
    AccessDenied,
    Action,
    AuthenticationError,
    Principal,
    Visibility,
    can_view_case,
    require_action,
    require_results_visible,
)
from pacsflow.governance.review import CaseRecord, get_case
from pacsflow.pathways.timeline import TimelineEvent
from pacsflow.web.context import WebContext

SESSION_COOKIE = "pacsflow_session"

_bearer = HTTPBearer(auto_error=False, description="session, OIDC or service API token")


class LoginRequired(Exception):
    """A UI page was asked for without a valid session: redirect to the login page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def web_context(request: Request) -> WebContext:
    ctx: WebContext = request.app.state.pacsflow
    return ctx


Ctx = Annotated[WebContext, Depends(web_context)]


def _unauthorized(reason: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=reason, headers={"WWW-Authenticate": "Bearer"}
    )


# --- API -------------------------------------------------------------------------------
def api_principal(
    ctx: Ctx,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("authentication required (Authorization: Bearer <token>)")
    try:
        return ctx.auth.authenticate(credentials.credentials)
    except AuthenticationError as exc:
        raise _unauthorized(str(exc)) from None


ApiPrincipal = Annotated[Principal, Depends(api_principal)]


def api_allowed(action: Action) -> Callable[..., Principal]:
    """Dependency: an API caller whose role may do `action`."""

    def check(principal: ApiPrincipal, ctx: Ctx) -> Principal:
        require_action(principal, ctx.policy, action)
        return principal

    return check


def api_results(principal: ApiPrincipal, ctx: Ctx) -> tuple[Principal, Visibility]:
    """Dependency: an API caller who sees AI results at some level."""
    return principal, require_results_visible(principal, ctx.policy)


# --- UI --------------------------------------------------------------------------------
def _path_with_query(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def ui_principal(request: Request, ctx: Ctx) -> Principal:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise LoginRequired(_path_with_query(request))
    try:
        return ctx.auth.authenticate_session(token)
    except AuthenticationError:
        raise LoginRequired(_path_with_query(request)) from None


UiPrincipal = Annotated[Principal, Depends(ui_principal)]


def ui_allowed(action: Action) -> Callable[..., Principal]:
    def check(principal: UiPrincipal, ctx: Ctx) -> Principal:
        require_action(principal, ctx.policy, action)
        return principal

    return check


def csrf_token(ctx: WebContext, session_token: str) -> str:
    """Bound to the session: HMAC of the session token under the site's secret."""
    key = ctx.auth.config.secret_key.encode()
    return hmac.new(key, b"csrf:" + session_token.encode(), hashlib.sha256).hexdigest()[:40]


def check_csrf(request: Request, ctx: WebContext, submitted: str | None) -> None:
    session_token = request.cookies.get(SESSION_COOKIE, "")
    expected = csrf_token(ctx, session_token)
    if not submitted or not hmac.compare_digest(submitted, expected):
        raise AccessDenied("form expired or not from this site (CSRF check failed)")


def safe_next(target: str | None) -> str:
    """Only same-site paths after login (no open redirect)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


class CaseNotFound(LookupError):
    """No such case, or not in the principal's scope (the same answer, so scope leaks nothing)."""


def visible_case(ctx: WebContext, principal: Principal, study_uid: str) -> CaseRecord:
    case = get_case(ctx.sessions, study_uid)
    if case is None or not can_view_case(principal, ctx.policy, case.department, case.pathway):
        raise CaseNotFound(f"no case {study_uid} in your scope")
    return case


def audit_result_view(
    ctx: WebContext, principal: Principal, case: CaseRecord, via: str, part: str = "case"
) -> None:
    """Every look at an AI result leaves an audit entry (action result.view)."""
    ctx.audit.append(
        principal.username,
        "result.view",
        case.study_uid,
        {
            "role": principal.role.value,
            "via": via,
            "part": part,
            "accession": case.accession_number,
            "patient_id": case.patient_id,
            "priority": case.effective_priority,
            "model_version": case.model_version,
        },
    )


def patient_events(
    ctx: WebContext, case: CaseRecord, visibility: Visibility
) -> list[TimelineEvent]:
    """The case's patient timeline. AI findings of other studies are results too: a role
    that does not see full findings gets the studies without them."""
    if ctx.patient_timeline is None:
        raise CaseNotFound("no patient timeline source is configured")
    if not case.patient_id:
        raise CaseNotFound(f"case {case.study_uid} has no patient ID")
    events = ctx.patient_timeline(case.patient_id)
    if visibility is not Visibility.FULL:
        events = [e.model_copy(update={"key_findings": []}) for e in events]
    return events
