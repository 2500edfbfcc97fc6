"""Signing in and out, with an audit entry for every attempt."""

from __future__ import annotations

from pacsflow.governance.auth import SessionToken
from pacsflow.governance.rbac import AuthenticationError, Principal
from pacsflow.web.context import WebContext


def login(
    ctx: WebContext, username: str, password: str, *, via: str, client: str | None
) -> tuple[Principal, SessionToken]:
    """Check the password and issue a session token; audits success (auth.login) and
    failure (auth.login_failed, actor "anonymous", the claimed name as subject)."""
    try:
        principal, token = ctx.auth.login(username, password)
    except AuthenticationError:
        ctx.audit.append(
            "anonymous", "auth.login_failed", username[:64], {"via": via, "client": client}
        )
        raise
    ctx.audit.append(
        principal.username,
        "auth.login",
        principal.username,
        {"role": principal.role.value, "method": "password", "via": via, "client": client},
    )
    return principal, token


def logout(ctx: WebContext, principal: Principal, *, via: str) -> None:
    ctx.audit.append(
        principal.username,
        "auth.logout",
        principal.username,
        {"role": principal.role.value, "via": via},
    )
