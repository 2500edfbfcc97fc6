"""The signed webhook: any system asks for a pathway run on a study over HTTPS.

Endpoints (FastAPI app from `create_gateway_app`):

- `GET /health` -> 200 {"status": "ok"} when the database answers, else 503.
- `POST /hooks/{pathway}/studies` -> the pathway is taken from the path; unknown -> 404.
- `POST /hooks/studies` -> the pathway is taken from the body's "pathway"; when the body has
  none, the app's `default_pathway` (a factory argument, unset by default) is used; with
  neither the request is refused (422). Routing rules are not applied here: a webhook caller
  asks for a named pathway, it does not send the headers routing needs.

Body (JSON object, unknown fields refused)::

    {"study_uid": "1.2.840...", "pathway": "stroke_triage" | null,
     "accession_number": "A123" | null, "priority": "stat" | null, "requested_by": "ris" | null}

Order of checks: the body is read raw (at most MAX_BODY_BYTES, else 413) and its signature
verified first (401, see signing.py), so an unauthenticated caller learns nothing else; then
the JSON is parsed and validated (422), then the pathway resolved (404 / 422). An accepted
request becomes an outbox row (source "webhook", key `idempotency_key(pathway, study_uid)`)
and the answer is 202 {"outbox_id", "idempotency_key", "state", "duplicate", "pathway",
"study_uid"}. The same (pathway, study) again answers 202 with duplicate = true and creates
nothing, whatever else the body says. Every error body is {"detail": "<reason>"}.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from pacsflow.config import Settings
from pacsflow.db.tables import OutboxEntry
from pacsflow.errors import ConfigError, PermanentError
from pacsflow.gateway.outbox import Outbox, idempotency_key
from pacsflow.gateway.rate_limit import RateLimiter, add_rate_limit, ip_client_key
from pacsflow.gateway.signing import SignatureRejected, SignatureVerifier

log = logging.getLogger(__name__)

DEFAULT_PATHWAYS: frozenset[str] = frozenset(
    {"stroke_triage", "nodule_followup", "screening_cohort"}
)
MAX_BODY_BYTES = 64 * 1024  # a trigger is a few hundred bytes
SOURCE = "webhook"

# PS3.5 section 9.1: components of digits separated by dots, at most 64 characters. The rule
# against leading zeros in a component is not enforced: real archives hold such UIDs.
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


class StudyTrigger(BaseModel):
    """The body of a webhook request."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    study_uid: str
    pathway: str | None = Field(None, min_length=1, max_length=64)
    accession_number: str | None = Field(None, max_length=16)  # AccessionNumber is SH (16)
    priority: str | None = Field(None, max_length=16)
    requested_by: str | None = Field(None, max_length=128)

    @field_validator("study_uid")
    @classmethod
    def _dicom_uid(cls, value: str) -> str:
        if len(value) > 64 or not _UID.fullmatch(value):
            raise ValueError(
                "must be a DICOM UID: digits and dots, no empty component, at most 64 "
                "characters (PS3.5 9.1)"
            )
        return value


class TriggerAccepted(BaseModel):
    outbox_id: int
    idempotency_key: str
    state: str
    duplicate: bool
    pathway: str
    study_uid: str


class WebhookRefused(PermanentError):
    """A request the webhook answers with an HTTP error and a reason."""

    def __init__(self, status_code: int, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status_code = status_code
        self.reason = reason
        self.headers = headers


# --- the logic, plain functions ----------------------------------------------------------


def verify_signature(verifier: SignatureVerifier, headers: Any, body: bytes) -> str:
    try:
        return verifier.verify(headers, body)
    except SignatureRejected as exc:
        raise WebhookRefused(
            401, str(exc), {"WWW-Authenticate": 'HMAC-SHA256 realm="pacsflow-webhook"'}
        ) from exc


def parse_trigger(body: bytes) -> StudyTrigger:
    """The validated body, or 422 with every problem named (never the values sent)."""
    try:
        return StudyTrigger.model_validate_json(body)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_input=False, include_url=False):
            where = ".".join(str(part) for part in error["loc"]) or "body"
            problems.append(f"{where}: {error['msg']}")
        raise WebhookRefused(422, "; ".join(problems)) from exc


def resolve_pathway(
    path_pathway: str | None,
    trigger: StudyTrigger,
    pathways: Collection[str],
    default_pathway: str | None,
) -> str:
    known = ", ".join(sorted(pathways))
    if path_pathway is not None:
        if path_pathway not in pathways:
            raise WebhookRefused(404, f"unknown pathway {path_pathway[:64]!r} (known: {known})")
        if trigger.pathway is not None and trigger.pathway != path_pathway:
            raise WebhookRefused(
                422, f"pathway in the body ({trigger.pathway!r}) differs from the path's"
            )
        return path_pathway
    pathway = trigger.pathway or default_pathway
    if pathway is None:
        raise WebhookRefused(
            422, "pathway: required (in the body, or POST to /hooks/{pathway}/studies)"
        )
    if pathway not in pathways:
        raise WebhookRefused(422, f"pathway: unknown {pathway!r} (known: {known})")
    return pathway


def flow_parameters(trigger: StudyTrigger) -> dict[str, Any]:
    """Flow-run parameters: identifiers only. Optional fields appear only when sent."""
    params: dict[str, Any] = {
        "study_uid": trigger.study_uid,
        "accession_number": trigger.accession_number,
    }
    if trigger.priority is not None:
        params["priority"] = trigger.priority
    if trigger.requested_by is not None:
        params["requested_by"] = trigger.requested_by
    return params


@dataclass(frozen=True)
class Enqueued:
    accepted: TriggerAccepted
    row: OutboxEntry
    created: bool


def enqueue_trigger(outbox: Outbox, trigger: StudyTrigger, pathway: str) -> Enqueued:
    """Write the outbox row (or find the existing one for the same key). Database errors
    become 503: nothing was recorded, the sender should retry."""
    key = idempotency_key(pathway, trigger.study_uid)
    try:
        row, created = outbox.enqueue(
            source=SOURCE,
            pathway=pathway,
            study_uid=trigger.study_uid,
            parameters=flow_parameters(trigger),
            key=key,
        )
    except SQLAlchemyError as exc:
        log.error("webhook %s %s not recorded: %s", pathway, trigger.study_uid, exc)
        raise WebhookRefused(
            503, "the trigger could not be recorded; retry later", {"Retry-After": "5"}
        ) from exc
    log.info(
        "webhook %s %s -> outbox %s%s",
        pathway,
        trigger.study_uid,
        row.id,
        "" if created else " (duplicate)",
    )
    accepted = TriggerAccepted(
        outbox_id=row.id,
        idempotency_key=row.idempotency_key,
        state=row.state,
        duplicate=not created,
        pathway=pathway,
        study_uid=trigger.study_uid,
    )
    return Enqueued(accepted, row, created)


def notify(on_trigger: Callable[[OutboxEntry], None] | None, row: OutboxEntry) -> None:
    """Tell the dispatcher early; the row is committed, so a failure here loses nothing."""
    if on_trigger is None:
        return
    try:
        on_trigger(row)
    except Exception:  # the dispatcher's poll picks the row up anyway
        log.exception("on_trigger failed for outbox %s", row.id)


def database_ready(sessions: sessionmaker[Session]) -> bool:
    try:
        with sessions() as session:
            session.execute(text("SELECT 1"))
        return True
    except SQLAlchemyError:
        return False


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The raw body, refused (413) beyond `limit` bytes without reading it all."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise WebhookRefused(413, f"body larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise WebhookRefused(413, f"body larger than {limit} bytes")
    return bytes(body)


# --- the app -----------------------------------------------------------------------------


def create_gateway_app(
    settings: Settings,
    sessions: sessionmaker[Session],
    outbox: Outbox,
    *,
    on_trigger: Callable[[OutboxEntry], None] | None = None,
    pathways: Collection[str] = DEFAULT_PATHWAYS,
    default_pathway: str | None = None,
    verifier: SignatureVerifier | None = None,
    rate_limiter: RateLimiter | None = None,
) -> FastAPI:
    """The gateway's HTTP face. `on_trigger` is called with each newly created outbox row
    (not for duplicates), after it is committed, e.g. to wake the dispatcher.
    `rate_limiter`: per-client limit on /hooks/ (429 past it); unset = from settings.rate_limit."""
    known = frozenset(pathways)
    if default_pathway is not None and default_pathway not in known:
        raise ConfigError(f"default_pathway {default_pathway!r} is not one of {sorted(known)}")
    verifier = verifier or SignatureVerifier(
        settings.gateway.webhook_secret, settings.gateway.webhook_replay_window_s
    )
    app = FastAPI(
        title="pacsflow gateway",
        summary="Signed webhooks that ask for a pathway run on a study",
        openapi_url=None if settings.environment == "production" else "/openapi.json",
    )

    rl = settings.rate_limit
    add_rate_limit(app, rl, rl.webhook_per_minute, ("/hooks/",), ip_client_key, rate_limiter)

    @app.exception_handler(WebhookRefused)
    async def _refused(request: Request, exc: WebhookRefused) -> JSONResponse:
        return JSONResponse({"detail": exc.reason}, exc.status_code, headers=exc.headers)

    async def handle(request: Request, path_pathway: str | None) -> JSONResponse:
        body = await read_body(request)
        signature = verify_signature(verifier, request.headers, body)
        trigger = parse_trigger(body)
        pathway = resolve_pathway(path_pathway, trigger, known, default_pathway)
        try:
            result = await run_in_threadpool(enqueue_trigger, outbox, trigger, pathway)
        except WebhookRefused:
            verifier.cache.forget(signature)  # not recorded: let the same request retry
            raise
        if result.created:
            await run_in_threadpool(notify, on_trigger, result.row)
        return JSONResponse(result.accepted.model_dump(), status_code=202)

    @app.get("/health")
    async def health() -> JSONResponse:
        if await run_in_threadpool(database_ready, sessions):
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "unavailable", "reason": "database"}, status_code=503)

    @app.post("/hooks/studies", status_code=202, response_model=TriggerAccepted)
    async def post_study(request: Request) -> JSONResponse:
        return await handle(request, None)

    @app.post("/hooks/{pathway}/studies", status_code=202, response_model=TriggerAccepted)
    async def post_pathway_study(pathway: str, request: Request) -> JSONResponse:
        return await handle(request, pathway)

    return app
