"""SQLAlchemy tables of pacsflow's database (SQLite by default, PostgreSQL by URL).

Changes go through Alembic migrations (pacsflow/db/migrations); `pacsflow db upgrade`
and `pacsflow stack up` apply them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class OutboxEntry(Base):
    """One accepted trigger, written before the trigger is acknowledged.

    States: pending -> dispatched (a flow run exists) | dead (gave up, with the reason).
    """

    __tablename__ = "outbox"
    __table_args__ = (UniqueConstraint("idempotency_key", name="uq_outbox_idempotency_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(32))  # dicom | hl7 | webhook | vna | cli
    pathway: Mapped[str] = mapped_column(String(64))
    study_uid: Mapped[str | None] = mapped_column(String(128), index=True)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    flow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ReceivedStudy(Base):
    """A study being assembled by the gateway from C-STORE instances."""

    __tablename__ = "received_studies"

    study_uid: Mapped[str] = mapped_column(String(128), primary_key=True)
    patient_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    accession_number: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    modality: Mapped[str | None] = mapped_column(String(16), nullable=True)
    calling_aet: Mapped[str | None] = mapped_column(String(16), nullable=True)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    first_received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    state: Mapped[str] = mapped_column(String(16), default="open", index=True)  # open | closed
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    closed_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Set when the spool folder was pruned: what the spool holds of the study afterwards
    # came later and is not the whole study. A column of its own, not a key in
    # `attributes`, which the assembler rewrites whole.
    spool_pruned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Order(Base):
    """Order context from the RIS (HL7 ORM/OMI), keyed by accession number."""

    __tablename__ = "orders"

    accession_number: Mapped[str] = mapped_column(String(64), primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64), index=True)
    context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PrefetchedContext(Base):
    """Prior studies fetched for an order before its images arrived, keyed by accession.

    `priors` holds, newest first, one dict per earlier study of the patient (study_uid,
    study_date, description, modalities); a pathway run uses them while `fetched_at` is
    younger than `priors.max_age_s`, else it queries the archive itself.
    """

    __tablename__ = "prefetched_context"

    accession_number: Mapped[str] = mapped_column(String(64), primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64), index=True)
    pathway: Mapped[str] = mapped_column(String(64))
    modality: Mapped[str] = mapped_column(String(16))
    priors: Mapped[list[Any]] = mapped_column(JSON, default=list)
    fetched_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PatientLink(Base):
    """Patient merges (ADT^A40): a retired identifier points at the surviving one."""

    __tablename__ = "patient_links"

    prior_patient_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64), index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WorklistItem(Base):
    __tablename__ = "worklist"

    study_uid: Mapped[str] = mapped_column(String(128), primary_key=True)
    accession_number: Mapped[str | None] = mapped_column(String(64), nullable=True)
    patient_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    department: Mapped[str] = mapped_column(String(64), default="radiology")
    pathway: Mapped[str] = mapped_column(String(64))
    priority: Mapped[str] = mapped_column(String(16), index=True)
    summary: Mapped[str] = mapped_column(Text, default="")
    findings: Mapped[list[Any]] = mapped_column(JSON, default=list)
    model_name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    model_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Writeback(Base):
    """Idempotency ledger: one row per output actually delivered (SR, SEG, ORU, FHIR, ...)."""

    __tablename__ = "writebacks"
    __table_args__ = (UniqueConstraint("key", name="uq_writebacks_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(255))
    study_uid: Mapped[str] = mapped_column(String(128), index=True)
    target: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    delivered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PathwayRun(Base):
    """The outcome of a pathway for a study: a result or an explicit failure, with timings."""

    __tablename__ = "pathway_runs"
    __table_args__ = (UniqueConstraint("study_uid", "pathway", "model_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_uid: Mapped[str] = mapped_column(String(128), index=True)
    pathway: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(32), default="")
    outcome: Mapped[str] = mapped_column(String(32))  # priority or "failed"
    reasons: Mapped[list[Any]] = mapped_column(JSON, default=list)
    timings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    features: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    flow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditEntry(Base):
    """Append-only, hash-chained audit log (each entry hashes the previous one).

    At most one entry may follow any given entry: the UNIQUE previous-hash column makes two
    appenders (threads or processes) that read the same head collide instead of forking."""

    __tablename__ = "audit_log"
    __table_args__ = (UniqueConstraint("prev_hash", name="uq_audit_log_prev_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64), index=True)
    subject: Mapped[str] = mapped_column(String(255))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class Patient(Base):
    """Patient facts from ADT (A01/A04/A08) that pathways may use. Names are not kept."""

    __tablename__ = "patients"

    patient_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    birth_date: Mapped[str | None] = mapped_column(String(8), nullable=True)  # YYYYMMDD
    sex: Mapped[str | None] = mapped_column(String(1), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class User(Base):
    """A person or machine that may use the web API/UI; role and departments drive RBAC.

    kind "local" signs in with a password (argon2 hash), kind "service" with API tokens.
    Users of an OIDC identity provider need no row; a row with `disabled` blocks them.
    """

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("username", name="uq_users_username"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    departments: Mapped[list[Any]] = mapped_column(JSON, default=list)
    kind: Mapped[str] = mapped_column(String(16), default="local")  # local | service
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ApiToken(Base):
    """A service account's API token, kept only as its SHA-256 (the token has 256 random bits)."""

    __tablename__ = "api_tokens"
    __table_args__ = (UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(
        String(64), ForeignKey("users.username", name="fk_api_tokens_username"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class FeedbackLabel(Base):
    """A radiologist's decision on an AI result: the label for retraining and model metrics.

    decision: confirm | reject | override (override carries the corrected priority).
    """

    __tablename__ = "feedback_labels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_uid: Mapped[str] = mapped_column(String(128), index=True)
    pathway: Mapped[str] = mapped_column(String(64))
    model_name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    model_version: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    ai_priority: Mapped[str] = mapped_column(String(16))
    decision: Mapped[str] = mapped_column(String(16))
    corrected_priority: Mapped[str | None] = mapped_column(String(16), nullable=True)
    finding_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    actor: Mapped[str] = mapped_column(String(128))
    actor_role: Mapped[str] = mapped_column(String(16))
    audit_entry_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
