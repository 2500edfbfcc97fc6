"""The clinical side of governance: prioritized worklist, case records, the review queue of
uncertain findings, and radiologists' decisions (confirm / reject / override) stored as
feedback labels with an audit entry each.

Plain functions over the database; the web layer only checks access and renders.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import Select, select
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.db.tables import FeedbackLabel, PathwayRun, WorklistItem
from pacsflow.domain import Priority
from pacsflow.errors import InvalidInputError
from pacsflow.governance.audit import AuditLog
from pacsflow.governance.rbac import (
    ALL_DEPARTMENTS,
    Action,
    Policy,
    Principal,
    Visibility,
    can_view_case,
    require_action,
)

# Reading order of the worklist (most urgent first); within a priority, oldest first.
PRIORITY_ORDER: dict[str, int] = {
    Priority.CRITICAL.value: 0,
    Priority.URGENT.value: 1,
    Priority.REVIEW.value: 2,
    Priority.ROUTINE.value: 3,
    Priority.NOT_ANALYSED.value: 4,
}


class Decision(StrEnum):
    CONFIRM = "confirm"
    REJECT = "reject"
    OVERRIDE = "override"


DECISION_ACTIONS: dict[Decision, Action] = {
    Decision.CONFIRM: Action.CONFIRM,
    Decision.REJECT: Action.REJECT,
    Decision.OVERRIDE: Action.OVERRIDE,
}


class DecisionRequest(BaseModel):
    """A radiologist's decision on the AI result of one study."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    decision: Decision
    reason: str | None = Field(None, max_length=2000)
    corrected_priority: Priority | None = None
    finding_index: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _reason_and_priority(self) -> DecisionRequest:
        if self.decision in (Decision.REJECT, Decision.OVERRIDE) and not self.reason:
            raise ValueError(f"a reason is required to {self.decision.value}")
        if self.decision is Decision.OVERRIDE and self.corrected_priority is None:
            raise ValueError("an override gives the corrected priority")
        if self.decision is not Decision.OVERRIDE and self.corrected_priority is not None:
            raise ValueError("corrected_priority belongs to an override only")
        return self


@dataclass(frozen=True)
class DecisionRecord:
    id: int
    decision: str
    corrected_priority: str | None
    finding_index: int | None
    reason: str | None
    actor: str
    actor_role: str
    created_at: datetime
    audit_entry_id: int | None


@dataclass(frozen=True)
class CaseRecord:
    """One worklist row plus the decisions taken on it (newest last)."""

    study_uid: str
    accession_number: str | None
    patient_id: str | None
    department: str
    pathway: str
    priority: str  # as the AI (pathway) set it
    summary: str
    findings: list[dict[str, Any]]
    model_name: str | None
    model_version: str | None
    updated_at: datetime
    decisions: tuple[DecisionRecord, ...] = ()

    @property
    def latest_decision(self) -> DecisionRecord | None:
        return self.decisions[-1] if self.decisions else None

    @property
    def effective_priority(self) -> str:
        """The priority a human set by override, else the AI's."""
        last = self.latest_decision
        if last is not None and last.decision == Decision.OVERRIDE and last.corrected_priority:
            return last.corrected_priority
        return self.priority

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["effective_priority"] = self.effective_priority
        return data


def _decision(row: FeedbackLabel) -> DecisionRecord:
    return DecisionRecord(
        id=row.id,
        decision=row.decision,
        corrected_priority=row.corrected_priority,
        finding_index=row.finding_index,
        reason=row.reason,
        actor=row.actor,
        actor_role=row.actor_role,
        created_at=_utc(row.created_at),
        audit_entry_id=row.audit_entry_id,
    )


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _case(row: WorklistItem, decisions: Iterable[FeedbackLabel]) -> CaseRecord:
    return CaseRecord(
        study_uid=row.study_uid,
        accession_number=row.accession_number,
        patient_id=row.patient_id,
        department=row.department,
        pathway=row.pathway,
        priority=row.priority,
        summary=row.summary or "",
        findings=list(row.findings or []),
        model_name=row.model_name,
        model_version=row.model_version,
        updated_at=_utc(row.updated_at),
        decisions=tuple(_decision(d) for d in sorted(decisions, key=lambda d: d.id)),
    )


def _with_decisions(session: Session, rows: list[WorklistItem]) -> list[CaseRecord]:
    uids = [r.study_uid for r in rows]
    labels: dict[str, list[FeedbackLabel]] = {uid: [] for uid in uids}
    if uids:
        for label in session.scalars(
            select(FeedbackLabel).where(FeedbackLabel.study_uid.in_(uids))
        ):
            labels[label.study_uid].append(label)
    return [_case(r, labels[r.study_uid]) for r in rows]


def reading_order(cases: Iterable[CaseRecord]) -> list[CaseRecord]:
    return sorted(
        cases,
        key=lambda c: (PRIORITY_ORDER.get(c.effective_priority, len(PRIORITY_ORDER)), c.updated_at),
    )


def get_case(sessions: sessionmaker[Session], study_uid: str) -> CaseRecord | None:
    with sessions() as session:
        row = session.get(WorklistItem, study_uid)
        return _with_decisions(session, [row])[0] if row is not None else None


def _in_scope(principal: Principal, policy: Policy) -> Select[tuple[WorklistItem]]:
    """Worklist rows the principal may see, narrowed in SQL (can_view_case stays the rule)."""
    query = select(WorklistItem)
    if ALL_DEPARTMENTS not in principal.departments:
        query = query.where(WorklistItem.department.in_(sorted(principal.departments)))
    if policy.visibility(principal.role) is Visibility.SCREENING:
        query = query.where(WorklistItem.pathway.in_(sorted(policy.screening_pathways)))
    return query


def worklist(
    sessions: sessionmaker[Session], principal: Principal, policy: Policy
) -> list[CaseRecord]:
    """The cases in the principal's scope, in reading order."""
    with sessions() as session:
        rows = [
            r
            for r in session.scalars(_in_scope(principal, policy))
            if can_view_case(principal, policy, r.department, r.pathway)
        ]
        return reading_order(_with_decisions(session, rows))


def review_queue(
    sessions: sessionmaker[Session], principal: Principal, policy: Policy
) -> list[CaseRecord]:
    """Uncertain results (priority review) in scope that no one has decided on yet."""
    require_action(principal, policy, Action.REVIEW)
    query = _in_scope(principal, policy).where(WorklistItem.priority == Priority.REVIEW.value)
    with sessions() as session:
        rows = [
            r
            for r in session.scalars(query)
            if can_view_case(principal, policy, r.department, r.pathway)
        ]
        cases = _with_decisions(session, rows)
    return reading_order(c for c in cases if c.latest_decision is None)


def related_cases(
    sessions: sessionmaker[Session], case: CaseRecord, principal: Principal, policy: Policy
) -> list[CaseRecord]:
    """Other studies of the same patient the principal may see (priors), newest first."""
    if not case.patient_id:
        return []
    with sessions() as session:
        rows = [
            r
            for r in session.scalars(
                select(WorklistItem).where(
                    WorklistItem.patient_id == case.patient_id,
                    WorklistItem.study_uid != case.study_uid,
                )
            )
            if can_view_case(principal, policy, r.department, r.pathway)
        ]
        cases = _with_decisions(session, rows)
    return sorted(cases, key=lambda c: c.updated_at, reverse=True)


def timeline(sessions: sessionmaker[Session], study_uid: str) -> list[dict[str, Any]]:
    """What the pathways did with the study, from their recorded outcomes and timings."""
    with sessions() as session:
        runs = session.scalars(
            select(PathwayRun).where(PathwayRun.study_uid == study_uid).order_by(PathwayRun.id)
        ).all()
        return [
            {
                "pathway": r.pathway,
                "model_version": r.model_version,
                "outcome": r.outcome,
                "reasons": list(r.reasons or []),
                "timings": dict(r.timings or {}),
                "finished_at": _utc(r.finished_at),
            }
            for r in runs
        ]


def record_decision(
    sessions: sessionmaker[Session],
    audit: AuditLog,
    principal: Principal,
    policy: Policy,
    case: CaseRecord,
    request: DecisionRequest,
) -> DecisionRecord:
    """Store the decision as a feedback label, audited first (action result.<decision>).

    The audit entry is written before the label so that no stored decision lacks one; the
    label keeps the entry's id.
    """
    require_action(principal, policy, DECISION_ACTIONS[request.decision])
    if request.finding_index is not None and request.finding_index >= len(case.findings):
        raise InvalidInputError(
            f"finding_index {request.finding_index} out of range ({len(case.findings)} findings)"
        )
    entry = audit.append(
        principal.username,
        f"result.{request.decision.value}",
        case.study_uid,
        {
            "role": principal.role.value,
            "accession": case.accession_number,
            "patient_id": case.patient_id,
            "pathway": case.pathway,
            "model": case.model_name,
            "model_version": case.model_version,
            "ai_priority": case.priority,
            "corrected_priority": request.corrected_priority.value
            if request.corrected_priority
            else None,
            "finding_index": request.finding_index,
            "reason": request.reason,
        },
    )
    with sessions() as session:
        label = FeedbackLabel(
            study_uid=case.study_uid,
            pathway=case.pathway,
            model_name=case.model_name,
            model_version=case.model_version,
            ai_priority=case.priority,
            decision=request.decision.value,
            corrected_priority=request.corrected_priority.value
            if request.corrected_priority
            else None,
            finding_index=request.finding_index,
            reason=request.reason,
            actor=principal.username,
            actor_role=principal.role.value,
            audit_entry_id=entry.id,
        )
        session.add(label)
        session.commit()
        return _decision(label)
