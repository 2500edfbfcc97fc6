"""A small synthetic worklist, its key images and one user per role: for tests and for trying
the web UI without running a pathway. No real patient data: identifiers are made up."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from argon2 import PasswordHasher
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.config import Settings, load_settings
from pacsflow.db.session import make_engine, make_sessionmaker, upgrade
from pacsflow.db.tables import PathwayRun, WorklistItem
from pacsflow.domain import Finding, Location, Priority
from pacsflow.governance.auth import AuthConfig
from pacsflow.governance.rbac import ALL_DEPARTMENTS, Policy, Role, load_policy
from pacsflow.governance.users import UserStore
from pacsflow.pathways.timeline import TimelineEvent
from pacsflow.web.app import create_web_app
from pacsflow.web.key_image import render_key_image

_ROOT = "1.2.826.0.1.3680043.10.1179"  # a made-up UID root for sample studies
STROKE_CRITICAL = f"{_ROOT}.1"
STROKE_REVIEW = f"{_ROOT}.2"
STROKE_ROUTINE = f"{_ROOT}.3"
NODULE_URGENT = f"{_ROOT}.4"


@dataclass(frozen=True)
class SampleUser:
    username: str
    role: Role
    departments: tuple[str, ...]


SAMPLE_USERS: tuple[SampleUser, ...] = (
    SampleUser("rita.resident", Role.RESIDENT, ("neuro",)),
    SampleUser("alan.attending", Role.ATTENDING, ("neuro",)),
    SampleUser("cora.coordinator", Role.COORDINATOR, ("chest",)),
    SampleUser("ada.admin", Role.ADMIN, (ALL_DEPARTMENTS,)),
    SampleUser("otto.auditor", Role.AUDITOR, (ALL_DEPARTMENTS,)),
    SampleUser("ris.integration", Role.SERVICE, (ALL_DEPARTMENTS,)),
)


def _hemorrhage(probability: float, volume_ml: float, region: str) -> dict[str, object]:
    finding = Finding(
        kind="hemorrhage",
        subtype="intraparenchymal",
        probability=probability,
        volume_ml=volume_ml,
        diameter_mm=round((volume_ml * 1000 * 6 / np.pi) ** (1 / 3), 1),
        centroid_mm=(-31.0, -18.5, 42.0),
        location=Location(side="right", compartment="supratentorial", region=region),
    )
    return finding.model_dump(mode="json")


def seed_sample_cases(sessions: sessionmaker[Session], now: datetime | None = None) -> list[str]:
    """Insert the sample worklist (and one pathway run); returns the study UIDs."""
    now = now or datetime.now(UTC)
    nodule = Finding(
        kind="nodule",
        subtype="solid",
        probability=0.91,
        diameter_mm=9.2,
        mean_diameter_mm=8.7,
        location=Location(side="right", region="right upper lobe"),
    ).model_dump(mode="json")
    rows = [
        WorklistItem(
            study_uid=STROKE_CRITICAL,
            accession_number="A1001",
            patient_id="P001",
            department="neuro",
            pathway="stroke_triage",
            priority=Priority.CRITICAL.value,
            summary="Suspected intracranial hemorrhage, 12.4 mL, right frontal lobe",
            findings=[_hemorrhage(0.97, 12.4, "frontal lobe")],
            model_name="pacsflow-ich",
            model_version="3",
            updated_at=now - timedelta(minutes=5),
        ),
        WorklistItem(
            study_uid=STROKE_REVIEW,
            accession_number="A1002",
            patient_id="P002",
            department="neuro",
            pathway="stroke_triage",
            priority=Priority.REVIEW.value,
            summary="Uncertain: possible small hemorrhage, 0.2 mL, right parietal lobe",
            findings=[_hemorrhage(0.52, 0.2, "parietal lobe")],
            model_name="pacsflow-ich",
            model_version="3",
            updated_at=now - timedelta(minutes=20),
        ),
        WorklistItem(
            study_uid=STROKE_ROUTINE,
            accession_number="A1003",
            patient_id="P001",
            department="neuro",
            pathway="stroke_triage",
            priority=Priority.ROUTINE.value,
            summary="No hemorrhage detected",
            findings=[],
            model_name="pacsflow-ich",
            model_version="3",
            updated_at=now - timedelta(days=30),
        ),
        WorklistItem(
            study_uid=NODULE_URGENT,
            accession_number="A2001",
            patient_id="P003",
            department="chest",
            pathway="nodule_followup",
            priority=Priority.URGENT.value,
            summary="Solid nodule 9.2 mm, right upper lobe (grown since prior)",
            findings=[nodule],
            model_name="pacsflow-nodule",
            model_version="1",
            updated_at=now - timedelta(minutes=40),
        ),
    ]
    with sessions() as session:
        session.add_all(rows)
        received = now - timedelta(minutes=6)
        session.add(
            PathwayRun(
                study_uid=STROKE_CRITICAL,
                pathway="stroke_triage",
                model_version="3",
                outcome=Priority.CRITICAL.value,
                reasons=["hemorrhage probability 0.97 >= 0.80", "volume 12.4 mL >= 1.0 mL"],
                timings={
                    "received": received.isoformat(),
                    "inferred": (received + timedelta(seconds=21)).isoformat(),
                    "decided": (received + timedelta(seconds=22)).isoformat(),
                },
                score=0.97,
                finished_at=now - timedelta(minutes=5),
            )
        )
        session.commit()
    return [r.study_uid for r in rows]


def add_sample_users(users: UserStore, password: str) -> dict[str, str]:
    """One user per role; returns {username: credential} (password, or API token for the
    service account)."""
    credentials: dict[str, str] = {}
    for u in SAMPLE_USERS:
        if u.role is Role.SERVICE:
            users.add(u.username, role=u.role, departments=u.departments)
            credentials[u.username] = users.issue_api_token(u.username)
        else:
            users.add(u.username, role=u.role, departments=u.departments, password=password)
            credentials[u.username] = password
    return credentials


def synthetic_head_slice(size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """An axial head-CT-like slice in HU (air, skull, brain, ventricles) with a right frontal
    hemorrhage, and the hemorrhage's mask."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = size / 2, size / 2
    r = np.hypot((yy - cy) / (0.42 * size), (xx - cx) / (0.34 * size))
    hu = np.full((size, size), -1000.0, dtype=np.float32)
    hu[r < 1.0] = 1200.0  # skull
    hu[r < 0.9] = 32.0  # brain
    lateral = (np.abs(xx - cx) - 0.06 * size) / (0.04 * size)
    ventricles = np.hypot((yy - cy) / (0.12 * size), lateral)
    hu[ventricles < 1.0] = 5.0
    rng = np.random.default_rng(7)
    hu += rng.normal(0.0, 3.0, hu.shape).astype(np.float32)
    # Radiological convention: the patient's right is on the image's left.
    bleed = np.hypot((yy - 0.33 * size) / (0.09 * size), (xx - 0.36 * size) / (0.07 * size)) < 1.0
    hu[bleed] = 68.0 + rng.normal(0.0, 3.0, int(bleed.sum()))
    return hu, bleed


def sample_key_image(study_uid: str) -> bytes | None:
    """Key images for the sample studies with findings; None for the others."""
    if study_uid not in (STROKE_CRITICAL, STROKE_REVIEW):
        return None
    hu, mask = synthetic_head_slice()
    return render_key_image(hu, mask)


def sample_model_versions() -> list[dict[str, object]]:
    return [
        {
            "name": "pacsflow-ich",
            "version": "3",
            "aliases": ["champion"],
            "approved": True,
            "approval": {
                "approved_by": "ada.admin",
                "approved_at": "2026-01-15T10:00:00+00:00",
                "evidence_run": "run-ich-eval-3",
                "intended_use": "Triage of non-contrast head CT for intracranial hemorrhage",
                "limitations": "Trained on synthetic phantoms; not for clinical use",
            },
            "metrics": {"auc": 0.962, "sensitivity": 0.93},
            "run_id": "run-ich-3",
        },
        {
            "name": "pacsflow-ich",
            "version": "4",
            "aliases": ["challenger"],
            "approved": False,
            "approval": None,
            "metrics": {"auc": 0.971},
            "run_id": "run-ich-4",
        },
    ]


SAMPLE_PASSWORD = "sample-password-1"


@dataclass
class SampleSite:
    """A web app over a fresh database holding the sample worklist and users."""

    app: FastAPI
    sessions: sessionmaker[Session]
    credentials: dict[str, str]
    study_uids: list[str]


def sample_timeline(sessions: sessionmaker[Session], patient_id: str) -> list[TimelineEvent]:
    """The sample site has no archive: its timeline is the patient's seeded cases."""
    with sessions() as session:
        rows = session.scalars(
            select(WorklistItem).where(WorklistItem.patient_id == patient_id)
        ).all()
        return sorted(
            (
                TimelineEvent(
                    date=row.updated_at.date().isoformat(),
                    kind="study",
                    study_uid=row.study_uid,
                    description=row.pathway,
                    modalities=["CT"],
                    specialties=["radiology"],
                    accession_number=row.accession_number or "",
                    key_findings=[row.summary] if row.summary else [],
                    source="pacsflow",
                )
                for row in rows
            ),
            key=lambda e: e.date,
        )


def build_sample_site(
    database_url: str,
    *,
    auth: AuthConfig | None = None,
    settings: Settings | None = None,
    policy: Policy | None = None,
) -> SampleSite:
    """Migrate `database_url`, seed it, and build the app with the sample injections.
    Passwords use a cheap argon2 cost here: sample data, not for real accounts."""
    upgrade(database_url)
    sessions = make_sessionmaker(make_engine(database_url))
    hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    study_uids = seed_sample_cases(sessions)
    credentials = add_sample_users(UserStore(sessions, hasher), SAMPLE_PASSWORD)
    app = create_web_app(
        settings or load_settings(),
        sessions,
        policy=policy or load_policy(),
        auth=auth or AuthConfig.ephemeral(),
        model_versions=sample_model_versions,
        key_image=sample_key_image,
        approve_model=_approve_sample_model,
        patient_timeline=lambda patient_id: sample_timeline(sessions, patient_id),
        password_hasher=hasher,
    )
    return SampleSite(app, sessions, credentials, study_uids)


def _approve_sample_model(
    name: str,
    version: str,
    *,
    approved_by: str,
    evidence_run: str,
    intended_use: str,
    limitations: str,
) -> dict[str, Any]:
    return {
        "name": name,
        "version": version,
        "approved": True,
        "approval": {
            "approved_by": approved_by,
            "evidence_run": evidence_run,
            "intended_use": intended_use,
            "limitations": limitations,
        },
    }
