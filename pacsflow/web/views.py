"""What the API returns and the pages show: plain functions from records to dicts, with the
role's visibility applied (rbac.redact_result) before anything leaves the server."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pacsflow.governance.audit_export import AuditRecord
from pacsflow.governance.rbac import Action, Policy, Principal, Visibility, redact_result
from pacsflow.governance.review import CaseRecord, DecisionRecord


def decision_view(decision: DecisionRecord) -> dict[str, Any]:
    data = asdict(decision)
    data["created_at"] = decision.created_at.isoformat()
    return data


def _base(case: CaseRecord, visibility: Visibility) -> dict[str, Any]:
    shown = redact_result(case.as_dict(), visibility)
    shown["effective_priority"] = case.effective_priority
    shown["updated_at"] = case.updated_at.isoformat()
    last = case.latest_decision
    shown["decision"] = last.decision if last else None
    return shown


def worklist_row(case: CaseRecord, visibility: Visibility) -> dict[str, Any]:
    """A worklist line: priority and summary at every level, never findings."""
    row = _base(case, Visibility.ALERT if visibility is not Visibility.NONE else visibility)
    row["visibility"] = visibility.value
    row.pop("overlay", None)
    return row


def case_view(
    case: CaseRecord,
    visibility: Visibility,
    *,
    key_image_url: str | None,
    priors: list[CaseRecord],
    timeline: list[dict[str, Any]],
) -> dict[str, Any]:
    shown = _base(case, visibility)
    shown["patient_id"] = case.patient_id
    shown["decisions"] = [decision_view(d) for d in case.decisions]
    shown["key_image_url"] = key_image_url if visibility is Visibility.FULL else None
    shown["priors"] = [worklist_row(p, visibility) for p in priors]
    shown["timeline"] = [{**t, "finished_at": t["finished_at"].isoformat()} for t in timeline]
    return shown


def audit_view(record: AuditRecord) -> dict[str, Any]:
    return record.as_json()


def navigation(principal: Principal, policy: Policy) -> list[tuple[str, str]]:
    """(path, label) of the pages this principal may open, in menu order."""
    items: list[tuple[str, str]] = []
    if policy.visibility(principal.role) is not Visibility.NONE:
        items.append(("/worklist", "Worklist"))
    if policy.allows(principal.role, Action.REVIEW):
        items.append(("/review", "Review queue"))
    if policy.allows(principal.role, Action.READ_MODELS):
        items.append(("/models", "Models"))
    if policy.allows(principal.role, Action.READ_AUDIT):
        items.append(("/audit", "Audit log"))
    if policy.allows(principal.role, Action.READ_USAGE):
        items.append(("/usage", "Usage"))
    return items


def allowed_decisions(principal: Principal, policy: Policy) -> list[str]:
    return [
        a.value
        for a in (Action.CONFIRM, Action.REJECT, Action.OVERRIDE)
        if policy.allows(principal.role, a)
    ]
