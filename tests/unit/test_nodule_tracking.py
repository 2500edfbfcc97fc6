"""Nodule matching across exams (alignment + assignment), growth, doubling time, identity."""

from __future__ import annotations

import math
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest

from pacsflow.domain import Finding, Location
from pacsflow.errors import InvalidInputError
from pacsflow.pathways.lungrads import LungRadsCategory, lungrads
from pacsflow.pathways.nodule_tracking import (
    Exam,
    NoduleObservation,
    estimate_offset,
    growth_between,
    label_findings,
    match_nodules,
    track_history,
    tracking_uid,
    volume_doubling_time,
)

SHIFT = (12.0, -8.0, 35.0)


def nodule(
    x: float,
    y: float,
    z: float,
    d: float,
    *,
    subtype: str = "solid",
    side: str | None = None,
    volume_mm3: float | None = None,
) -> Finding:
    volume = volume_mm3 if volume_mm3 is not None else math.pi / 6.0 * d**3
    return Finding(
        kind="nodule",
        subtype=subtype,
        probability=0.9,
        volume_ml=volume / 1000.0,
        diameter_mm=round(d * 1.15, 2),
        mean_diameter_mm=d,
        centroid_mm=(x, y, z),
        location=Location(side=side),
    )


def moved(f: Finding, shift: tuple[float, float, float], *, jitter: float = 0.0) -> Finding:
    assert f.centroid_mm is not None
    rng = np.random.default_rng(int(abs(f.centroid_mm[0]) * 100))
    c = np.asarray(f.centroid_mm) + np.asarray(shift) + rng.uniform(-jitter, jitter, 3)
    return f.model_copy(update={"centroid_mm": tuple(c.tolist())})


PRIOR = [
    nodule(-80.0, 20.0, -150.0, 6.0, side="right"),
    nodule(75.0, 40.0, -120.0, 9.0, side="left"),
    nodule(-60.0, -30.0, -210.0, 4.5, side="right"),
    nodule(90.0, -10.0, -250.0, 12.0, subtype="ground-glass", side="left"),
]


def pairs(matches: list) -> set[tuple[int, int]]:
    return {(m.current_index, m.prior_index) for m in matches}


def test_shifted_exam_matches_every_nodule() -> None:
    order = [2, 0, 3, 1]  # the model lists them in another order on the new exam
    current = [moved(PRIOR[j], SHIFT, jitter=0.8) for j in order]
    alignment = estimate_offset(current, PRIOR)
    assert alignment.n_coincident == 4
    assert np.allclose(alignment.offset_mm, SHIFT, atol=1.0)
    assert pairs(match_nodules(current, PRIOR)) == {(i, j) for i, j in enumerate(order)}


def test_new_nodule_stays_unmatched() -> None:
    current = [moved(f, SHIFT) for f in PRIOR] + [nodule(40.0, 60.0, -90.0, 5.0, side="left")]
    matches = match_nodules(current, PRIOR)
    assert pairs(matches) == {(i, i) for i in range(4)}
    assert 4 not in {m.current_index for m in matches}


def test_vanished_nodule_stays_unmatched() -> None:
    current = [moved(PRIOR[j], SHIFT) for j in (0, 1, 3)]
    assert pairs(match_nodules(current, PRIOR)) == {(0, 0), (1, 1), (2, 3)}


def test_vanished_and_new_with_the_rest_shifted() -> None:
    new = nodule(-85.0 + SHIFT[0], 25.0 + SHIFT[1], -140.0 + SHIFT[2], 7.0, side="right")
    current = [moved(PRIOR[j], SHIFT) for j in (1, 2, 3)] + [new]
    # The new nodule lies 12 mm from where the vanished one (prior 0) would be after
    # alignment: outside a 5 mm + half-diameter gate.
    matches = match_nodules(current, PRIOR, tolerance_mm=5.0)
    assert pairs(matches) == {(0, 1), (1, 2), (2, 3)}


def test_two_close_nodules_are_not_swapped() -> None:
    # 7 mm apart; the patient moved 14 mm along x: A's new position is B's old one, and
    # A's own old position is outside the gate (10 mm + half the diameter).
    a, b = nodule(0.0, 0.0, -100.0, 6.0), nodule(7.0, 0.0, -100.0, 9.0)
    far = [nodule(-90.0, 30.0, -160.0, 5.0), nodule(80.0, -20.0, -220.0, 7.0)]
    prior = [a, b, *far]
    shift = (14.0, 0.0, 0.0)
    current = [moved(f, shift) for f in (b, a, *far)]
    unaligned = match_nodules(current[:2], prior[:2], offset_mm=(0.0, 0.0, 0.0))
    assert pairs(unaligned) == {(1, 1)}  # what matching without alignment would do: A -> B
    assert pairs(match_nodules(current, prior)) == {(0, 1), (1, 0), (2, 2), (3, 3)}
    # The two alone: the offset that makes both coincide wins.
    assert pairs(match_nodules(current[:2], prior[:2])) == {(0, 1), (1, 0)}


def test_one_nodule_in_common_prefers_the_smaller_shift() -> None:
    # The prior nodule grew from 6 to 8 mm; a new 5 mm one appeared 110 mm away. Both
    # pairings explain one nodule; the size of the new one is closer to the prior's, but
    # a 110 mm shift is far less likely than 5 mm.
    prior = [nodule(-50.0, 0.0, -100.0, 6.0)]
    current = [nodule(-45.0, 0.0, -100.0, 8.0), nodule(60.0, 0.0, -100.0, 5.0)]
    assert pairs(match_nodules(current, prior)) == {(0, 0)}


def test_nodules_are_not_matched_across_the_midline() -> None:
    prior = [nodule(5.0, 0.0, -100.0, 6.0, side="right")]
    current = [nodule(7.0, 0.0, -100.0, 6.0, side="left")]
    assert match_nodules(current, prior) == []


def test_implausible_size_change_is_not_a_match() -> None:
    prior = [nodule(0.0, 0.0, -100.0, 4.0)]
    current = [nodule(1.0, 0.0, -100.0, 20.0)]
    assert match_nodules(current, prior) == []


def test_given_offset_is_used() -> None:
    current = [moved(f, SHIFT) for f in PRIOR]
    assert pairs(match_nodules(current, PRIOR, offset_mm=SHIFT)) == {(i, i) for i in range(4)}
    assert match_nodules(current, PRIOR, offset_mm=(0.0, 0.0, 0.0), tolerance_mm=2.0) == []


def test_empty_inputs() -> None:
    assert match_nodules([], PRIOR) == []
    assert match_nodules(PRIOR, []) == []
    assert estimate_offset([], PRIOR).n_coincident == 0


def test_missing_centroid_is_refused() -> None:
    bad = PRIOR[0].model_copy(update={"centroid_mm": None})
    with pytest.raises(InvalidInputError, match="centroid"):
        match_nodules([bad], PRIOR)


# ---- growth --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("v1", "v2", "days", "expected"),
    [
        (100.0, 200.0, 400, 400.0),
        (100.0, 400.0, 400, 200.0),
        (250.0, 1000.0, 180, 90.0),
    ],
)
def test_volume_doubling_time_is_analytic(v1: float, v2: float, days: int, expected: float) -> None:
    vdt = volume_doubling_time(v1, v2, days)
    assert vdt is not None and vdt == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("v1", "v2", "days"),
    [
        (100.0, 90.0, 365),  # shrinking
        (100.0, 100.0, 365),  # same
        (100.0, 125.0, 365),  # +25 %: within measurement noise
        (100.0, 300.0, 0),  # no time
    ],
)
def test_no_doubling_time_without_growth_beyond_noise(v1: float, v2: float, days: int) -> None:
    assert volume_doubling_time(v1, v2, days) is None


def _obs(day: int, d: float, v: float | None, uid: str) -> NoduleObservation:
    return NoduleObservation(
        study_uid=uid,
        study_date=date(2024, 1, 1) + timedelta(days=day),
        finding_index=0,
        nodule_type="solid",
        mean_diameter_mm=d,
        volume_mm3=v,
        centroid_mm=(0.0, 0.0, 0.0),
    )


def test_growth_between_two_observations() -> None:
    g = growth_between(_obs(0, 6.0, 113.1, "1.1"), _obs(365, 7.6, 229.8, "1.2"))
    assert g.interval_days == 365
    assert g.mean_diameter_change_mm == pytest.approx(1.6)
    assert g.volume_change_mm3 == pytest.approx(116.7)
    assert g.volume_change_pct == pytest.approx(103.18, abs=0.01)
    assert g.volume_stable is False
    assert g.vdt_days == pytest.approx(365 * math.log(2) / math.log(229.8 / 113.1), abs=0.1)
    stable = growth_between(_obs(0, 6.0, 113.1, "1.1"), _obs(365, 6.1, 120.0, "1.2"))
    assert stable.volume_stable is True and stable.vdt_days is None
    unknown = growth_between(_obs(0, 6.0, None, "1.1"), _obs(365, 6.1, 120.0, "1.2"))
    assert unknown.vdt_days is None and unknown.volume_stable is None


# ---- history -------------------------------------------------------------------------------


def _exponential_history(
    doubling_days: float, days: list[int], shifts: list[tuple[float, float, float]]
) -> list[Exam]:
    """One growing solid nodule (V = V0 * 2 ** (t / VDT)) beside a stable ground-glass one,
    each exam shifted and listing the nodules in another order."""
    exams = []
    for k, (day, shift) in enumerate(zip(days, shifts, strict=True)):
        v = 120.0 * 2.0 ** (day / doubling_days)
        d = (6.0 * v / math.pi) ** (1.0 / 3.0)
        growing = nodule(-70.0, 10.0, -180.0, d, side="right", volume_mm3=v)
        stable = nodule(60.0, 30.0, -130.0, 14.0, subtype="ground-glass", side="left")
        found = [moved(growing, shift), moved(stable, shift)]
        exams.append(
            Exam(
                study_uid=f"1.2.826.0.1.{k + 1}",
                study_date=date(2023, 3, 1) + timedelta(days=day),
                findings=found if k % 2 == 0 else found[::-1],
            )
        )
    return exams


def test_vdt_within_one_percent_of_exponential_growth() -> None:
    exams = _exponential_history(
        300.0, [0, 180, 400], [(0.0, 0.0, 0.0), (6.0, -4.0, 22.0), (-3.0, 5.0, -40.0)]
    )
    tracked = track_history(exams, patient_id="P1")
    assert len(tracked) == 2
    growing = next(t for t in tracked if t.state is not None and t.state.nodule_type == "solid")
    assert [o.study_uid for o in growing.observations] == [e.study_uid for e in exams]
    assert growing.vdt_days == pytest.approx(300.0, rel=0.01)
    assert growing.doubling_time_days == growing.vdt_days
    assert growing.volume_change_pct == pytest.approx(100.0 * (2.0 ** (400 / 300) - 1.0), abs=0.01)
    assert growing.growth_vs_previous is not None
    assert growing.growth_vs_previous.vdt_days == pytest.approx(300.0, rel=0.01)
    assert growing.growth_vs_previous.interval_days == 220
    ggn = next(t for t in tracked if t is not growing)
    assert ggn.vdt_days is None and ggn.growth_vs_first is not None
    assert ggn.growth_vs_first.volume_stable is True


def test_state_for_the_guidelines() -> None:
    exams = _exponential_history(
        300.0, [0, 180, 400], [(0.0, 0.0, 0.0), (6.0, -4.0, 22.0), (-3.0, 5.0, -40.0)]
    )
    tracked = track_history(exams, patient_id="P1")
    growing = next(t for t in tracked if t.state is not None and t.state.nodule_type == "solid")
    state = growing.state
    assert state is not None
    assert state.is_new is False
    assert state.interval_days == 220
    assert state.days_since_first_seen == 400
    assert state.prior_mean_diameter_mm == pytest.approx(growing.observations[1].mean_diameter_mm)
    # 6.1 mm -> 7.0 mm -> 8.3 mm: 1.3 mm since the previous exam is not growth, 2.2 mm
    # over three exams is slow growth (v2022: 4B)
    assert [round(o.mean_diameter_mm, 1) for o in growing.observations] == [6.1, 7.0, 8.3]
    assert state.stable_days == 220
    assert state.slow_growing
    result = lungrads([t.state for t in tracked if t.state is not None], baseline=False)
    assert result.category == LungRadsCategory.VERY_SUSPICIOUS
    assert result.driver == growing.tracking_id


def test_new_vanished_and_missed_nodules_in_a_history() -> None:
    a = nodule(-70.0, 10.0, -180.0, 7.0, side="right")
    b = nodule(60.0, 30.0, -130.0, 9.0, side="left")
    c = nodule(50.0, -40.0, -220.0, 5.0, side="left")  # vanishes after the first exam
    d = nodule(-40.0, 50.0, -100.0, 6.0, side="right")  # new on the last exam
    day0 = date(2022, 5, 1)
    exams = [
        Exam(study_uid="1.1", study_date=day0, findings=[a, b, c]),
        # b missed on the second exam
        Exam(study_uid="1.2", study_date=day0 + timedelta(days=365), findings=[moved(a, SHIFT)]),
        Exam(
            study_uid="1.3",
            study_date=day0 + timedelta(days=730),
            findings=[moved(d, SHIFT), moved(b, SHIFT), moved(a, SHIFT)],
        ),
    ]
    tracked = track_history(exams, patient_id="P9")
    by_first = {(t.first_seen.study_uid, t.first_seen.finding_index): t for t in tracked}
    ta, tb, tc, td = by_first["1.1", 0], by_first["1.1", 1], by_first["1.1", 2], by_first["1.3", 0]
    assert [o.study_uid for o in ta.observations] == ["1.1", "1.2", "1.3"]
    assert [o.study_uid for o in tb.observations] == ["1.1", "1.3"]  # picked up again
    assert tc.in_latest is False and tc.state is None
    assert tc.current is None and tc.previous is None and tc.last_seen.study_uid == "1.1"
    assert td.state is not None and td.state.is_new
    assert td.has_priors and td.previous is None and td.current is not None
    assert td.current.finding is not None and td.current.finding.mean_diameter_mm == 6.0
    assert tb.previous is not None and tb.previous.study_uid == "1.1"
    assert tb.diameter_change_mm == 0.0 and tb.volume_change_pct == 0.0
    assert [t.tracking_id for t in tracked] == ["N1", "N2", "N3", "N4"]
    assert ta.state is not None and ta.state.stable_days == 730
    result = lungrads([t.state for t in tracked if t.state], baseline=False)
    assert result.driver == td.tracking_id  # new 6 mm solid: 4A
    assert result.category == LungRadsCategory.SUSPICIOUS


def test_slow_growth_over_several_exams() -> None:
    day0 = date(2021, 1, 10)
    exams = [
        Exam(
            study_uid=f"2.{k}",
            study_date=day0 + timedelta(days=365 * k),
            findings=[nodule(-50.0, 0.0, -150.0, 6.0 + 0.8 * k, side="right")],
        )
        for k in range(3)
    ]
    (tracked,) = track_history(exams, patient_id="P2")
    assert tracked.state is not None and tracked.state.slow_growing
    assert lungrads([tracked.state], baseline=False).category == LungRadsCategory.VERY_SUSPICIOUS


def test_ground_glass_turning_part_solid_has_a_new_solid_component() -> None:
    day0 = date(2021, 1, 10)
    f = nodule(-50.0, 0.0, -150.0, 10.0, subtype="ground-glass", side="right")
    exams = [
        Exam(study_uid="3.1", study_date=day0, findings=[f]),
        Exam(
            study_uid="3.2",
            study_date=day0 + timedelta(days=365),
            findings=[f.model_copy(update={"subtype": "part-solid", "solid_diameter_mm": 3.0})],
        ),
    ]
    (tracked,) = track_history(exams, patient_id="P3")
    state = tracked.state
    assert state is not None
    assert (state.solid_component_mm, state.prior_solid_component_mm) == (3.0, 0.0)
    assert lungrads([state], baseline=False).category == LungRadsCategory.SUSPICIOUS


def test_tracking_uids_are_deterministic() -> None:
    exams = _exponential_history(300.0, [0, 365], [(0.0, 0.0, 0.0), (4.0, 2.0, 15.0)])
    first = track_history(exams, patient_id="P1")
    again = track_history(exams, patient_id="P1")
    assert [t.tracking_uid for t in first] == [t.tracking_uid for t in again]
    other = track_history(exams, patient_id="P2")
    assert {t.tracking_uid for t in first}.isdisjoint({t.tracking_uid for t in other})
    for t in first:
        assert t.tracking_uid.startswith("2.25.") and len(t.tracking_uid) <= 64
        assert t.tracking_uid == tracking_uid("P1", exams[0].study_uid, t.first_seen.finding_index)
    assert len({t.tracking_uid for t in first}) == 2
    # Adding a newer exam keeps every identifier.
    more = _exponential_history(
        300.0, [0, 365, 600], [(0.0, 0.0, 0.0), (4.0, 2.0, 15.0), (-2.0, 1.0, 8.0)]
    )
    later = track_history(more, patient_id="P1")
    assert {(t.tracking_id, t.tracking_uid) for t in later} == {
        (t.tracking_id, t.tracking_uid) for t in first
    }


def test_identifiers_from_an_earlier_run_are_kept() -> None:
    day0 = date(2024, 2, 1)
    known = nodule(-50.0, 0.0, -150.0, 6.0).model_copy(
        update={"tracking_id": "N1", "tracking_uid": "1.2.3.4.5"}
    )
    exams = [
        Exam(study_uid="4.1", study_date=day0, findings=[known]),
        Exam(
            study_uid="4.2",
            study_date=day0 + timedelta(days=365),
            findings=[
                nodule(40.0, 10.0, -120.0, 5.0),
                moved(known.model_copy(update={"tracking_id": None, "tracking_uid": None}), SHIFT),
            ],
        ),
    ]
    tracked = track_history(exams, patient_id="P4")
    assert (tracked[0].tracking_id, tracked[0].tracking_uid) == ("N1", "1.2.3.4.5")
    assert tracked[1].tracking_id == "N2"  # no clash with the kept N1
    labelled = label_findings(exams[1], tracked)
    assert [(f.tracking_id, f.tracking_uid) for f in labelled] == [
        ("N2", tracked[1].tracking_uid),
        ("N1", "1.2.3.4.5"),
    ]


def test_history_must_be_oldest_first() -> None:
    e1 = Exam(study_uid="5.1", study_date=date(2024, 1, 1), findings=[])
    e2 = Exam(study_uid="5.2", study_date=date(2023, 1, 1), findings=[])
    with pytest.raises(InvalidInputError, match="oldest first"):
        track_history([e1, e2], patient_id="P5")
    with pytest.raises(InvalidInputError, match="twice"):
        track_history([e1, e1], patient_id="P5")


def test_single_exam_is_a_baseline() -> None:
    exam = Exam(study_uid="7.1", study_date=date(2024, 1, 1), findings=PRIOR)
    tracked = track_history([exam], patient_id="P7")
    assert len(tracked) == 4
    assert all(t.state is not None and not t.state.is_new for t in tracked)
    assert all(t.growth_vs_previous is None and t.vdt_days is None for t in tracked)
    assert all(not t.has_priors and t.previous is None and t.current for t in tracked)


def test_synthetic_patient_history_follows_the_truth(tmp_path: Path) -> None:
    """Ground truth of a rendered history (priors + doubling time), shifted per exam: every
    nodule keeps one track, and the VDT of the measured masks is near the generator's."""
    from pacsflow.synth.specs import Nodule
    from pacsflow.synth.studies import write_patient_history

    truths = write_patient_history(
        tmp_path,
        seed=3,
        nodules=[Nodule("solid", 9.0), Nodule("ground-glass", 12.0)],
        n_priors=2,
        interval_days=180,
        doubling_time_days=200.0,
        matrix=128,
        slice_mm=2.5,
    )
    shifts = [(0.0, 0.0, 0.0), (8.0, -5.0, 30.0), (-4.0, 6.0, -25.0)]
    exams = []
    for truth, shift in zip(truths, shifts, strict=True):
        lesions = sorted(truth.lesions, key=lambda lesion: -lesion.volume_ml)
        exams.append(
            Exam(
                study_uid=truth.study_uid,
                study_date=date.fromisoformat(truth.study_date),
                findings=[
                    moved(lesion.to_finding(0.9).model_copy(update={"tracking_id": None}), shift)
                    for lesion in lesions
                ],
            )
        )
    tracked = track_history(exams, patient_id=truths[-1].patient_id)
    assert len(tracked) == 2
    for t in tracked:
        assert len(t.observations) == 3
        truth_ids = {
            truths[k].lesions[0].tracking_id
            if truths[k].lesions[0].subtype == t.observations[k].nodule_type
            else truths[k].lesions[1].tracking_id
            for k in range(3)
        }
        assert len(truth_ids) == 1  # the same generator nodule on every exam
        assert t.vdt_days == pytest.approx(200.0, rel=0.15)
