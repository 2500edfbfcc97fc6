"""Fleischner Society 2017 recommendations, table-driven from MacMahon et al., Radiology 2017
(Table: solid and subsolid, single and multiple, low and high risk)."""

from __future__ import annotations

from typing import Any

import pytest

from pacsflow.pathways.lungrads import NoduleState, fleischner


def _nodules(*specs: dict[str, Any]) -> list[NoduleState]:
    return [NoduleState(tracking_id=f"N{i + 1}", **s) for i, s in enumerate(specs)]


def solid(mm: float, **kw: Any) -> dict[str, Any]:
    return {"nodule_type": "solid", "mean_diameter_mm": mm, **kw}


def ggn(mm: float, **kw: Any) -> dict[str, Any]:
    return {"nodule_type": "ground-glass", "mean_diameter_mm": mm, **kw}


def part_solid(mm: float, solid_mm: float, **kw: Any) -> dict[str, Any]:
    return {
        "nodule_type": "part-solid",
        "mean_diameter_mm": mm,
        "solid_component_mm": solid_mm,
        **kw,
    }


# (case id, nodules, high risk?, expected range, words in the recommendation, driver)
CASES: list[tuple[str, list[dict[str, Any]], bool, tuple[int, int] | None, str, str | None]] = [
    # Solid, single
    ("solid-single-5-low", [solid(5.0)], False, None, "No routine follow-up", "N1"),
    ("solid-single-5-high", [solid(5.0)], True, (12, 12), "Optional CT at 12 months", "N1"),
    ("solid-single-5.4-rounds-to-5", [solid(5.4)], False, None, "No routine follow-up", "N1"),
    ("solid-single-5.5-rounds-to-6", [solid(5.5)], False, (6, 12), "consider CT at 18-24", "N1"),
    ("solid-single-6-low", [solid(6.0)], False, (6, 12), "then consider CT at 18-24 months", "N1"),
    ("solid-single-8-high", [solid(8.0)], True, (6, 12), "then CT at 18-24 months", "N1"),
    ("solid-single-8.4-rounds-to-8", [solid(8.4)], False, (6, 12), "CT at 6-12 months", "N1"),
    (
        "solid-single-8.5-rounds-to-9",
        [solid(8.5)],
        False,
        (3, 3),
        "Consider CT at 3 months, PET/CT, or tissue sampling",
        "N1",
    ),
    ("solid-single-12-high", [solid(12.0)], True, (3, 3), "PET/CT", "N1"),
    # Solid, multiple: sized by the largest
    (
        "solid-multiple-small-low",
        [solid(3.0), solid(4.0)],
        False,
        None,
        "No routine follow-up",
        "N2",
    ),
    (
        "solid-multiple-small-high",
        [solid(3.0), solid(4.0)],
        True,
        (12, 12),
        "Optional CT at 12 months",
        "N2",
    ),
    (
        "solid-multiple-7-low",
        [solid(5.0), solid(7.0)],
        False,
        (3, 6),
        "then consider CT at 18-24 months",
        "N2",
    ),
    (
        "solid-multiple-12-high",
        [solid(12.0), solid(4.0)],
        True,
        (3, 6),
        "then CT at 18-24 months",
        "N1",
    ),
    # Subsolid, single
    ("ggn-single-5", [ggn(5.0)], False, None, "No routine follow-up", "N1"),
    ("ggn-single-6", [ggn(6.0)], False, (6, 12), "every 2 years until 5 years", "N1"),
    ("part-solid-single-5", [part_solid(5.0, 2.0)], False, None, "No routine follow-up", "N1"),
    ("part-solid-single-8", [part_solid(8.0, 3.0)], False, (3, 6), "annual CT for 5 years", "N1"),
    ("part-solid-single-solid-6", [part_solid(9.0, 6.0)], False, (3, 6), "highly suspicious", "N1"),
    # Subsolid, multiple
    (
        "subsolid-multiple-small",
        [ggn(4.0), part_solid(5.0, 2.0)],
        False,
        (3, 6),
        "consider CT at 2 and 4 years",
        "N2",
    ),
    ("subsolid-multiple-7", [ggn(7.0), ggn(4.0)], True, (3, 6), "most suspicious nodule", "N1"),
    # Mixed kinds: the most urgent recommendation wins
    (
        "solid-small-and-part-solid",
        [solid(5.0), part_solid(7.0, 2.0)],
        False,
        (3, 6),
        "3-6 months",
        "N2",
    ),
    ("solid-10-and-ggn-12", [ggn(12.0), solid(10.0)], False, (3, 3), "tissue sampling", "N2"),
    # Benign calcification is not an indeterminate nodule
    (
        "calcified-only",
        [solid(9.0, benign_features=True)],
        True,
        None,
        "No routine follow-up",
        None,
    ),
]


@pytest.mark.parametrize(
    ("specs", "high_risk", "window", "words", "driver"),
    [pytest.param(n, h, r, w, d, id=i) for i, n, h, r, w, d in CASES],
)
def test_fleischner_table(
    specs: list[dict[str, Any]],
    high_risk: bool,
    window: tuple[int, int] | None,
    words: str,
    driver: str | None,
) -> None:
    result = fleischner(_nodules(*specs), high_risk=high_risk)
    assert result.follow_up_months_range == window, result.reasons
    assert words in result.recommendation
    assert result.driver == driver
    assert result.follow_up_months == (None if window is None else window[0])


def test_no_nodules() -> None:
    result = fleischner([], high_risk=True)
    assert result.follow_up_months_range is None and result.driver is None


def test_reasons_name_the_table_row() -> None:
    result = fleischner(_nodules(solid(7.0)), high_risk=True)
    assert "solid, single, 6-8 mm (100-250 mm3), high risk" in result.reasons[0]


def test_growth_of_2_mm_is_flagged_for_work_up() -> None:
    nodules = _nodules(
        solid(4.0),
        solid(8.0, prior_mean_diameter_mm=6.0, interval_days=200, days_since_first_seen=200),
    )
    result = fleischner(nodules, high_risk=False)
    assert result.follow_up_months_range is None
    assert result.driver == "N2"
    assert "Growth" in result.recommendation
    assert any("grew 2.0 mm" in r for r in result.reasons)


def test_growth_under_2_mm_follows_the_table() -> None:
    n = solid(7.9, prior_mean_diameter_mm=6.0, interval_days=200, days_since_first_seen=200)
    result = fleischner(_nodules(n), high_risk=False)
    assert "Growth" not in result.recommendation


def test_follow_up_schedule_counts_from_first_detection() -> None:
    # 6-8 mm single solid, first seen 200 days (6.6 months) ago and stable: the next CT of
    # "then CT at 18-24 months" is due 11-17 months after this exam.
    n = solid(7.0, prior_mean_diameter_mm=7.0, stable_days=200, days_since_first_seen=200)
    result = fleischner(_nodules(n), high_risk=True)
    assert result.follow_up_months_range == (11, 17)


def test_follow_up_schedule_completed() -> None:
    n = solid(7.0, prior_mean_diameter_mm=7.0, stable_days=740, days_since_first_seen=740)
    result = fleischner(_nodules(n), high_risk=True)
    assert result.follow_up_months_range is None
    assert "schedule completed" in result.recommendation


def test_large_solid_nodule_after_its_3_month_ct_is_individual() -> None:
    n = solid(10.0, prior_mean_diameter_mm=10.0, stable_days=95, days_since_first_seen=95)
    result = fleischner(_nodules(n), high_risk=False)
    assert result.follow_up_months_range is None
    assert "individual management" in result.recommendation


def test_new_nodule_on_a_follow_up_starts_its_own_schedule() -> None:
    n = solid(7.0, is_new=True, days_since_first_seen=0)
    assert fleischner(_nodules(n), high_risk=False).follow_up_months_range == (6, 12)
