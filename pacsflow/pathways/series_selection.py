"""Which series of a study a model reads, with the reasons, as data-driven rules.

Real studies carry a scout, soft-tissue and bone reconstructions, thin and thick series and
sometimes a dose report; vendors name them differently. The rules below are data (kernel
and description patterns per vendor convention), and every choice is explained.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from pacsflow.pathways.headers import InstanceHeader

# Sharp/bone reconstruction kernels by vendor convention (GE, Siemens, Philips, Canon).
BONE_KERNELS = re.compile(
    r"(?i)^(bone|boneplus|lung|edge|detail|h[r]?[6-9]\d[a-z]?|[bh]7\d[a-z]?|yc|yd|ye|"
    r"fc3\d|fc5\d|fc8\d|l)$"
)
BONE_DESCRIPTION = re.compile(r"(?i)\b(bone|osseous|knochen|sharp|lung window)\b")


@dataclass(frozen=True)
class SelectionRules:
    modality: str = "CT"
    min_instances: int = 10
    target_thickness_mm: float = 5.0
    exclude_bone: bool = True


# Non-contrast head CT for the ICH model: the thinnest soft-tissue axial series. The model
# windows every acquired voxel before averaging onto its 5 mm grid (window_first), and a
# scanner's 5 mm slab has already averaged in HU, where the skull swamps a thin layer of
# blood against it. A study sent with 5 mm slices only is read as sent.
HEAD_SERIES = SelectionRules(target_thickness_mm=0.5)


@dataclass(frozen=True)
class SeriesSummary:
    series_uid: str
    description: str
    modality: str
    instances: int
    kernel: str
    thickness_mm: float | None
    axial: bool
    localizer: bool
    derived: bool


@dataclass
class SeriesChoice:
    series_uid: str | None
    reasons: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    candidates: list[SeriesSummary] = field(default_factory=list)

    def explain(self) -> str:
        lines = [f"chosen: {self.series_uid or 'none'}", *(f"  - {r}" for r in self.reasons)]
        lines += [f"  rejected {uid}: {why}" for uid, why in self.rejected.items()]
        return "\n".join(lines)


def summarise(headers: Iterable[InstanceHeader]) -> list[SeriesSummary]:
    by_series: dict[str, list[InstanceHeader]] = defaultdict(list)
    for h in headers:
        by_series[h.series_uid].append(h)
    out = []
    for uid, items in by_series.items():
        first = items[0]
        out.append(
            SeriesSummary(
                series_uid=uid,
                description=first.series_description,
                modality=first.modality,
                instances=len(items),
                kernel=first.kernel,
                thickness_mm=first.slice_thickness,
                axial=all(h.is_axial for h in items),
                localizer=any(h.is_localizer for h in items),
                derived="DERIVED" in first.image_type and "SECONDARY" in first.image_type,
            )
        )
    return out


def _rejection(s: SeriesSummary, rules: SelectionRules) -> str | None:
    if s.modality != rules.modality:
        return f"modality {s.modality or 'missing'}, not {rules.modality}"
    if s.localizer:
        return "localizer (scout) image"
    if not s.axial:
        return "not axial"
    if s.instances < rules.min_instances:
        return f"{s.instances} instances, fewer than {rules.min_instances}"
    if rules.exclude_bone and (
        BONE_KERNELS.match(s.kernel.strip()) or BONE_DESCRIPTION.search(s.description)
    ):
        return f"bone/sharp reconstruction (kernel {s.kernel!r}, {s.description!r})"
    return None


def select_series(
    headers: Iterable[InstanceHeader], rules: SelectionRules = SelectionRules()
) -> SeriesChoice:
    """Choose the axial soft-tissue series closest to the model's slice thickness."""
    summaries = summarise(headers)
    choice = SeriesChoice(series_uid=None, candidates=summaries)
    eligible = []
    for s in summaries:
        why = _rejection(s, rules)
        if why:
            choice.rejected[s.series_uid] = why
        else:
            eligible.append(s)
    if not eligible:
        choice.reasons.append("no axial soft-tissue series of the right modality")
        return choice

    def score(s: SeriesSummary) -> tuple[float, int, int]:
        gap = abs((s.thickness_mm or rules.target_thickness_mm) - rules.target_thickness_mm)
        return (gap, int(s.derived), -s.instances)

    eligible.sort(key=score)
    best = eligible[0]
    choice.series_uid = best.series_uid
    choice.reasons.append(
        f"axial {rules.modality} series {best.description!r}, kernel {best.kernel or 'n/a'}, "
        f"{best.instances} slices of {best.thickness_mm} mm "
        f"(target {rules.target_thickness_mm} mm)"
    )
    for other in eligible[1:]:
        choice.rejected[other.series_uid] = (
            f"eligible but thickness {other.thickness_mm} mm is further from the target"
        )
    return choice
