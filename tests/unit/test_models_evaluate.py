"""Pure parts of the evaluation and release step: calibration grids, strata, model cards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.cards import MODEL_LIMITATIONS, model_card
from models.catalogue import ICH, NODULE
from models.evaluate import (
    HELD_OUT_SEED,
    calibrate,
    noise_band,
    probability_grid,
    score_ich,
    visibility,
)
from pacsflow.errors import InvalidInputError


def test_probability_grid_keeps_a_low_operating_point() -> None:
    # The nodule model runs at 0.1: its own threshold must stay a choice.
    assert probability_grid(0.1) == (0.1, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
    assert probability_grid(0.5) == (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def test_noise_bands() -> None:
    assert [noise_band(v) for v in (3.0, 5.99, 6.0, 8.9, 9.0, 12.0)] == [
        "3-6 HU",
        "3-6 HU",
        "6-9 HU",
        "6-9 HU",
        "9-12 HU",
        "9-12 HU",
    ]


def test_calibration_on_held_out_seeds_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="held-out"):
        calibrate("ich", weights_dir=tmp_path, seed=HELD_OUT_SEED)


def test_ich_card_shows_strata_and_its_failure_modes(tmp_path: Path) -> None:
    stratum = {"studies": 4, "sensitivity": 1.0, "specificity": 0.5}
    evaluation = {
        "description": "4 studies",
        "metrics": {"sensitivity": 0.75},
        "goals": [{"metric": "sensitivity", "op": ">=", "target": 0.95, "value": 0.75}],
        "strata": {"vendor": {"ge": stratum}, "noise_band": {"3-6 HU": stratum}},
    }
    (tmp_path / "ich.eval.json").write_text(json.dumps(evaluation))
    (tmp_path / "ich.calibration.json").write_text(
        json.dumps({"n_studies": 100, "seed": 20000, "chosen": {"threshold": 0.5}})
    )
    card = model_card(ICH, tmp_path)
    assert "| vendor | studies |" in card and "| ge | 4 | 1 | 0.5 | - |" in card
    assert "| 3-6 HU |" in card
    assert "sensitivity >= 0.95: NOT met (0.75)" in card
    assert "Chosen on 100 validation studies" in card
    assert all(line in card for line in MODEL_LIMITATIONS["ich"])
    (tmp_path / "nodule.eval.json").write_text(json.dumps(evaluation))
    assert "| vendor |" not in model_card(NODULE, tmp_path)


def _ich_row(positive: bool, called: bool, visible_ml: float | None = None) -> dict:  # type: ignore[type-arg]
    return {
        "truth_positive": positive,
        "predicted_positive": called,
        "truth_ml": 1.0 if positive else 0.0,
        "predicted_ml": 1.0 if called else 0.0,
        "truth_side": None,
        "truth_visible_ml": visible_ml,
        "study_probability": 0.9 if called else 0.0,
        "seconds": 1.0,
    }


def test_ich_sensitivity_is_also_reported_on_bleeds_the_pixels_show() -> None:
    rows = [
        _ich_row(True, True, visible_ml=2.0),
        _ich_row(True, False, visible_ml=0.5),
        _ich_row(True, False, visible_ml=0.01),  # not in the pixels
        _ich_row(False, False),
    ]
    metrics = score_ich(rows)
    assert metrics["sensitivity"] == pytest.approx(1 / 3, abs=1e-3)  # the goal counts every bleed
    assert metrics["sensitivity_visible"] == pytest.approx(1 / 2, abs=1e-3)
    assert metrics["positives_not_visible"] == 1
    assert [visibility(r) for r in rows] == ["visible", "visible", "not visible", "normal"]
