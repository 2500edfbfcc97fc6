"""Typed records passed between the steps of a pathway.

Small and serialisable: UIDs, measurements and decisions, never pixel data or patient
names, so Prefect's result persistence and the logs hold no PHI.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class Priority(StrEnum):
    """Worklist priority a pathway assigns to a study."""

    CRITICAL = "critical"
    URGENT = "urgent"
    ROUTINE = "routine"
    REVIEW = "review"  # uncertain: a human decides before anyone is alerted
    NOT_ANALYSED = "not_analysed"


class OrderContext(BaseModel):
    """What the RIS told us about the exam (HL7 ORM/OMI), keyed by accession number."""

    accession_number: str
    patient_id: str
    placer_order_number: str | None = None
    filler_order_number: str | None = None
    procedure_code: str | None = None
    procedure_text: str | None = None
    indication: str | None = None
    priority: str | None = None  # TQ1-9 / OBR-27 priority as sent (S, A, R, ...)
    ordering_provider: str | None = None
    order_status: str | None = None  # ORC-5 (CM = exam complete)
    received_at: datetime | None = None


class SeriesRef(BaseModel):
    study_uid: str
    series_uid: str
    modality: str
    series_description: str = ""
    number_of_instances: int = 0


class Location(BaseModel):
    """Where a finding is: laterality and anatomical compartment as far as known."""

    side: str | None = None  # left / right / midline
    compartment: str | None = None  # e.g. supratentorial / infratentorial
    region: str | None = None  # e.g. frontal lobe, lateral ventricle, right upper lobe


class Finding(BaseModel):
    """One lesion found by a model, measured on the source image grid."""

    kind: str  # "hemorrhage" | "nodule"
    subtype: str | None = None  # e.g. subdural, solid, ground-glass
    probability: float = Field(ge=0.0, le=1.0)
    volume_ml: float | None = None
    diameter_mm: float | None = None  # longest axial diameter
    mean_diameter_mm: float | None = None
    solid_diameter_mm: float | None = None  # solid component of a part-solid nodule
    centroid_mm: tuple[float, float, float] | None = None  # patient coordinates (LPS)
    location: Location = Location()
    tracking_id: str | None = None
    tracking_uid: str | None = None
    notes: list[str] = Field(default_factory=list)  # e.g. comparison with a prior exam


class ModelRef(BaseModel):
    """The exact model version that produced a result (provenance on every output)."""

    name: str
    version: str
    run_id: str | None = None
    approved: bool = False


class InferenceResult(BaseModel):
    study_uid: str
    series_uid: str
    model: ModelRef
    study_probability: float = Field(ge=0.0, le=1.0)
    findings: list[Finding] = Field(default_factory=list)
    seconds: float = 0.0  # wall seconds of the model call (read + inference + findings)
    cpu_seconds: float = 0.0  # process CPU seconds of it (usage and cost reporting)
    # Header and image features of the analysed series (drift monitoring), no PHI.
    features: dict[str, Any] = Field(default_factory=dict)


class TriageDecision(BaseModel):
    priority: Priority
    reasons: list[str] = Field(default_factory=list)
