"""Server-rendered pages (Jinja2, no JavaScript): login, worklist, case, review queue,
audit log, model versions, usage. Same access rules as the API; the session lives in a cookie
(HttpOnly, SameSite=Strict) and every form carries a CSRF token."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError

from pacsflow.domain import Priority
from pacsflow.errors import PeerUnavailableError
from pacsflow.governance.audit_export import AuditFilter, count_entries, read_entries
from pacsflow.governance.rbac import (
    AccessDenied,
    Action,
    AuthenticationError,
    Principal,
    Visibility,
    require_action,
    require_results_visible,
)
from pacsflow.governance.review import (
    DECISION_ACTIONS,
    DecisionRequest,
    record_decision,
    related_cases,
    review_queue,
    timeline,
    worklist,
)
from pacsflow.web import login as login_flow
from pacsflow.web.context import WebContext
from pacsflow.web.deps import (
    SESSION_COOKIE,
    CaseNotFound,
    Ctx,
    UiPrincipal,
    audit_result_view,
    check_csrf,
    csrf_token,
    patient_events,
    safe_next,
    ui_allowed,
    visible_case,
)
from pacsflow.web.routes.governance import (
    UsageDays,
    load_model_versions,
    usage_and_audit,
    usage_csv_response,
    verify_and_audit,
    where_dict,
)
from pacsflow.web.views import (
    allowed_decisions,
    audit_view,
    case_view,
    navigation,
    worklist_row,
)

router = APIRouter(include_in_schema=False)
AUDIT_PAGE_SIZE = 100


def render(
    request: Request,
    ctx: WebContext,
    principal: Principal | None,
    template: str,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    base: dict[str, Any] = {"principal": principal, "nav": [], "csrf": ""}
    if principal is not None:
        base["nav"] = navigation(principal, ctx.policy)
        base["csrf"] = csrf_token(ctx, request.cookies.get(SESSION_COOKIE, ""))
    return ctx.templates.TemplateResponse(
        request, template, {**base, **context}, status_code=status_code
    )


# --- sign in / out ---------------------------------------------------------------------
@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, ctx: Ctx, next: str | None = None) -> HTMLResponse:
    return render(request, ctx, None, "login.html", next=safe_next(next), error=None)


@router.post("/login", response_model=None)
def login_submit(
    request: Request,
    ctx: Ctx,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=1024)],
    next: Annotated[str, Form()] = "/",
) -> Response:
    client = request.client.host if request.client else None
    try:
        _, token = login_flow.login(ctx, username, password, via="ui", client=client)
    except AuthenticationError:
        return render(
            request,
            ctx,
            None,
            "login.html",
            status.HTTP_401_UNAUTHORIZED,
            next=safe_next(next),
            error="Unknown user or wrong password.",
        )
    response = RedirectResponse(safe_next(next), status.HTTP_303_SEE_OTHER)
    response.set_cookie(
        SESSION_COOKIE,
        token.token,
        max_age=ctx.auth.config.session_ttl_s,
        httponly=True,
        secure=ctx.secure_cookies,
        samesite="strict",
        path="/",
    )
    return response


@router.post("/logout")
def logout(
    request: Request, ctx: Ctx, principal: UiPrincipal, csrf: Annotated[str, Form()] = ""
) -> RedirectResponse:
    check_csrf(request, ctx, csrf)
    login_flow.logout(ctx, principal, via="ui")
    response = RedirectResponse("/login", status.HTTP_303_SEE_OTHER)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/")
def home(ctx: Ctx, principal: UiPrincipal) -> RedirectResponse:
    nav = navigation(principal, ctx.policy)
    return RedirectResponse(nav[0][0] if nav else "/account", status.HTTP_303_SEE_OTHER)


@router.get("/account", response_class=HTMLResponse)
def account(request: Request, ctx: Ctx, principal: UiPrincipal) -> HTMLResponse:
    return render(request, ctx, principal, "account.html", policy=ctx.policy.roles[principal.role])


# --- clinical pages --------------------------------------------------------------------
@router.get("/worklist", response_class=HTMLResponse)
def worklist_page(request: Request, ctx: Ctx, principal: UiPrincipal) -> HTMLResponse:
    visibility = require_results_visible(principal, ctx.policy)
    rows = [worklist_row(c, visibility) for c in worklist(ctx.sessions, principal, ctx.policy)]
    return render(request, ctx, principal, "worklist.html", rows=rows, title="Worklist")


@router.get("/review", response_class=HTMLResponse)
def review_page(request: Request, ctx: Ctx, principal: UiPrincipal) -> HTMLResponse:
    visibility = require_results_visible(principal, ctx.policy)
    cases = review_queue(ctx.sessions, principal, ctx.policy)
    rows = [worklist_row(c, visibility) for c in cases]
    return render(request, ctx, principal, "worklist.html", rows=rows, title="Review queue")


def _case_page(
    request: Request,
    ctx: WebContext,
    principal: Principal,
    study_uid: str,
    *,
    status_code: int = 200,
    form_error: str | None = None,
    audit: bool = True,
) -> HTMLResponse:
    visibility = require_results_visible(principal, ctx.policy)
    case = visible_case(ctx, principal, study_uid)
    if audit:
        audit_result_view(ctx, principal, case, via="ui")
    has_image = ctx.key_image is not None and visibility is Visibility.FULL
    view = case_view(
        case,
        visibility,
        key_image_url=f"/cases/{study_uid}/key-image.png" if has_image else None,
        priors=related_cases(ctx.sessions, case, principal, ctx.policy),
        timeline=timeline(ctx.sessions, study_uid),
    )
    return render(
        request,
        ctx,
        principal,
        "case.html",
        status_code,
        case=view,
        decisions_allowed=allowed_decisions(principal, ctx.policy),
        priorities=[p.value for p in Priority],
        form_error=form_error,
    )


@router.get("/cases/{study_uid}", response_class=HTMLResponse)
def case_page(request: Request, study_uid: str, ctx: Ctx, principal: UiPrincipal) -> HTMLResponse:
    return _case_page(request, ctx, principal, study_uid)


@router.get("/cases/{study_uid}/timeline", response_class=HTMLResponse)
def case_timeline_page(
    request: Request, study_uid: str, ctx: Ctx, principal: UiPrincipal
) -> HTMLResponse:
    visibility = require_results_visible(principal, ctx.policy)
    case = visible_case(ctx, principal, study_uid)
    error = None
    try:
        events = patient_events(ctx, case, visibility)
    except PeerUnavailableError as exc:  # the archive is down: say so, keep the page
        events, error = [], f"The archive or EHR did not answer: {exc}"
    audit_result_view(ctx, principal, case, via="ui", part="timeline")
    return render(
        request,
        ctx,
        principal,
        "timeline.html",
        events=events,
        patient_id=case.patient_id,
        study_uid=study_uid,
        error=error,
    )


@router.get("/cases/{study_uid}/key-image.png")
def case_key_image(study_uid: str, ctx: Ctx, principal: UiPrincipal) -> Response:
    visibility = require_results_visible(principal, ctx.policy)
    case = visible_case(ctx, principal, study_uid)
    if visibility is not Visibility.FULL:
        raise AccessDenied(f"role {principal.role.value!r} does not see overlays")
    png = ctx.key_image(study_uid) if ctx.key_image is not None else None
    if png is None:
        raise CaseNotFound(f"no key image for {study_uid}")
    audit_result_view(ctx, principal, case, via="ui", part="key_image")
    return Response(png, media_type="image/png")


@router.post("/cases/{study_uid}/decision", response_model=None)
def case_decision(
    request: Request,
    study_uid: str,
    ctx: Ctx,
    principal: UiPrincipal,
    decision: Annotated[str, Form()],
    csrf: Annotated[str, Form()] = "",
    reason: Annotated[str, Form(max_length=2000)] = "",
    corrected_priority: Annotated[str, Form()] = "",
) -> Response:
    check_csrf(request, ctx, csrf)
    try:
        body = DecisionRequest(
            decision=decision,
            reason=reason or None,
            corrected_priority=corrected_priority or None if decision == "override" else None,
        )
    except ValidationError as exc:
        message = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        return _case_page(
            request, ctx, principal, study_uid, status_code=422, form_error=message, audit=False
        )
    require_action(principal, ctx.policy, DECISION_ACTIONS[body.decision])
    case = visible_case(ctx, principal, study_uid)
    record_decision(ctx.sessions, ctx.audit, principal, ctx.policy, case, body)
    return RedirectResponse(f"/cases/{study_uid}", status.HTTP_303_SEE_OTHER)


# --- governance pages ------------------------------------------------------------------
@router.get("/audit", response_class=HTMLResponse)
def audit_page(
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(ui_allowed(Action.READ_AUDIT))],
    action: Annotated[str | None, Query(max_length=64)] = None,
    actor: Annotated[str | None, Query(max_length=128)] = None,
    subject: Annotated[str | None, Query(max_length=255)] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    verify: bool = False,
) -> HTMLResponse:
    where = AuditFilter(action=action or None, actor=actor or None, subject=subject or None)
    total = count_entries(ctx.sessions, where)
    records = read_entries(
        ctx.sessions, where, limit=AUDIT_PAGE_SIZE, offset=offset, newest_first=True
    )
    # Verifying walks the whole chain: on request only, not on every page view.
    chain = verify_and_audit(ctx, principal, via="ui") if verify else None
    ctx.audit.append(
        principal.username,
        "audit.read",
        "audit_log",
        {"role": principal.role.value, "via": "ui", "filter": where_dict(where)},
    )
    return render(
        request,
        ctx,
        principal,
        "audit.html",
        entries=[audit_view(r) for r in records],
        total=total,
        offset=offset,
        page_size=AUDIT_PAGE_SIZE,
        filters=where_dict(where),
        chain=chain,
    )


@router.get("/models", response_class=HTMLResponse)
def models_page(
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(ui_allowed(Action.READ_MODELS))],
) -> HTMLResponse:
    versions = load_model_versions(ctx) if ctx.model_versions is not None else None
    return render(request, ctx, principal, "models.html", versions=versions)


@router.get("/usage", response_class=HTMLResponse)
def usage_page(
    request: Request,
    ctx: Ctx,
    principal: Annotated[Principal, Depends(ui_allowed(Action.READ_USAGE))],
    days: UsageDays = 30,
) -> HTMLResponse:
    since, rows = usage_and_audit(ctx, principal, days, via="ui", export=False)
    return render(
        request,
        ctx,
        principal,
        "usage.html",
        rows=[r.as_dict() for r in rows],
        days=days,
        since=since.isoformat(),
    )


@router.get("/usage.csv")
def usage_csv_page(
    ctx: Ctx,
    principal: Annotated[Principal, Depends(ui_allowed(Action.READ_USAGE))],
    days: UsageDays = 30,
) -> Response:
    since, rows = usage_and_audit(ctx, principal, days, via="ui", export=True)
    return usage_csv_response(since, rows)
