"""What every route needs, built once by the app factory and kept on `app.state`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.config import Settings
from pacsflow.governance.audit import AuditLog
from pacsflow.governance.auth import Authenticator
from pacsflow.governance.rbac import Policy
from pacsflow.governance.users import UserStore
from pacsflow.pathways.timeline import TimelineEvent

# Model versions as plain records: {"name", "version", "aliases": [...], "approved": bool,
# "approval": {"approved_by", "approved_at", "evidence_run", "intended_use", "limitations"}
# | None, "metrics": {...}, "run_id"}. The platform must not import models/, so the
# composition root injects a callable that reads the registry.
ModelVersions = Callable[[], list[dict[str, Any]]]
KeyImage = Callable[[str], bytes | None]
# patient ID -> the patient's studies and reports in time order (pacsflow.pathways.timeline)
PatientTimeline = Callable[[str], list[TimelineEvent]]


class ModelApprover(Protocol):
    def __call__(
        self,
        name: str,
        version: str,
        *,
        approved_by: str,
        evidence_run: str,
        intended_use: str,
        limitations: str,
    ) -> dict[str, Any]: ...


@dataclass
class WebContext:
    settings: Settings
    sessions: sessionmaker[Session]
    policy: Policy
    auth: Authenticator
    users: UserStore
    audit: AuditLog
    templates: Jinja2Templates
    model_versions: ModelVersions | None = None
    key_image: KeyImage | None = None
    patient_timeline: PatientTimeline | None = None
    approve_model: ModelApprover | None = None

    @property
    def secure_cookies(self) -> bool:
        return self.settings.environment == "production"
