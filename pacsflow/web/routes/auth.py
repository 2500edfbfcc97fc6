"""POST /api/auth/login (password -> bearer session token), GET /api/auth/me."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from pacsflow.web import login as login_flow
from pacsflow.web.deps import ApiPrincipal, Ctx

router = APIRouter(prefix="/api/auth", tags=["auth"])


class LoginBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


@router.post("/login")
def login(body: LoginBody, request: Request, ctx: Ctx) -> dict[str, Any]:
    client = request.client.host if request.client else None
    principal, token = login_flow.login(ctx, body.username, body.password, via="api", client=client)
    return {
        "access_token": token.token,
        "token_type": "bearer",
        "expires_at": token.expires_at.isoformat(),
        "username": principal.username,
        "role": principal.role.value,
    }


@router.get("/me")
def me(principal: ApiPrincipal, ctx: Ctx) -> dict[str, Any]:
    role_policy = ctx.policy.roles[principal.role]
    return {
        "username": principal.username,
        "role": principal.role.value,
        "departments": sorted(principal.departments),
        "method": principal.method,
        "visibility": role_policy.visibility.value,
        "actions": sorted(a.value for a in role_policy.actions),
    }
