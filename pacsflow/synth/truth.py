"""Ground truth of synthetic studies: what was written, and every lesion as measured.

Lesion measurements come from the label mask actually rendered on the reference series
grid, not from the requested targets (which are kept beside them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pacsflow.domain import Finding, Location
from pacsflow.errors import InvalidInputError

TRUTH_FILENAME = "ground_truth.json"
SCHEMA_VERSION = 1


class LesionTruth(BaseModel):
    """One lesion, measured on the voxel mask (label value `label`) of the reference grid."""

    model_config = ConfigDict(frozen=True)

    label: int = Field(description="value of this lesion in the label volume (1-based)")
    kind: Literal["hemorrhage", "nodule"]
    subtype: str
    tracking_id: str = Field(description="stable across a patient's studies (nodules)")
    target_volume_ml: float
    volume_ml: float = Field(description="voxel count x voxel volume of the written mask")
    n_voxels: int
    longest_axial_diameter_mm: float
    short_axis_diameter_mm: float = Field(
        description="longest extent perpendicular to the long axis, same slice"
    )
    mean_diameter_mm: float = Field(
        description="(long + short) / 2 on the same slice (Fleischner 2017, Lung-RADS v2022)"
    )
    centroid_lps_mm: tuple[float, float, float]
    centroid_voxel_zyx: tuple[int, int, int] = Field(
        description="slice index in ascending z (not InstanceNumber), row, column"
    )
    location: Location
    assigned_hu: float = Field(description="mean HU assigned before blur and noise")
    mean_hu: float | None = Field(None, description="mean HU in the mask of the soft image")
    target_diameter_mm: float | None = None
    lobe: str | None = None
    solid_component_diameter_mm: float | None = None
    solid_component_volume_ml: float | None = None
    max_thickness_mm: float | None = Field(
        None, description="extra-axial collections: deepest extent below the inner table"
    )
    visible_ml: float | None = Field(
        None,
        description=(
            "hemorrhages: volume of the mask that the noise-free image shows at acute-blood "
            "density (40-100 HU). A thin collection against the skull can have none: the "
            "scanner's blur mixes the bone into every one of its voxels"
        ),
    )

    def to_finding(self, probability: float = 1.0) -> Finding:
        """The finding a perfect model would report for this lesion."""
        return Finding(
            kind=self.kind,
            subtype=self.subtype,
            probability=probability,
            volume_ml=self.volume_ml,
            diameter_mm=self.longest_axial_diameter_mm,
            mean_diameter_mm=self.mean_diameter_mm,
            centroid_mm=self.centroid_lps_mm,
            location=self.location,
            tracking_id=self.tracking_id,
        )


SeriesRole = Literal["scout", "thick", "thin", "axial", "bone", "lung", "dose", "mr", "cr"]


class SeriesTruth(BaseModel):
    model_config = ConfigDict(frozen=True)

    series_uid: str
    series_number: int
    description: str
    role: SeriesRole
    modality: str
    sop_class_uid: str
    n_instances: int
    directory: str = Field(description="folder of the series, relative to the study folder")
    kernel: str | None = None
    image_type: list[str] = Field(default_factory=list)
    slice_thickness_mm: float | None = None
    spacing_between_slices_mm: float | None = None
    rows: int | None = None
    columns: int | None = None
    noise_sd_hu: float | None = None
    reversed_instance_order: bool = False
    is_reference: bool = Field(False, description="the grid the lesion truth was measured on")


class StudyTruth(BaseModel):
    model_config = ConfigDict(frozen=True)

    schema_version: int = SCHEMA_VERSION
    kind: str = Field(description="head_ct | head_ct_contrast | chest_ct | mr_brain | cr_chest")
    seed: int
    study_uid: str
    accession_number: str
    patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str
    study_date: str
    study_time: str
    study_description: str
    modality: str
    vendor: str
    manufacturer: str
    manufacturer_model_name: str
    body_part_examined: str | None
    contrast: bool = False
    contrast_agent: str | None = None
    protocol: str | None = None
    noise_hu: float | None = None
    series: list[SeriesTruth] = Field(default_factory=list)
    reference_series_uid: str | None = None
    lesions: list[LesionTruth] = Field(default_factory=list)
    prior_study_uids: list[str] = Field(default_factory=list)
    doubling_time_days: float | None = None
    directory: str = Field("", description="study folder when written (absolute)")

    def series_by_role(self, role: str) -> list[SeriesTruth]:
        return [s for s in self.series if s.role == role]

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    def write(self, path: Path) -> Path:
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path


def load_truth(path: Path | str) -> StudyTruth:
    """Read ground truth from its JSON file or from the study folder that holds it."""
    p = Path(path)
    if p.is_dir():
        p = p / TRUTH_FILENAME
    if not p.is_file():
        raise InvalidInputError(f"no ground truth at {p}")
    try:
        return StudyTruth.model_validate(json.loads(p.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"ground truth {p} is invalid: {exc}") from exc
