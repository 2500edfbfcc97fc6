"""Lung-RADS v2022 categories, table-driven from the ACR assessment table, plus the guideline
chooser and due dates."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from pydantic import ValidationError

from pacsflow.errors import InvalidInputError
from pacsflow.pathways.lungrads import (
    LungRadsCategory,
    NoduleState,
    choose_guideline,
    guideline_choice,
    lungrads,
    lungrads_mean_diameter,
    next_exam_due,
    nodule_type,
)

C = LungRadsCategory


def _nodule(**kw: Any) -> NoduleState:
    kw.setdefault("tracking_id", "N1")
    return NoduleState(**kw)


def S(mm: float, **kw: Any) -> dict[str, Any]:  # table shorthand: solid
    return {"nodule_type": "solid", "mean_diameter_mm": mm, **kw}


def PS(mm: float, solid: float | None, **kw: Any) -> dict[str, Any]:  # part-solid
    return {"nodule_type": "part-solid", "mean_diameter_mm": mm, "solid_component_mm": solid, **kw}


def G(mm: float, **kw: Any) -> dict[str, Any]:  # ground-glass
    return {"nodule_type": "ground-glass", "mean_diameter_mm": mm, **kw}


NEW = {"is_new": True}
YEAR = 365

# (case id, baseline exam?, NoduleState fields, expected category); each group names the
# v2022 table row it exercises.
CASES: list[tuple[str, bool, dict[str, Any], LungRadsCategory]] = [
    # Solid, baseline: <6 -> 2, 6-<8 -> 3, 8-<15 -> 4A, >=15 -> 4B
    ("solid-5.9-baseline", True, S(5.9), C.BENIGN),
    ("solid-5.95-rounds-to-6.0", True, S(5.95), C.PROBABLY_BENIGN),
    ("solid-6.0-baseline", True, S(6.0), C.PROBABLY_BENIGN),
    ("solid-7.9-baseline", True, S(7.9), C.PROBABLY_BENIGN),
    ("solid-8.0-baseline", True, S(8.0), C.SUSPICIOUS),
    ("solid-14.9-baseline", True, S(14.9), C.SUSPICIOUS),
    ("solid-15.0-baseline", True, S(15.0), C.VERY_SUSPICIOUS),
    # Part-solid, baseline: total <6 -> 2; solid component <6 -> 3, 6-<8 -> 4A, >=8 -> 4B
    ("part-solid-5.5-baseline", True, PS(5.5, 2.0), C.BENIGN),
    ("part-solid-solid-5.9-baseline", True, PS(10.0, 5.9), C.PROBABLY_BENIGN),
    ("part-solid-solid-6.0-baseline", True, PS(10.0, 6.0), C.SUSPICIOUS),
    ("part-solid-solid-8.0-baseline", True, PS(12.0, 8.0), C.VERY_SUSPICIOUS),
    ("part-solid-unmeasured-solid-is-bounded", True, PS(7.0, None), C.SUSPICIOUS),
    # Non-solid, baseline: <30 -> 2, >=30 -> 3
    ("ggn-29.9-baseline", True, G(29.9), C.BENIGN),
    ("ggn-30.0-baseline", True, G(30.0), C.PROBABLY_BENIGN),
    # Solid, new: <4 -> 2, 4-<6 -> 3, 6-<8 -> 4A, >=8 -> 4B
    ("solid-new-3.9", False, S(3.9, **NEW), C.BENIGN),
    ("solid-new-4.0", False, S(4.0, **NEW), C.PROBABLY_BENIGN),
    ("solid-new-6.0", False, S(6.0, **NEW), C.SUSPICIOUS),
    ("solid-new-8.0", False, S(8.0, **NEW), C.VERY_SUSPICIOUS),
    # Part-solid, new: total <6 -> 3; solid component <4 -> 4A, >=4 -> 4B
    ("part-solid-new-5", False, PS(5.0, 2.0, **NEW), C.PROBABLY_BENIGN),
    ("part-solid-new-solid-3.9", False, PS(8.0, 3.9, **NEW), C.SUSPICIOUS),
    ("part-solid-new-solid-4.0", False, PS(8.0, 4.0, **NEW), C.VERY_SUSPICIOUS),
    # Non-solid, new: <30 -> 2, >=30 -> 3
    ("ggn-new-10", False, G(10.0, **NEW), C.BENIGN),
    ("ggn-new-31", False, G(31.0, **NEW), C.PROBABLY_BENIGN),
    # Solid, growing (> 1.5 mm within 12 months): <8 -> 4A, >=8 -> 4B
    (
        "solid-growing-1.6-to-6.6",
        False,
        S(6.6, prior_mean_diameter_mm=5.0, interval_days=YEAR),
        C.SUSPICIOUS,
    ),
    (
        "solid-growing-to-8.6",
        False,
        S(8.6, prior_mean_diameter_mm=7.0, interval_days=YEAR),
        C.VERY_SUSPICIOUS,
    ),
    # Exactly 1.5 mm is not growth; 5.0 -> 6.5 still enters the 6-<8 row ("size thresholds")
    (
        "solid-1.5-not-growth-but-new-size-row",
        False,
        S(6.5, prior_mean_diameter_mm=5.0, interval_days=YEAR, stable_days=YEAR),
        C.PROBABLY_BENIGN,
    ),
    (
        "solid-1.4-same-row",
        False,
        S(5.4, prior_mean_diameter_mm=4.0, interval_days=YEAR, stable_days=YEAR),
        C.BENIGN,
    ),
    # Part-solid, new or growing solid component: <4 -> 4A, >=4 -> 4B
    (
        "part-solid-growing-solid-3.5",
        False,
        PS(10.0, 3.5, prior_mean_diameter_mm=10.0, prior_solid_component_mm=1.5),
        C.SUSPICIOUS,
    ),
    (
        "part-solid-growing-solid-5",
        False,
        PS(12.0, 5.0, prior_mean_diameter_mm=12.0, prior_solid_component_mm=3.0),
        C.VERY_SUSPICIOUS,
    ),
    (
        "ggn-develops-solid-component",
        False,
        PS(10.0, 3.0, prior_mean_diameter_mm=10.0, prior_solid_component_mm=0.0),
        C.SUSPICIOUS,
    ),
    (
        "part-solid-stable-solid-component",
        False,
        PS(10.0, 3.0, prior_mean_diameter_mm=10.0, prior_solid_component_mm=3.0, stable_days=200),
        C.BENIGN,
    ),
    # Non-solid follow-up: growing <30 -> 2; growing to >=30 -> 3; >=30 stable or slow -> 2
    ("ggn-growing-under-30", False, G(12.0, prior_mean_diameter_mm=9.0), C.BENIGN),
    ("ggn-growing-over-30", False, G(32.0, prior_mean_diameter_mm=29.0), C.PROBABLY_BENIGN),
    ("ggn-35-stable", False, G(35.0, prior_mean_diameter_mm=35.0, stable_days=YEAR), C.BENIGN),
    (
        "ggn-36-slowly-growing",
        False,
        G(36.0, prior_mean_diameter_mm=35.0, slow_growing=True),
        C.BENIGN,
    ),
    # Stepped management: 4A stable at 3 months -> 3, stable 6 more -> 2; 3 stable at 6 -> 2
    (
        "4A-stable-3-months",
        False,
        S(10.0, prior_mean_diameter_mm=10.0, stable_days=90),
        C.PROBABLY_BENIGN,
    ),
    (
        "4A-stable-2-months",
        False,
        S(10.0, prior_mean_diameter_mm=10.0, stable_days=60),
        C.SUSPICIOUS,
    ),
    ("4A-stable-9-months", False, S(10.0, prior_mean_diameter_mm=10.2, stable_days=275), C.BENIGN),
    ("3-stable-6-months", False, S(7.0, prior_mean_diameter_mm=7.0, stable_days=182), C.BENIGN),
    (
        "3-stable-4-months",
        False,
        S(7.0, prior_mean_diameter_mm=7.0, stable_days=120),
        C.PROBABLY_BENIGN,
    ),
    (
        "4B-stable-stays",
        False,
        S(16.0, prior_mean_diameter_mm=16.0, stable_days=YEAR),
        C.VERY_SUSPICIOUS,
    ),
    ("4B-proven-benign", False, S(16.0, prior_mean_diameter_mm=16.0, proven_benign=True), C.BENIGN),
    # Slow growth over several exams: solid / part-solid -> 4B
    (
        "solid-slow-growing",
        False,
        S(7.0, prior_mean_diameter_mm=6.5, slow_growing=True),
        C.VERY_SUSPICIOUS,
    ),
    # Descriptors: benign calcification -> 1; juxtapleural < 10 mm -> 2 unless growing; 4X
    ("benign-calcification", True, S(12.0, benign_features=True), C.NEGATIVE),
    ("juxtapleural-9-baseline", True, S(9.0, juxtapleural=True), C.BENIGN),
    (
        "juxtapleural-growing",
        False,
        S(9.0, prior_mean_diameter_mm=7.0, juxtapleural=True),
        C.VERY_SUSPICIOUS,
    ),
    ("suspicious-features-4X", True, S(7.0, suspicious_features=True), C.VERY_SUSPICIOUS_4X),
    ("suspicious-features-on-2-stays-2", True, S(4.0, suspicious_features=True), C.BENIGN),
    # Follow-up exam, nodule seen before but no measurement given: baseline thresholds
    ("existing-without-prior-size", False, S(7.0), C.PROBABLY_BENIGN),
]


@pytest.mark.parametrize(
    ("baseline", "fields", "expected"),
    [pytest.param(b, f, e, id=i) for i, b, f, e in CASES],
)
def test_lung_rads_table(
    baseline: bool, fields: dict[str, Any], expected: LungRadsCategory
) -> None:
    result = lungrads([_nodule(**fields)], baseline=baseline)
    assert result.category == expected, result.reasons
    assert result.driver == "N1"
    assert result.reasons  # every category says why
    assert result.nodules[0].category == expected


@pytest.mark.parametrize(
    ("category_fields", "months", "words"),
    [
        ({"nodule_type": "solid", "mean_diameter_mm": 4.0}, 12, "12-month"),
        ({"nodule_type": "solid", "mean_diameter_mm": 7.0}, 6, "6-month LDCT"),
        ({"nodule_type": "solid", "mean_diameter_mm": 9.0}, 3, "3-month LDCT"),
        ({"nodule_type": "solid", "mean_diameter_mm": 20.0}, None, "tissue sampling"),
        (
            {"nodule_type": "solid", "mean_diameter_mm": 9.0, "suspicious_features": True},
            None,
            "Diagnostic chest CT",
        ),
    ],
)
def test_management_and_interval(
    category_fields: dict[str, Any], months: int | None, words: str
) -> None:
    result = lungrads([_nodule(**category_fields)], baseline=True)
    assert result.follow_up_months == months
    assert words in result.recommendation


def test_no_nodules_is_category_1_with_annual_screening() -> None:
    result = lungrads([], baseline=True)
    assert result.category == C.NEGATIVE
    assert result.follow_up_months == 12
    assert result.driver is None


def test_incomplete_exam_is_category_0() -> None:
    nodules = [_nodule(nodule_type="solid", mean_diameter_mm=9.0)]
    result = lungrads(nodules, baseline=False, incomplete_reason="prior CT being located")
    assert result.category == C.INCOMPLETE
    assert result.follow_up_months is None
    assert result.driver is None
    assert "prior CT being located" in result.reasons[0]
    assert result.nodules[0].category == C.SUSPICIOUS  # still assessed, for the reader


def test_exam_category_is_the_most_suspicious_nodule() -> None:
    nodules = [
        _nodule(tracking_id="N1", nodule_type="solid", mean_diameter_mm=5.0),
        _nodule(tracking_id="N2", nodule_type="solid", mean_diameter_mm=9.0),
        _nodule(tracking_id="N3", nodule_type="ground-glass", mean_diameter_mm=20.0),
    ]
    result = lungrads(nodules, baseline=True)
    assert result.category == C.SUSPICIOUS
    assert result.driver == "N2"
    assert [n.category for n in result.nodules] == [C.BENIGN, C.SUSPICIOUS, C.BENIGN]
    assert all(r.startswith("N2:") for r in result.reasons)


def test_equal_categories_the_larger_nodule_drives() -> None:
    nodules = [
        _nodule(tracking_id="N1", nodule_type="solid", mean_diameter_mm=6.5),
        _nodule(tracking_id="N2", nodule_type="solid", mean_diameter_mm=7.5),
    ]
    assert lungrads(nodules, baseline=True).driver == "N2"


def test_4x_outranks_4b() -> None:
    nodules = [
        _nodule(tracking_id="N1", nodule_type="solid", mean_diameter_mm=20.0),
        _nodule(
            tracking_id="N2", nodule_type="solid", mean_diameter_mm=7.0, suspicious_features=True
        ),
    ]
    result = lungrads(nodules, baseline=True)
    assert (result.category, result.driver) == (C.VERY_SUSPICIOUS_4X, "N2")


def test_s_modifier_in_the_code() -> None:
    result = lungrads([], baseline=True, s_modifier=True)
    assert result.code == "1S"
    assert (
        lungrads([_nodule(nodule_type="solid", mean_diameter_mm=9.0)], baseline=True).code == "4A"
    )


def test_growth_over_more_than_a_year_is_counted_and_said() -> None:
    n = _nodule(
        nodule_type="solid", mean_diameter_mm=7.0, prior_mean_diameter_mm=5.0, interval_days=500
    )
    result = lungrads([n], baseline=False)
    assert result.category == C.SUSPICIOUS
    assert any("12 months" in r for r in result.reasons)


def test_baseline_ignores_is_new() -> None:
    n = _nodule(nodule_type="solid", mean_diameter_mm=5.0, is_new=True)
    assert lungrads([n], baseline=True).category == C.BENIGN  # new 5 mm would be 3


def test_unmeasured_solid_component_is_said() -> None:
    n = _nodule(nodule_type="part-solid", mean_diameter_mm=9.0)
    result = lungrads([n], baseline=True)
    assert result.category == C.VERY_SUSPICIOUS
    assert any("not measured" in r for r in result.reasons)


def test_solid_component_larger_than_nodule_is_refused() -> None:
    with pytest.raises(ValidationError, match="solid component"):
        _nodule(nodule_type="part-solid", mean_diameter_mm=6.0, solid_component_mm=8.0)


@pytest.mark.parametrize(
    ("mm", "reported"), [(5.95, 6.0), (5.94, 5.9), (0.05, 0.1), (7.25, 7.3), (12.0, 12.0)]
)
def test_mean_diameter_rounds_half_up_to_one_decimal(mm: float, reported: float) -> None:
    assert lungrads_mean_diameter(mm) == reported


@pytest.mark.parametrize(
    ("subtype", "expected"),
    [
        ("solid", "solid"),
        ("Part-Solid", "part-solid"),
        ("part solid", "part-solid"),
        ("GGN", "ground-glass"),
        ("non-solid", "ground-glass"),
        ("ground_glass", "ground-glass"),
    ],
)
def test_nodule_type_aliases(subtype: str, expected: str) -> None:
    assert nodule_type(subtype) == expected


@pytest.mark.parametrize("subtype", ["calcified", "", None])
def test_unknown_nodule_type_is_refused(subtype: str | None) -> None:
    with pytest.raises(InvalidInputError, match="unknown nodule type"):
        nodule_type(subtype)


# ---- which guideline ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("indication", "procedure", "age", "expected"),
    [
        ("Lung cancer screening, annual", None, 62, "lung-rads"),
        ("LDCT f/u", None, 70, "lung-rads"),
        ("LCS baseline, 30 pack-years", None, 58, "lung-rads"),
        (None, "CT CHEST LOW DOSE CT LUNG SCREENING", 66, "lung-rads"),
        ("Z12.2", None, 55, "lung-rads"),
        (None, "71271", 55, "lung-rads"),
        ("cough, nodule on chest radiograph", None, 60, "fleischner"),
        ("chest pain, calcs?", "CT CHEST W CONTRAST", 60, "fleischner"),
        ("no known cancer, dyspnoea", None, 60, "fleischner"),
        ("cough, nodule on chest radiograph", None, 30, "none"),
        ("staging colon carcinoma", None, 60, "none"),
        ("history of breast cancer, cough", None, 60, "none"),
        ("metastatic melanoma restaging", None, 60, "none"),
        ("renal transplant recipient, fever", None, 60, "none"),
        (None, None, None, "fleischner"),
    ],
)
def test_choose_guideline(
    indication: str | None, procedure: str | None, age: int | None, expected: str
) -> None:
    choice = guideline_choice(indication, age_years=age, procedure=procedure)
    assert choice.guideline == expected, choice.reason
    assert choice.reason
    assert choose_guideline(indication, age_years=age, procedure=procedure) == expected


def test_fleischner_does_not_apply_says_why() -> None:
    assert "35" in guideline_choice("incidental nodule", age_years=30).reason
    flagged = guideline_choice("incidental nodule", age_years=60, known_cancer=True)
    assert flagged.guideline == "none" and "cancer" in flagged.reason
    assert choose_guideline("incidental nodule", age_years=60, known_cancer=True) == "none"
    immune = guideline_choice(None, age_years=60, immunocompromised=True)
    assert immune.guideline == "none" and "immunocompromised" in immune.reason
    assert "age unknown" in guideline_choice("nodule", age_years=None).reason


@pytest.mark.parametrize(
    ("exam", "months", "due"),
    [
        (date(2025, 1, 15), 6, date(2025, 7, 15)),
        (date(2025, 1, 15), 12, date(2026, 1, 15)),
        (date(2024, 8, 31), 6, date(2025, 2, 28)),
        (date(2023, 8, 31), 6, date(2024, 2, 29)),
        (date(2025, 11, 30), 3, date(2026, 2, 28)),
        (date(2025, 3, 10), 0, date(2025, 3, 10)),
    ],
)
def test_next_exam_due_adds_calendar_months(exam: date, months: int, due: date) -> None:
    assert next_exam_due(exam, months) == due


def test_next_exam_due_refuses_negative_months() -> None:
    with pytest.raises(InvalidInputError):
        next_exam_due(date(2025, 1, 1), -1)


def test_due_date_from_an_assessment() -> None:
    result = lungrads([_nodule(nodule_type="solid", mean_diameter_mm=7.0)], baseline=True)
    assert result.follow_up_months is not None
    assert next_exam_due(date(2025, 5, 31), result.follow_up_months) == date(2025, 11, 30)
