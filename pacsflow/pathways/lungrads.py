"""Lung nodule management guidelines: Lung-RADS v2022 for screening, Fleischner 2017 otherwise.

Pure rules over measured nodules, no I/O. Sources, cited beside each rule below:

- ACR Lung-RADS v2022 Assessment Categories (released November 2022) and its notes;
  Christensen et al., "ACR Lung-RADS v2022: Assessment Categories and Management
  Recommendations", CHEST 2024;165(3):738-753.
- MacMahon et al., "Guidelines for Management of Incidental Pulmonary Nodules Detected on CT
  Images: From the Fleischner Society 2017", Radiology 2017;284(1):228-243 (Table), and
  Bankier et al., "Recommendations for Measuring Pulmonary Nodules at CT: A Statement from
  the Fleischner Society", Radiology 2017;285(2):584-600 (rounding, growth).

Sizes are mean diameters, (long axis + short axis) / 2. Lung-RADS rounds them to one
decimal, Fleischner to the nearest millimetre; both round half up here. Outputs support a
radiologist's report; they do not replace it.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Sequence
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pacsflow.errors import InvalidInputError

__all__ = [
    "FLEISCHNER_GROWTH_MM",
    "LUNG_RADS_GROWTH_MM",
    "LUNG_RADS_VERSION",
    "FleischnerAssessment",
    "Guideline",
    "GuidelineChoice",
    "LungRadsAssessment",
    "LungRadsCategory",
    "NoduleCategory",
    "NoduleState",
    "NoduleType",
    "choose_guideline",
    "fleischner",
    "guideline_choice",
    "lungrads",
    "lungrads_mean_diameter",
    "next_exam_due",
    "nodule_type",
]

LUNG_RADS_VERSION = "v2022"
NoduleType = Literal["solid", "part-solid", "ground-glass"]

# Lung-RADS v2022 note "Nodule growth": an increase in mean diameter > 1.5 mm within 12 months.
LUNG_RADS_GROWTH_MM = 1.5
# Bankier 2017 (Fleischner measurement statement): growth is an increase >= 2 mm.
FLEISCHNER_GROWTH_MM = 2.0

_MONTH_DAYS = 365.25 / 12
# A short-interval follow-up CT is rarely done on the exact day: count it as done from two
# weeks before its due date (a 3-month follow-up from day 77).
_SCHEDULE_SLACK_DAYS = 14.0

_TYPE_ALIASES: dict[str, NoduleType] = {
    "solid": "solid",
    "part-solid": "part-solid",
    "part solid": "part-solid",
    "partsolid": "part-solid",
    "partially solid": "part-solid",
    "mixed": "part-solid",
    "ground-glass": "ground-glass",
    "ground glass": "ground-glass",
    "groundglass": "ground-glass",
    "ggn": "ground-glass",
    "ggo": "ground-glass",
    "non-solid": "ground-glass",
    "nonsolid": "ground-glass",
    "non solid": "ground-glass",
    "pure ground-glass": "ground-glass",
}


def nodule_type(subtype: str | None) -> NoduleType:
    """The nodule type a guideline uses, from a finding's subtype ('GGN', 'non-solid', ...)."""
    key = (subtype or "").strip().lower().replace("_", "-")
    try:
        return _TYPE_ALIASES[key]
    except KeyError:
        raise InvalidInputError(
            f"unknown nodule type {subtype!r}: expected solid, part-solid or ground-glass"
        ) from None


class NoduleState(BaseModel):
    """One nodule as a guideline sees it on the exam being assessed.

    Change is against the previous exam where the nodule was seen. `stable_days`: days over
    which the mean diameter has not grown by more than the Lung-RADS growth threshold;
    `days_since_first_seen`: days since the first CT that showed the nodule.
    """

    model_config = ConfigDict(frozen=True)

    tracking_id: str
    nodule_type: NoduleType
    mean_diameter_mm: float = Field(ge=0.0)
    solid_component_mm: float | None = Field(
        None, ge=0.0, description="mean diameter of the solid component (part-solid)"
    )
    volume_mm3: float | None = Field(None, ge=0.0)
    is_new: bool = Field(False, description="absent on the prior exam(s)")
    prior_mean_diameter_mm: float | None = Field(None, ge=0.0)
    prior_solid_component_mm: float | None = Field(
        None, ge=0.0, description="0 when the nodule was ground-glass on the prior exam"
    )
    interval_days: int | None = Field(None, ge=0, description="days since the prior exam")
    stable_days: int | None = Field(None, ge=0)
    days_since_first_seen: int | None = Field(None, ge=0)
    slow_growing: bool = Field(
        False, description="grew over several exams without meeting the growth threshold"
    )
    # Descriptors a reader (or a future model) adds; the nodule model does not report them.
    juxtapleural: bool = Field(
        False, description="solid, smooth margins, oval / lentiform / triangular, pleura-attached"
    )
    benign_features: bool = Field(False, description="benign calcification or fat")
    suspicious_features: bool = Field(False, description="features raising suspicion (4X)")
    proven_benign: bool = Field(False, description="benign after diagnostic work-up")

    @model_validator(mode="after")
    def _solid_within_total(self) -> NoduleState:
        solid = self.solid_component_mm
        if solid is not None and solid > self.mean_diameter_mm + 0.05:
            raise ValueError(
                f"nodule {self.tracking_id}: solid component {solid} mm is larger than the "
                f"nodule ({self.mean_diameter_mm} mm)"
            )
        return self


def _round(mm: float, quantum: str) -> Decimal:
    # repr() keeps the shortest decimal form, so 5.95 rounds to 6.0, not 5.9.
    return Decimal(repr(float(mm))).quantize(Decimal(quantum), rounding=ROUND_HALF_UP)


def lungrads_mean_diameter(mm: float) -> float:
    """Mean diameter as Lung-RADS v2022 reports it: one decimal, half up."""
    return float(_round(mm, "0.1"))


def _tenths(mm: float) -> int:
    return int(_round(mm, "0.1") * 10)


def _whole_mm(mm: float) -> int:
    return int(_round(mm, "1"))


def _due_by(stable_days: int | None, months: int) -> bool:
    return stable_days is not None and stable_days >= months * _MONTH_DAYS - _SCHEDULE_SLACK_DAYS


# ---- Lung-RADS v2022 ---------------------------------------------------------------------


class LungRadsCategory(StrEnum):
    """Lung-RADS v2022 assessment categories (the "Category" column of the table)."""

    INCOMPLETE = "0"
    NEGATIVE = "1"
    BENIGN = "2"
    PROBABLY_BENIGN = "3"
    SUSPICIOUS = "4A"
    VERY_SUSPICIOUS = "4B"
    VERY_SUSPICIOUS_4X = "4X"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {
    LungRadsCategory.INCOMPLETE: 0,
    LungRadsCategory.NEGATIVE: 1,
    LungRadsCategory.BENIGN: 2,
    LungRadsCategory.PROBABLY_BENIGN: 3,
    LungRadsCategory.SUSPICIOUS: 4,
    LungRadsCategory.VERY_SUSPICIOUS: 5,
    LungRadsCategory.VERY_SUSPICIOUS_4X: 6,
}

_C = LungRadsCategory
_PET_NOTE = (
    "PET/CT may be considered if there is a >= 8 mm (>= 268 mm3) solid nodule or solid component"
)
# Management column of the v2022 table: (recommendation, follow-up LDCT in months or None).
_MANAGEMENT: dict[LungRadsCategory, tuple[str, int | None]] = {
    _C.INCOMPLETE: (
        "Comparison to prior chest CT examination(s) and/or additional lung cancer screening "
        "CT imaging needed; 1-3 month LDCT for findings suggesting an infectious or "
        "inflammatory process",
        None,
    ),
    _C.NEGATIVE: ("Continue annual screening: 12-month screening LDCT", 12),
    _C.BENIGN: ("Continue annual screening: 12-month screening LDCT", 12),
    _C.PROBABLY_BENIGN: ("6-month LDCT", 6),
    _C.SUSPICIOUS: (f"3-month LDCT; {_PET_NOTE}", 3),
    _C.VERY_SUSPICIOUS: (
        f"Diagnostic chest CT with or without contrast; {_PET_NOTE}; tissue sampling; and/or "
        "referral for further clinical evaluation",
        None,
    ),
    _C.VERY_SUSPICIOUS_4X: (
        f"Diagnostic chest CT with or without contrast; {_PET_NOTE}; tissue sampling; and/or "
        "referral for further clinical evaluation",
        None,
    ),
}


class NoduleCategory(BaseModel):
    model_config = ConfigDict(frozen=True)

    tracking_id: str
    category: LungRadsCategory
    reasons: list[str]


class LungRadsAssessment(BaseModel):
    """Exam-level Lung-RADS: the category of the most suspicious nodule (the driver)."""

    model_config = ConfigDict(frozen=True)

    version: str = LUNG_RADS_VERSION
    category: LungRadsCategory
    s_modifier: bool = False
    recommendation: str
    follow_up_months: int | None = Field(description="LDCT interval; None: no LDCT to book")
    driver: str | None = Field(description="tracking_id of the nodule that sets the category")
    reasons: list[str]
    nodules: list[NoduleCategory] = Field(default_factory=list)

    @property
    def code(self) -> str:
        """As written in a report: '4A', or '2S' with the S modifier."""
        return f"{self.category.value}{'S' if self.s_modifier else ''}"


def _size_category(kind: NoduleType, d: int, solid: int) -> tuple[LungRadsCategory, str]:
    """Baseline size rows of the table (d, solid: tenths of a millimetre)."""
    mm = f"{d / 10:.1f} mm"
    if kind == "solid":
        if d < 60:
            return _C.BENIGN, f"solid {mm} < 6 mm (<113 mm3) [2: solid, baseline]"
        if d < 80:
            return _C.PROBABLY_BENIGN, f"solid {mm} >= 6 to < 8 mm [3: solid, baseline]"
        if d < 150:
            return _C.SUSPICIOUS, f"solid {mm} >= 8 to < 15 mm [4A: solid, baseline]"
        return _C.VERY_SUSPICIOUS, f"solid {mm} >= 15 mm (>=1767 mm3) [4B: solid, baseline]"
    if kind == "part-solid":
        if d < 60:
            return _C.BENIGN, f"part-solid {mm} total < 6 mm [2: part-solid, baseline]"
        s = f"solid component {solid / 10:.1f} mm"
        if solid < 60:
            return _C.PROBABLY_BENIGN, f"part-solid {mm} >= 6 mm, {s} < 6 mm [3: baseline]"
        if solid < 80:
            return _C.SUSPICIOUS, f"part-solid, {s} >= 6 to < 8 mm [4A: part-solid, baseline]"
        return _C.VERY_SUSPICIOUS, f"part-solid, {s} >= 8 mm (>=268 mm3) [4B: baseline]"
    if d < 300:
        return _C.BENIGN, f"non-solid {mm} < 30 mm [2: non-solid]"
    return _C.PROBABLY_BENIGN, f"non-solid {mm} >= 30 mm at baseline or new [3: non-solid]"


def _new_category(kind: NoduleType, d: int, solid: int) -> tuple[LungRadsCategory, str]:
    """'new' rows of the table: nodules absent on the prior screening CT."""
    mm = f"new {kind} {d / 10:.1f} mm"
    if kind == "solid":
        if d < 40:
            return _C.BENIGN, f"{mm} < 4 mm (<34 mm3) [2: solid, new]"
        if d < 60:
            return _C.PROBABLY_BENIGN, f"{mm} 4 to < 6 mm [3: solid, new]"
        if d < 80:
            return _C.SUSPICIOUS, f"{mm} 6 to < 8 mm [4A: solid, new]"
        return _C.VERY_SUSPICIOUS, f"{mm} >= 8 mm (>=268 mm3) [4B: solid, new or growing]"
    if kind == "part-solid":
        s = f"new solid component {solid / 10:.1f} mm"
        # The 4B row ("new or growing >= 4 mm solid component") outranks "new < 6 mm total".
        if solid >= 40:
            return _C.VERY_SUSPICIOUS, f"{mm}, {s} >= 4 mm [4B: part-solid, new or growing]"
        if d < 60:
            return _C.PROBABLY_BENIGN, f"{mm} total < 6 mm [3: part-solid, new]"
        return _C.SUSPICIOUS, f"{mm}, {s} < 4 mm [4A: part-solid, new or growing]"
    return _size_category(kind, d, solid)  # non-solid: same rows at baseline and new


def _step_down(
    category: LungRadsCategory, stable_days: int | None
) -> tuple[LungRadsCategory, str | None]:
    """v2022 stepped management for nodules stable (or smaller) at short-interval follow-up:
    4A stable at the 3-month CT -> 3 [3 row]; 3 stable at the 6-month CT -> 2 [2 row].
    Stable 3 + 6 months after a 4A takes both steps."""
    months = f"{(stable_days or 0) / _MONTH_DAYS:.1f} months"
    if category == _C.SUSPICIOUS and _due_by(stable_days, 9):
        return _C.BENIGN, f"stable {months}: 4A stable at 3 months, then 3 stable at 6 -> 2"
    if category == _C.SUSPICIOUS and _due_by(stable_days, 3):
        return _C.PROBABLY_BENIGN, f"stable {months}: 4A stable at 3-month follow-up -> 3"
    if category == _C.PROBABLY_BENIGN and _due_by(stable_days, 6):
        return _C.BENIGN, f"stable {months}: 3 stable at 6-month follow-up -> 2"
    return category, None


def _categorise(n: NoduleState, *, baseline: bool) -> NoduleCategory:
    reasons: list[str] = []

    def done(category: LungRadsCategory, reason: str) -> NoduleCategory:
        reasons.append(reason)
        return NoduleCategory(tracking_id=n.tracking_id, category=category, reasons=reasons)

    if n.benign_features:
        return done(_C.NEGATIVE, "benign calcification or fat-containing nodule [1]")
    if n.proven_benign:
        return done(_C.BENIGN, "proven benign after diagnostic work-up [2]")
    d = _tenths(n.mean_diameter_mm)
    if n.nodule_type == "solid":
        solid = d
    elif n.nodule_type == "ground-glass":
        solid = 0
    elif n.solid_component_mm is not None:
        solid = _tenths(n.solid_component_mm)
    else:
        # The solid component is never larger than the nodule: its size is the safe bound.
        solid = d
        reasons.append("solid component not measured: the total mean diameter is used for it")

    juxtapleural = n.juxtapleural and n.nodule_type == "solid" and d < 100
    existing = not baseline and not n.is_new
    prior = _tenths(n.prior_mean_diameter_mm) if n.prior_mean_diameter_mm is not None else None
    growth = d - prior if existing and prior is not None else None
    growing = growth is not None and growth > LUNG_RADS_GROWTH_MM * 10
    if growing and n.interval_days is not None and n.interval_days > 366:
        reasons.append(
            f"interval {n.interval_days} days exceeds the 12 months of the growth definition: "
            "counted as growth (conservative)"
        )

    if juxtapleural and not growing:
        result = done(_C.BENIGN, f"juxtapleural solid {d / 10:.1f} mm < 10 mm, benign shape [2]")
    elif baseline:
        result = done(*_size_category(n.nodule_type, d, solid))
    elif n.is_new:
        result = done(*_new_category(n.nodule_type, d, solid))
    elif n.slow_growing and n.nodule_type != "ground-glass":
        result = done(
            _C.VERY_SUSPICIOUS,
            "slow growth over multiple screening exams [4B: slow-growing solid or part-solid]",
        )
    elif n.nodule_type == "ground-glass" and (growing or n.slow_growing):
        if d < 300:
            result = done(_C.BENIGN, f"growing non-solid {d / 10:.1f} mm < 30 mm [2]")
        elif n.slow_growing and not growing:
            result = done(_C.BENIGN, f"non-solid {d / 10:.1f} mm >= 30 mm slowly growing [2]")
        else:
            result = done(_C.PROBABLY_BENIGN, f"growing non-solid {d / 10:.1f} mm >= 30 mm [3]")
    elif growing and n.nodule_type == "solid":
        grown = f"solid grew {growth / 10:.1f} mm to {d / 10:.1f} mm"
        if d < 80:
            result = done(_C.SUSPICIOUS, f"{grown} (< 8 mm) [4A: solid, growing]")
        else:
            result = done(_C.VERY_SUSPICIOUS, f"{grown} (>= 8 mm) [4B: solid, new or growing]")
    else:
        result = _existing(n, d, solid, prior, growing, reasons)
    return result


def _existing(
    n: NoduleState, d: int, solid: int, prior: int | None, growing: bool, reasons: list[str]
) -> NoduleCategory:
    """A nodule seen before: part-solid growth, enlargement into a higher size row, or the
    size rows stepped down for stability."""

    def done(category: LungRadsCategory, reason: str) -> NoduleCategory:
        reasons.append(reason)
        return NoduleCategory(tracking_id=n.tracking_id, category=category, reasons=reasons)

    if n.nodule_type == "part-solid":
        prior_solid = n.prior_solid_component_mm
        if prior_solid == 0.0:
            solid_growing = True  # ground-glass on the prior exam: a new solid component
        elif n.solid_component_mm is None or prior_solid is None:
            solid_growing = growing  # unknown solid change: assume it follows the nodule
        else:
            p = _tenths(prior_solid)
            solid_growing = solid - p > LUNG_RADS_GROWTH_MM * 10 or (p == 0 and solid > 0)
        if solid_growing:
            s = f"new or growing solid component {solid / 10:.1f} mm"
            if solid < 40:
                return done(_C.SUSPICIOUS, f"part-solid, {s} < 4 mm [4A: part-solid]")
            return done(_C.VERY_SUSPICIOUS, f"part-solid, {s} >= 4 mm [4B: part-solid]")
    category, reason = _size_category(n.nodule_type, d, solid)
    if prior is None:
        reasons.append("no prior measurement: baseline size thresholds")
        return done(category, reason)
    if d > prior:
        before, _ = _size_category(n.nodule_type, prior, min(solid, prior))
        if category.rank > before.rank:
            # v2022 note "Size thresholds": a nodule that enlarges into a higher size row is
            # reclassified by size even without meeting the growth definition.
            return done(category, f"{reason}; enlarged from {prior / 10:.1f} mm into this row")
    if n.nodule_type == "ground-glass":
        return done(
            _C.BENIGN, f"non-solid {d / 10:.1f} mm, not growing [2: non-solid, or >= 30 mm stable]"
        )
    stepped, why = _step_down(category, n.stable_days)
    if why is not None:
        return done(stepped, f"{reason}; {why}")
    if category == _C.VERY_SUSPICIOUS:
        reasons.append("a 4B nodule returns to 2 only when proven benign after work-up")
    return done(category, f"{reason}; existing, not growing")


def lungrads(
    nodules: Sequence[NoduleState],
    *,
    baseline: bool,
    incomplete_reason: str | None = None,
    s_modifier: bool = False,
) -> LungRadsAssessment:
    """Lung-RADS v2022 category of a screening LDCT.

    baseline: the first screening CT (no prior to compare with); else a follow-up, where
    `is_new` and the prior measurements decide. incomplete_reason: category 0 (prior CT being
    located, lungs not fully evaluable, suspected infection). s_modifier: clinically
    significant non-lung-cancer findings.
    """
    per_nodule = [_categorise(n, baseline=baseline) for n in nodules]
    if incomplete_reason:
        category, driver = _C.INCOMPLETE, None
        reasons = [f"incomplete: {incomplete_reason} [0]"]
    elif not per_nodule:
        category, driver = _C.NEGATIVE, None
        reasons = ["no lung nodules [1]"]
    else:
        ranked = []
        for state, result in zip(nodules, per_nodule, strict=True):
            cat = result.category
            if state.suspicious_features and cat.rank >= _C.PROBABLY_BENIGN.rank:
                cat = _C.VERY_SUSPICIOUS_4X
                result = result.model_copy(
                    update={
                        "category": cat,
                        "reasons": [
                            *result.reasons,
                            "additional features increasing suspicion [4X]",
                        ],
                    }
                )
            ranked.append((cat.rank, state.mean_diameter_mm, result))
        per_nodule = [r for _, _, r in ranked]
        _, _, top = max(ranked, key=lambda item: (item[0], item[1]))
        category, driver = top.category, top.tracking_id
        reasons = [f"{top.tracking_id}: {r}" for r in top.reasons]
    recommendation, months = _MANAGEMENT[category]
    return LungRadsAssessment(
        category=category,
        s_modifier=s_modifier,
        recommendation=recommendation,
        follow_up_months=months,
        driver=driver,
        reasons=reasons,
        nodules=per_nodule,
    )


# ---- Fleischner Society 2017 -------------------------------------------------------------


class FleischnerAssessment(BaseModel):
    """Recommendation for incidental nodules: the most urgent among the nodules (driver)."""

    model_config = ConfigDict(frozen=True)

    recommendation: str
    follow_up_months_range: tuple[int, int] | None = Field(
        description="CT due between these months after this exam; None: no CT to book"
    )
    driver: str | None
    reasons: list[str]

    @property
    def follow_up_months(self) -> int | None:
        """Earliest month of the range: what a due date is computed from."""
        r = self.follow_up_months_range
        return None if r is None else r[0]


_NO_FOLLOW_UP = "No routine follow-up"


# One table cell: recommendation and the CTs it asks for, in months after the first CT that
# showed the nodule (later CTs of "then ..." clauses included).
class _Cell(BaseModel):
    text: str
    schedule: tuple[tuple[int, int], ...] = ()
    row: str
    # True: the table stops after the last CT of the schedule; False: it hands over to
    # individual management (PET/CT, sampling, "the most suspicious nodule").
    ends: bool = True


def _solid_cell(mm: int, *, multiple: bool, high_risk: bool) -> _Cell:
    """Table, "Solid Nodules" (MacMahon 2017): sizes rounded to the nearest mm, so < 6 mm is
    <= 5 mm and 6-8 mm is 6, 7 or 8 mm (Bankier 2017)."""
    which = "multiple" if multiple else "single"
    risk = "high risk" if high_risk else "low risk"
    if mm < 6:
        row = f"solid, {which}, < 6 mm (< 100 mm3), {risk}"
        if high_risk:
            return _Cell(text="Optional CT at 12 months", schedule=((12, 12),), row=row)
        return _Cell(text=_NO_FOLLOW_UP, row=row)
    then = "then CT at 18-24 months" if high_risk else "then consider CT at 18-24 months"
    if mm <= 8:
        row = f"solid, {which}, 6-8 mm (100-250 mm3), {risk}"
        first = (3, 6) if multiple else (6, 12)
        return _Cell(
            text=f"CT at {first[0]}-{first[1]} months, {then}",
            schedule=(first, (18, 24)),
            row=row,
        )
    row = f"solid, {which}, > 8 mm (> 250 mm3)"
    if multiple:
        return _Cell(text=f"CT at 3-6 months, {then}", schedule=((3, 6), (18, 24)), row=row)
    return _Cell(
        text="Consider CT at 3 months, PET/CT, or tissue sampling",
        schedule=((3, 3),),
        row=row,
        ends=False,
    )


def _subsolid_cell(kind: NoduleType, mm: int, solid_mm: int | None, *, multiple: bool) -> _Cell:
    """Table, "Subsolid Nodules" (MacMahon 2017)."""
    if multiple:
        if mm < 6:
            return _Cell(
                text="CT at 3-6 months; if stable, consider CT at 2 and 4 years",
                schedule=((3, 6), (24, 24), (48, 48)),
                row="subsolid, multiple, < 6 mm (< 100 mm3)",
            )
        return _Cell(
            text="CT at 3-6 months; subsequent management based on the most suspicious nodule(s)",
            schedule=((3, 6),),
            row="subsolid, multiple, >= 6 mm (> 100 mm3)",
            ends=False,
        )
    if kind == "ground-glass":
        if mm < 6:
            return _Cell(text=_NO_FOLLOW_UP, row="ground glass, single, < 6 mm (< 100 mm3)")
        return _Cell(
            text="CT at 6-12 months to confirm persistence, then CT every 2 years until 5 years",
            schedule=((6, 12), (30, 36), (54, 60)),
            row="ground glass, single, >= 6 mm (> 100 mm3)",
        )
    if mm < 6:
        return _Cell(text=_NO_FOLLOW_UP, row="part-solid, single, < 6 mm (< 100 mm3)")
    text = (
        "CT at 3-6 months to confirm persistence; if unchanged and the solid component "
        "remains < 6 mm, annual CT for 5 years"
    )
    if solid_mm is not None and solid_mm >= 6:
        text += (
            "; a persistent part-solid nodule with a solid component >= 6 mm is highly suspicious"
        )
    return _Cell(
        text=text,
        schedule=((3, 6), (12, 12), (24, 24), (36, 36), (48, 48), (60, 60)),
        row="part-solid, single, >= 6 mm (> 100 mm3)",
    )


def _next_ct(
    cell: _Cell, days_since_first_seen: int | None
) -> tuple[str, tuple[int, int] | None, str | None]:
    """The next CT of the cell's schedule, in months after this exam. The table counts from
    the CT that first showed the nodule; CTs already done (from two weeks before their
    window) are skipped."""
    if not cell.schedule:
        return cell.text, None, None
    elapsed = (days_since_first_seen or 0) / _MONTH_DAYS
    slack = _SCHEDULE_SLACK_DAYS / _MONTH_DAYS
    for lo, hi in cell.schedule:
        if lo - slack > elapsed:
            if days_since_first_seen is None or days_since_first_seen == 0:
                return cell.text, (lo, hi), None
            start = max(1, round(lo - elapsed))
            window = (start, max(start, round(hi - elapsed)))
            note = f"first seen {elapsed:.1f} months ago: next CT of the schedule"
            return f"{cell.text} (next: CT at {window[0]}-{window[1]} months)", window, note
    if cell.ends:
        return (
            f"{cell.text}; schedule completed: no further routine follow-up",
            None,
            f"first seen {elapsed:.1f} months ago, follow-up schedule completed",
        )
    return (
        f"{cell.text}; persistent beyond the table's follow-up CT: individual management",
        None,
        f"first seen {elapsed:.1f} months ago: past the table's CTs, a radiologist decides",
    )


def fleischner(nodules: Sequence[NoduleState], *, high_risk: bool) -> FleischnerAssessment:
    """Fleischner Society 2017 recommendation for incidental nodules (adults >= 35, no known
    cancer, not immunocompromised, not screening: see choose_guideline).

    Solid and subsolid nodules are assessed by their own table rows, "multiple" when the
    exam shows more than one of that kind, sized by the largest one (the table's rows for
    multiple nodules), and the most urgent recommendation wins. A nodule that grew >= 2 mm
    since the prior CT is flagged for work-up."""
    considered = [n for n in nodules if not n.benign_features and not n.proven_benign]
    if not considered:
        return FleischnerAssessment(
            recommendation=_NO_FOLLOW_UP,
            follow_up_months_range=None,
            driver=None,
            reasons=["no indeterminate pulmonary nodule"],
        )
    candidates: list[tuple[tuple[float, float, float], FleischnerAssessment]] = []
    grown = [
        n
        for n in considered
        if n.prior_mean_diameter_mm is not None
        and not n.is_new
        and _tenths(n.mean_diameter_mm) - _tenths(n.prior_mean_diameter_mm)
        >= FLEISCHNER_GROWTH_MM * 10
    ]
    for n in grown:
        change = lungrads_mean_diameter(n.mean_diameter_mm - (n.prior_mean_diameter_mm or 0.0))
        candidates.append(
            (
                (0.0, 0.0, -n.mean_diameter_mm),
                FleischnerAssessment(
                    recommendation=(
                        "Growth since the prior CT: evaluate as suspicious (PET/CT, tissue "
                        "sampling or resection as appropriate)"
                    ),
                    follow_up_months_range=None,
                    driver=n.tracking_id,
                    reasons=[
                        f"{n.tracking_id}: {n.nodule_type} grew {change:.1f} mm "
                        f"(>= {FLEISCHNER_GROWTH_MM:.0f} mm is growth, Bankier 2017)"
                    ],
                ),
            )
        )
    for group in ("solid", "subsolid"):
        members = [n for n in considered if (n.nodule_type == "solid") == (group == "solid")]
        if not members:
            continue
        # The largest leads; at equal size a part-solid nodule before a ground-glass one.
        lead = max(
            members,
            key=lambda n: (_whole_mm(n.mean_diameter_mm), n.nodule_type == "part-solid"),
        )
        mm = _whole_mm(lead.mean_diameter_mm)
        multiple = len(members) > 1
        if group == "solid":
            cell = _solid_cell(mm, multiple=multiple, high_risk=high_risk)
        else:
            solid_mm = (
                _whole_mm(lead.solid_component_mm) if lead.solid_component_mm is not None else None
            )
            cell = _subsolid_cell(lead.nodule_type, mm, solid_mm, multiple=multiple)
        first_seen = None if lead.is_new else lead.days_since_first_seen
        text, window, note = _next_ct(cell, first_seen)
        reasons = [f"{lead.tracking_id}: {lead.nodule_type} {mm} mm -> table row: {cell.row}"]
        if note:
            reasons.append(f"{lead.tracking_id}: {note}")
        key = (
            (float(window[0]), float(window[1]), -lead.mean_diameter_mm)
            if window is not None
            else (float("inf"), float("inf"), -lead.mean_diameter_mm)
        )
        candidates.append(
            (
                key,
                FleischnerAssessment(
                    recommendation=text,
                    follow_up_months_range=window,
                    driver=lead.tracking_id,
                    reasons=reasons,
                ),
            )
        )
    candidates.sort(key=lambda item: item[0])
    best = candidates[0][1]
    others = [r for _, a in candidates[1:] for r in a.reasons]
    return best.model_copy(update={"reasons": [*best.reasons, *others]})


# ---- which guideline ---------------------------------------------------------------------

Guideline = Literal["lung-rads", "fleischner", "none"]

_SCREENING = re.compile(
    r"\b(screening|screen|lcs|ldct|low[- ]dose\s+(ct|chest\s+ct|computed\s+tomography)"
    # ICD-10-CM Z12.2 (screening for malignant neoplasm of respiratory organs); CPT 71271
    # (CT thorax, low dose for lung cancer screening); HCPCS G0297 (its predecessor).
    r"|z12\.2|71271|g0297)\b",
    re.IGNORECASE,
)
# "no known cancer", "no history of cancer", "without ...", "denies ...": negated, skipped.
_NEGATED = r"(?<!no )(?<!without )(?<!denies )(?<!negative for )"
_KNOWN_CANCER = re.compile(
    rf"\b(metasta\w*|staging|restaging"
    rf"|{_NEGATED}known\s+(primary\s+)?(cancer|malignancy|carcinoma|tumou?r)"
    rf"|{_NEGATED}(history|hx|h/o)\s+of\s+(\w+\s+){{0,3}}"
    r"(cancer|malignancy|carcinoma|lymphoma|melanoma|sarcoma)"
    r"|oncolog\w*\s+follow[- ]?up|on\s+chemo(therapy)?)\b",
    re.IGNORECASE,
)
_IMMUNOCOMPROMISED = re.compile(
    r"\b(immuno(compromised|suppress\w*|deficien\w*)|transplant\w*|neutropeni\w*|hiv|aids)\b",
    re.IGNORECASE,
)


class GuidelineChoice(BaseModel):
    model_config = ConfigDict(frozen=True)

    guideline: Guideline
    reason: str


def guideline_choice(
    indication: str | None,
    *,
    age_years: int | None,
    procedure: str | None = None,
    known_cancer: bool = False,
    immunocompromised: bool = False,
) -> GuidelineChoice:
    """Which nodule guideline applies, and why: Lung-RADS for lung cancer screening exams
    (the indication or the procedure says so); otherwise Fleischner 2017, which does not
    apply under 35 years, with a known primary cancer or with immunosuppression (MacMahon
    2017, scope). Cancer and immunosuppression are read from the text or given as flags."""
    text = " ".join(t for t in (indication, procedure) if t)
    screening = _SCREENING.search(text)
    if screening:
        return GuidelineChoice(
            guideline="lung-rads", reason=f"lung cancer screening exam ({screening.group(0)!r})"
        )
    cancer = _KNOWN_CANCER.search(text)
    if known_cancer or cancer:
        what = f"({cancer.group(0)!r})" if cancer else "(flagged)"
        return GuidelineChoice(
            guideline="none",
            reason=f"known or suspected primary cancer {what}: Fleischner 2017 does not apply",
        )
    immune = _IMMUNOCOMPROMISED.search(text)
    if immunocompromised or immune:
        what = f"({immune.group(0)!r})" if immune else "(flagged)"
        return GuidelineChoice(
            guideline="none",
            reason=f"immunocompromised patient {what}: Fleischner 2017 does not apply",
        )
    if age_years is not None and age_years < 35:
        return GuidelineChoice(
            guideline="none",
            reason=f"patient aged {age_years} < 35 years: Fleischner 2017 does not apply",
        )
    if age_years is None:
        return GuidelineChoice(
            guideline="fleischner",
            reason="incidental nodules (not a screening exam); age unknown: confirm >= 35 years",
        )
    return GuidelineChoice(
        guideline="fleischner", reason=f"incidental nodules, patient aged {age_years}"
    )


def choose_guideline(
    indication: str | None,
    *,
    age_years: int | None,
    procedure: str | None = None,
    known_cancer: bool = False,
    immunocompromised: bool = False,
) -> Guideline:
    """guideline_choice(...).guideline: "lung-rads", "fleischner" or "none"."""
    return guideline_choice(
        indication,
        age_years=age_years,
        procedure=procedure,
        known_cancer=known_cancer,
        immunocompromised=immunocompromised,
    ).guideline


def next_exam_due(exam_date: date, months: int) -> date:
    """exam_date plus whole calendar months; the day is clamped to the end of a shorter
    month (31 August + 6 months = 28 or 29 February)."""
    if months < 0:
        raise InvalidInputError(f"months must be >= 0, got {months}")
    index = exam_date.month - 1 + months
    year, month = exam_date.year + index // 12, index % 12 + 1
    day = min(exam_date.day, calendar.monthrange(year, month)[1])
    return date(year, month, day)
