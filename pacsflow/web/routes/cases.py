"""Worklist, case, key image, decision and review-queue endpoints.

GET  /api/worklist                       cases in scope, reading order, priority + summary
GET  /api/cases/{study_uid}              the case as the role may see it (audited: result.view)
GET  /api/cases/{study_uid}/key-image    PNG with the finding outlined (full visibility only)
POST /api/cases/{study_uid}/decision     confirm | reject | override (reason for the latter two)
GET  /api/review                         uncertain results nobody has decided on yet
GET  /api/cases/{study_uid}/timeline     the patient's studies across specialties, in time order
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response

from pacsflow.governance.rbac import AccessDenied, Principal, Visibility, require_action
from pacsflow.governance.review import (
    DECISION_ACTIONS,
    DecisionRequest,
    record_decision,
    related_cases,
    review_queue,
    timeline,
    worklist,
)
from pacsflow.web.deps import (
    CaseNotFound,
    Ctx,
    api_results,
    audit_result_view,
    patient_events,
    visible_case,
)
from pacsflow.web.views import case_view, decision_view, worklist_row

router = APIRouter(prefix="/api", tags=["cases"])

Results = Annotated[tuple[Principal, Visibility], Depends(api_results)]


@router.get("/worklist")
def get_worklist(ctx: Ctx, who: Results) -> dict[str, Any]:
    principal, visibility = who
    cases = worklist(ctx.sessions, principal, ctx.policy)
    return {"items": [worklist_row(c, visibility) for c in cases]}


@router.get("/cases/{study_uid}")
def get_case(study_uid: str, ctx: Ctx, who: Results) -> dict[str, Any]:
    principal, visibility = who
    case = visible_case(ctx, principal, study_uid)
    audit_result_view(ctx, principal, case, via="api")
    image_url = f"/api/cases/{study_uid}/key-image" if ctx.key_image is not None else None
    return case_view(
        case,
        visibility,
        key_image_url=image_url,
        priors=related_cases(ctx.sessions, case, principal, ctx.policy),
        timeline=timeline(ctx.sessions, study_uid),
    )


@router.get("/cases/{study_uid}/key-image", response_class=Response)
def get_key_image(study_uid: str, ctx: Ctx, who: Results) -> Response:
    principal, visibility = who
    case = visible_case(ctx, principal, study_uid)
    if visibility is not Visibility.FULL:
        raise AccessDenied(f"role {principal.role.value!r} does not see overlays")
    png = ctx.key_image(study_uid) if ctx.key_image is not None else None
    if png is None:
        raise CaseNotFound(f"no key image for {study_uid}")
    audit_result_view(ctx, principal, case, via="api", part="key_image")
    return Response(png, media_type="image/png")


@router.post("/cases/{study_uid}/decision", status_code=201)
def post_decision(study_uid: str, body: DecisionRequest, ctx: Ctx, who: Results) -> dict[str, Any]:
    principal, _ = who
    require_action(principal, ctx.policy, DECISION_ACTIONS[body.decision])
    case = visible_case(ctx, principal, study_uid)
    decision = record_decision(ctx.sessions, ctx.audit, principal, ctx.policy, case, body)
    return decision_view(decision)


@router.get("/cases/{study_uid}/timeline")
def get_timeline(study_uid: str, ctx: Ctx, who: Results) -> dict[str, Any]:
    principal, visibility = who
    case = visible_case(ctx, principal, study_uid)
    events = patient_events(ctx, case, visibility)
    audit_result_view(ctx, principal, case, via="api", part="timeline")
    return {"patient_id": case.patient_id, "events": [e.model_dump(mode="json") for e in events]}


@router.get("/review")
def get_review(ctx: Ctx, who: Results) -> dict[str, Any]:
    principal, visibility = who
    cases = review_queue(ctx.sessions, principal, ctx.policy)
    return {"items": [worklist_row(c, visibility) for c in cases]}
