"""Audit trail and model registry endpoints.

GET  /api/audit                                       entries, newest first, filtered (read_audit)
GET  /api/audit/verify                                hash-chain check (read_audit)
GET  /api/models                                      model versions and approvals (read_models)
POST /api/models/{name}/versions/{version}/approval   record an approval (approve_models)
GET  /api/usage                                       usage and cost per model (read_usage)
GET  /api/usage.csv                                   the same as CSV (read_usage)

Reading or verifying the audit trail is itself audited (audit.read, audit.verify), and so
are reads and exports of usage (usage.read, usage.export).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from pacsflow.errors import PacsflowError, PeerUnavailableError
from pacsflow.governance.audit_export import AuditFilter, count_entries, read_entries
from pacsflow.governance.rbac import Action, Principal
from pacsflow.governance.usage import UsageRow, load_run_records, summarize_usage, usage_csv
from pacsflow.web.context import WebContext
from pacsflow.web.deps import Ctx, api_allowed
from pacsflow.web.views import audit_view

router = APIRouter(prefix="/api", tags=["governance"])

AuditReader = Annotated[Principal, Depends(api_allowed(Action.READ_AUDIT))]
ModelReader = Annotated[Principal, Depends(api_allowed(Action.READ_MODELS))]
ModelApproverRole = Annotated[Principal, Depends(api_allowed(Action.APPROVE_MODELS))]
UsageReader = Annotated[Principal, Depends(api_allowed(Action.READ_USAGE))]
UsageDays = Annotated[int, Query(ge=1, le=3650, description="days back from now")]


@router.get("/audit")
def get_audit(
    ctx: Ctx,
    principal: AuditReader,
    action: Annotated[str | None, Query(max_length=64)] = None,
    actor: Annotated[str | None, Query(max_length=128)] = None,
    subject: Annotated[str | None, Query(max_length=255)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    where = AuditFilter(action=action, actor=actor, subject=subject)
    total = count_entries(ctx.sessions, where)
    items = read_entries(ctx.sessions, where, limit=limit, offset=offset, newest_first=True)
    ctx.audit.append(
        principal.username,
        "audit.read",
        "audit_log",
        {
            "role": principal.role.value,
            "via": "api",
            "filter": where_dict(where),
            "count": len(items),
        },
    )
    return {
        "total": total,
        "limit": limit,
        "offset": offset,
        "items": [audit_view(r) for r in items],
    }


def where_dict(where: AuditFilter) -> dict[str, str]:
    return {
        k: v
        for k, v in (("action", where.action), ("actor", where.actor), ("subject", where.subject))
        if v
    }


def verify_and_audit(ctx: WebContext, principal: Principal, via: str) -> dict[str, Any]:
    problems = ctx.audit.verify()
    entries = count_entries(ctx.sessions)
    ctx.audit.append(
        principal.username,
        "audit.verify",
        "audit_log",
        {"role": principal.role.value, "via": via, "intact": not problems, "entries": entries},
    )
    return {"intact": not problems, "entries": entries, "problems": problems}


@router.get("/audit/verify")
def get_audit_verify(ctx: Ctx, principal: AuditReader) -> dict[str, Any]:
    return verify_and_audit(ctx, principal, via="api")


def load_model_versions(ctx: WebContext) -> list[dict[str, Any]]:
    if ctx.model_versions is None:
        raise PeerUnavailableError("the model registry is not configured for the web app")
    try:
        return ctx.model_versions()
    except PacsflowError:
        raise
    except Exception as exc:  # the registry client's own errors (MLflow, network)
        raise PeerUnavailableError(f"model registry unavailable: {exc}") from exc


@router.get("/models")
def get_models(ctx: Ctx, principal: ModelReader) -> dict[str, Any]:
    return {"versions": load_model_versions(ctx)}


class ApprovalBody(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    evidence_run: str = Field(min_length=1, max_length=128)
    intended_use: str = Field(min_length=1, max_length=2000)
    limitations: str = Field(min_length=1, max_length=2000)


@router.post("/models/{name}/versions/{version}/approval", status_code=201)
def post_approval(
    name: str, version: str, body: ApprovalBody, ctx: Ctx, principal: ModelApproverRole
) -> dict[str, Any]:
    if ctx.approve_model is None:
        raise HTTPException(status.HTTP_501_NOT_IMPLEMENTED, "model approval is not configured")
    result = ctx.approve_model(
        name,
        version,
        approved_by=principal.username,
        evidence_run=body.evidence_run,
        intended_use=body.intended_use,
        limitations=body.limitations,
    )
    ctx.audit.append(
        principal.username,
        "model.approve",
        f"{name}/{version}",
        {"role": principal.role.value, "via": "api", **body.model_dump()},
    )
    return result


def usage_and_audit(
    ctx: WebContext, principal: Principal, days: int, *, via: str, export: bool
) -> tuple[datetime, list[UsageRow]]:
    """Usage of the last `days` days; the read (or export) leaves an audit entry."""
    since = datetime.now(UTC) - timedelta(days=days)
    rows = summarize_usage(load_run_records(ctx.sessions, since))
    ctx.audit.append(
        principal.username,
        "usage.export" if export else "usage.read",
        "pathway_runs",
        {"role": principal.role.value, "via": via, "days": days, "rows": len(rows)},
    )
    return since, rows


def usage_csv_response(since: datetime, rows: list[UsageRow]) -> Response:
    name = f"pacsflow-usage-since-{since.strftime('%Y%m%d')}.csv"
    return Response(
        usage_csv(rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/usage")
def get_usage(ctx: Ctx, principal: UsageReader, days: UsageDays = 30) -> dict[str, Any]:
    since, rows = usage_and_audit(ctx, principal, days, via="api", export=False)
    return {"since": since.isoformat(), "days": days, "rows": [r.as_dict() for r in rows]}


@router.get("/usage.csv", response_class=Response)
def get_usage_csv(ctx: Ctx, principal: UsageReader, days: UsageDays = 30) -> Response:
    since, rows = usage_and_audit(ctx, principal, days, via="api", export=True)
    return usage_csv_response(since, rows)
