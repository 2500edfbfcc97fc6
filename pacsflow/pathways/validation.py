"""Is this a study the model may read? A great-expectations suite over the header table.

The suite runs on a pandas table with one row per instance of the selected series. A
failure ends the pathway with "not analysed" and these reasons, recorded and visible.
great_expectations is imported lazily: it costs seconds and only workers need it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from pacsflow.pathways.headers import InstanceHeader

HEAD_DESCRIPTION = re.compile(r"(?i)\b(head|brain|cerebr\w*|skull|kopf|sch[aä]del|neuro|cranial)\b")
HEAD_BODY_PARTS = frozenset({"HEAD", "BRAIN", "SKULL"})
CHEST_DESCRIPTION = re.compile(r"(?i)\b(chest|thorax|thoracic|lung\w*|ldct|pulmo\w*)\b")
CHEST_BODY_PARTS = frozenset({"CHEST", "THORAX", "LUNG", "CHEST_ABDOMEN"})
NO_CONTRAST = {"", "NONE", "NO", "N/A", "NA"}


@dataclass(frozen=True)
class HeaderSuite:
    """Bounds of a pathway's header suite; the defaults are the non-contrast head CT's
    (configurable per site)."""

    name: str = "non_contrast_head_ct"
    modality: str = "CT"
    region: str = "head/brain"
    body_parts: frozenset[str] = HEAD_BODY_PARTS
    description_pattern: re.Pattern[str] = HEAD_DESCRIPTION
    require_no_contrast: bool = True
    min_slice_thickness_mm: float = 0.5
    max_slice_thickness_mm: float = 6.0
    min_pixel_spacing_mm: float = 0.2
    max_pixel_spacing_mm: float = 1.2
    min_slices: int = 10


@dataclass
class ValidationOutcome:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    table_rows: int = 0


# Chest CT for nodules: contrast does not hide a nodule, thin slices are the norm.
CHEST_CT_SUITE = HeaderSuite(
    name="chest_ct",
    region="chest",
    body_parts=CHEST_BODY_PARTS,
    description_pattern=CHEST_DESCRIPTION,
    require_no_contrast=False,
    max_slice_thickness_mm=3.0,
    # The nodule model reads 1.5 mm voxels and was evaluated on pixels up to 1.56 mm
    # (matrix 256 at the widest vendor FOV, 400 mm); coarser images lose small nodules.
    max_pixel_spacing_mm=1.6,
    min_slices=20,
)


def header_table(
    headers: Sequence[InstanceHeader], spec: HeaderSuite = HeaderSuite()
) -> pd.DataFrame:
    """One row per instance, sorted by position along z (axial series)."""
    rows = []
    for h in headers:
        rows.append(
            {
                "modality": h.modality,
                "contrast_free": h.contrast_agent.strip().upper() in NO_CONTRAST,
                "slice_thickness": h.slice_thickness,
                "pixel_spacing": h.pixel_spacing[0] if h.pixel_spacing else None,
                "in_region": h.body_part in spec.body_parts
                or bool(
                    not h.body_part
                    and (
                        spec.description_pattern.search(h.series_description)
                        or spec.description_pattern.search(h.study_description)
                    )
                ),
                "z_position": h.position[2] if h.position and len(h.position) == 3 else None,
                "axial": h.is_axial,
            }
        )
    table = pd.DataFrame(rows)
    if not table.empty:
        table = table.sort_values("z_position", kind="stable").reset_index(drop=True)
    return table


_gx_lock = threading.Lock()
_gx_cache: dict[str, Any] = {}


def _batch_definition() -> Any:
    with _gx_lock:
        if "bd" not in _gx_cache:
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig

            ctx = gx.get_context(mode="ephemeral")
            ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
            asset = ctx.data_sources.add_pandas("pacsflow").add_dataframe_asset("headers")
            _gx_cache["bd"] = asset.add_batch_definition_whole_dataframe("series")
        return _gx_cache["bd"]


def _suite(spec: HeaderSuite) -> tuple[Any, dict[str, str]]:
    import great_expectations as gx

    e = gx.expectations
    checks: list[tuple[Any, str]] = [
        (
            e.ExpectColumnValuesToBeInSet(column="modality", value_set=[spec.modality]),
            f"modality is not {spec.modality}",
        ),
    ]
    if spec.require_no_contrast:
        checks.append(
            (
                e.ExpectColumnValuesToBeInSet(column="contrast_free", value_set=[True]),
                "contrast agent recorded (ContrastBolusAgent): not a non-contrast study",
            )
        )
    checks += [
        (
            e.ExpectColumnValuesToBeBetween(
                column="slice_thickness",
                min_value=spec.min_slice_thickness_mm,
                max_value=spec.max_slice_thickness_mm,
            ),
            f"slice thickness outside {spec.min_slice_thickness_mm}-"
            f"{spec.max_slice_thickness_mm} mm",
        ),
        (
            e.ExpectColumnValuesToBeBetween(
                column="pixel_spacing",
                min_value=spec.min_pixel_spacing_mm,
                max_value=spec.max_pixel_spacing_mm,
            ),
            f"pixel spacing outside {spec.min_pixel_spacing_mm}-{spec.max_pixel_spacing_mm} mm",
        ),
        (
            e.ExpectColumnValuesToBeInSet(column="in_region", value_set=[True]),
            f"body part is not {spec.region} and cannot be inferred from the descriptions",
        ),
        (
            e.ExpectColumnValuesToNotBeNull(column="z_position"),
            "slice positions missing",
        ),
        (
            e.ExpectColumnValuesToBeIncreasing(column="z_position", strictly=True),
            "slice positions not strictly monotonic (duplicate slices?)",
        ),
        (
            e.ExpectTableRowCountToBeBetween(min_value=spec.min_slices),
            f"fewer than {spec.min_slices} slices",
        ),
    ]
    suite = gx.ExpectationSuite(name=spec.name)
    reasons: dict[str, str] = {}
    for expectation, reason in checks:
        suite.add_expectation(expectation)
        config = expectation.configuration
        reasons[_key(config.type, config.kwargs.get("column"))] = reason
    return suite, reasons


def _key(kind: str, column: str | None) -> str:
    return f"{kind}:{column or ''}"


def validate_headers(
    headers: Sequence[InstanceHeader], spec: HeaderSuite = HeaderSuite()
) -> ValidationOutcome:
    table = header_table(headers, spec)
    if table.empty:
        return ValidationOutcome(False, ["no instances in the selected series"], 0)
    batch_definition = _batch_definition()  # creates the context the suite needs
    suite, reasons = _suite(spec)
    batch = batch_definition.get_batch(batch_parameters={"dataframe": table})
    result = batch.validate(suite)
    failed = [
        reasons.get(
            _key(r.expectation_config.type, r.expectation_config.kwargs.get("column")),
            r.expectation_config.type,
        )
        for r in result.results
        if not r.success
    ]
    return ValidationOutcome(bool(result.success), failed, len(table))
