"""Study-level call of the ICH model: lesion and study probabilities, and the choice of the
operating point on validation studies (models.ich.aggregate)."""

from __future__ import annotations

import pytest

from models.ich.aggregate import (
    REVIEW_LOW,
    Candidate,
    Grid,
    OperatingPoint,
    ValidationStudy,
    choose_operating_point,
    lesion_probability,
    outcome,
    study_probability,
)
from pacsflow.errors import InvalidInputError

OP = OperatingPoint(threshold=0.5, min_probability=0.8, min_volume_ml=0.3, max_median_hu=90.0)


def test_a_finding_is_at_or_above_one_half_and_anything_else_under() -> None:
    finding = Candidate(volume_ml=2.0, score=0.8, median_hu=60.0)
    assert OP.is_finding(finding)
    assert lesion_probability(finding, OP) == 0.5
    assert lesion_probability(Candidate(2.0, 1.0, 60.0), OP) == 1.0
    assert lesion_probability(Candidate(2.0, 0.79, 60.0), OP) < 0.5
    assert lesion_probability(Candidate(0.29, 1.0, 60.0), OP) < 0.5


def test_dense_components_carry_no_evidence() -> None:
    dense = Candidate(volume_ml=5.0, score=1.0, median_hu=120.0)
    assert not OP.is_finding(dense)
    assert lesion_probability(dense, OP) == 0.0


def test_specks_stay_out_of_the_review_band_near_misses_do_not() -> None:
    speck = Candidate(volume_ml=0.1, score=1.0, median_hu=60.0)
    near_miss = Candidate(volume_ml=0.28, score=1.0, median_hu=60.0)
    assert lesion_probability(speck, OP) < REVIEW_LOW
    assert REVIEW_LOW <= lesion_probability(near_miss, OP) < 0.5


def test_study_probability_is_the_highest_lesion_probability() -> None:
    cands = [Candidate(0.1, 1.0, 60.0), Candidate(3.0, 0.9, 60.0), Candidate(9.0, 1.0, 150.0)]
    assert study_probability(cands, OP) == lesion_probability(cands[1], OP)
    assert study_probability([], OP) == 0.0


def test_operating_point_round_trips_through_the_config_extra() -> None:
    op = OperatingPoint.from_extra(0.4, OP.as_extra())
    assert op == OperatingPoint(0.4, 0.8, 0.3, 90.0)
    assert OperatingPoint.from_extra(0.5, {}).max_median_hu is None


def _study(positive: bool, *cands: Candidate) -> ValidationStudy:
    return ValidationStudy(positive=positive, candidates={0.5: list(cands)})


def test_outcome_counts_calls_and_the_review_band() -> None:
    studies = [
        _study(True, Candidate(2.0, 0.95, 60.0)),
        _study(True, Candidate(0.1, 0.95, 60.0)),  # missed: too small
        _study(False, Candidate(0.28, 1.0, 60.0)),  # near miss: review band
        _study(False),
    ]
    o = outcome(studies, OP)
    assert (o.sensitivity, o.specificity, o.negatives_in_review_band) == (0.5, 1.0, 0.5)


def test_the_chosen_point_separates_blood_from_dense_false_positives() -> None:
    studies = [
        _study(True, Candidate(1.0, 0.99, 65.0)),
        _study(True, Candidate(0.6, 0.95, 70.0)),
        _study(False, Candidate(0.8, 1.0, 97.0)),  # dense: excluded by a tighter HU limit
        _study(False, Candidate(0.06, 0.9, 60.0)),  # speck: excluded by the volume minimum
    ]
    grid = Grid(
        thresholds=(0.5,),
        min_probabilities=(0.5, 0.9),
        min_volumes_ml=(0.05, 0.1, 0.5),
        max_median_hu=(90.0, 100.0),
    )
    best, outcomes = choose_operating_point(studies, grid)
    assert (best.sensitivity, best.specificity) == (1.0, 1.0)
    assert best.point.max_median_hu == 90.0 and best.point.min_volume_ml == 0.1
    assert len(outcomes) == 12


def test_choosing_needs_studies() -> None:
    with pytest.raises(InvalidInputError, match="at least one"):
        choose_operating_point([])
