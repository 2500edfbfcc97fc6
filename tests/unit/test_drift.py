"""Drift statistics and the acceptance scenario on simulated studies.

Records are sampled from the synthetic generator's distributions without writing DICOM
(pacsflow.testing.drift_records): vendors and their header conventions, the held-out
protocol mix and noise range, image statistics measured on noise-free synthetic head
phantoms plus the study's noise, and scores / latencies drawn from the shipped ICH
evaluation. The reference stands for the evaluation set's records (1,000 studies drawn the
same way, since the shipped evaluation JSON records no image statistics).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from models.catalogue import ICH
from pacsflow.config.settings import DriftSettings
from pacsflow.errors import InvalidInputError
from pacsflow.governance.drift import (
    DriftRecord,
    ReferenceProfile,
    bin_shares,
    body_intensity_stats,
    build_reference,
    compare,
    inference_features,
    psi,
    quantile_edges,
    records_from_evaluation,
)
from pacsflow.pathways.headers import InstanceHeader
from pacsflow.testing.drift_records import (
    PhantomBank,
    Population,
    Scanner,
    simulate_records,
)

CFG = DriftSettings()
NEW_SCANNER = Scanner(
    manufacturer="NEUSOFT MEDICAL SYSTEMS",
    kernel="F20",
    slice_thickness_mm=5.0,
    noise_hu=(14.0, 24.0),
    share=0.3,
)


@pytest.fixture(scope="module")
def evaluation() -> dict[str, object]:
    data: dict[str, object] = json.loads(ICH.evaluation().read_text())
    return data


@pytest.fixture(scope="module")
def pools(evaluation: dict[str, object]) -> tuple[list[float], list[float]]:
    studies = evaluation["studies"]
    assert isinstance(studies, list)
    return [s["study_probability"] for s in studies], [s["seconds"] for s in studies]


@pytest.fixture(scope="module")
def bank() -> PhantomBank:
    return PhantomBank.render(count=4, matrix=96)


def simulate(
    n: int, seed: int, bank: PhantomBank, pools: tuple[list[float], list[float]], **kw: object
) -> list[DriftRecord]:
    scores, latencies = pools
    return simulate_records(
        n, seed=seed, bank=bank, scores=scores, latencies=latencies, voxels=10_000, **kw
    )


@pytest.fixture(scope="module")
def reference(bank: PhantomBank, pools: tuple[list[float], list[float]]) -> ReferenceProfile:
    return build_reference(simulate(1000, 1, bank, pools), source="simulated evaluation set")


# --- acceptance ---------------------------------------------------------------------------
def test_in_distribution_windows_raise_no_alert(
    reference: ReferenceProfile, bank: PhantomBank, pools: tuple[list[float], list[float]]
) -> None:
    """1,000 studies from the reference's distribution, in 10 windows of 100: no alert."""
    records = simulate(1000, 2, bank, pools)
    for w in range(10):
        report = compare(reference, records[w * 100 : (w + 1) * 100], CFG)
        assert report.status == "ok", (w, report.alerts)
        assert len(report.features) == 8
        assert all(f.psi is not None for f in report.features)


def test_new_scanner_with_noisier_images_is_flagged_within_200_studies(
    reference: ReferenceProfile, bank: PhantomBank, pools: tuple[list[float], list[float]]
) -> None:
    """A new vendor with its own kernel and noisier images (30% of studies from the
    shift on): alerted in the first window of 100, well within 200 studies."""
    records = simulate(200, 3, bank, pools, population=Population(extra=NEW_SCANNER))
    first = next(
        (
            end
            for end in (100, 200)
            if compare(reference, records[end - 100 : end], CFG).status == "alert"
        ),
        None,
    )
    assert first is not None and first <= 200
    report = compare(reference, records[:100], CFG)
    assert report.feature("manufacturer").alert and report.feature("kernel").alert
    assert any("NEUSOFT MEDICAL SYSTEMS" in a for a in report.alerts)


def test_noisier_images_alone_are_flagged(
    reference: ReferenceProfile, bank: PhantomBank, pools: tuple[list[float], list[float]]
) -> None:
    """Same vendors, noise 15-25 HU instead of 3-12: the soft-tissue spread drifts."""
    records = simulate(100, 4, bank, pools, population=Population(noise_hu=(15.0, 25.0)))
    report = compare(reference, records, CFG)
    assert report.status == "alert"
    std = report.feature("image_std_hu")
    assert std.alert and std.psi is not None and std.psi > 1.0
    assert not report.feature("manufacturer").alert


def test_more_studies_not_analysed_alerts(
    reference: ReferenceProfile, bank: PhantomBank, pools: tuple[list[float], list[float]]
) -> None:
    records = simulate(100, 5, bank, pools, population=Population(failure_rate=0.2))
    report = compare(reference, records, CFG)
    assert report.validation_failure_rate is not None and report.validation_failure_rate > 0.1
    assert any(a.startswith("validation failures") for a in report.alerts)


def test_slower_inference_alerts_on_latency_p95(
    reference: ReferenceProfile, bank: PhantomBank, pools: tuple[list[float], list[float]]
) -> None:
    scores, latencies = pools
    slow = (scores, [s * 3 for s in latencies])
    report = compare(reference, simulate(100, 6, bank, slow), CFG)
    assert any(a.startswith("latency: inference p95") for a in report.alerts)
    assert report.latency_p95_s is not None and report.reference_latency_p95_s is not None
    assert report.latency_p95_s > 2 * report.reference_latency_p95_s


def test_a_few_slow_studies_do_not_raise_the_latency_alert(
    reference: ReferenceProfile, bank: PhantomBank, pools: tuple[list[float], list[float]]
) -> None:
    """Six studies ten times slower (a cold start, a retry) lift the window's p95 over
    the limit, but not its typical latency: no latency alert."""
    records = simulate(100, 6, bank, pools)
    for i in range(0, 96, 16):
        records[i] = replace(records[i], latency_s=(records[i].latency_s or 1.0) * 10)
    report = compare(reference, records, CFG)
    assert report.latency_p95_s is not None and report.reference_latency_p95_s is not None
    assert report.latency_p95_s > 2 * report.reference_latency_p95_s
    assert not any(a.startswith("latency: inference p95") for a in report.alerts)


def test_too_few_studies_give_no_verdict(
    reference: ReferenceProfile, bank: PhantomBank, pools: tuple[list[float], list[float]]
) -> None:
    records = simulate(10, 7, bank, pools, population=Population(extra=NEW_SCANNER))
    report = compare(reference, records, CFG)
    assert report.status == "insufficient_data" and not report.alerts


# --- the statistics -------------------------------------------------------------------------
def test_psi_is_zero_for_equal_shares_and_grows_with_the_shift() -> None:
    assert psi([0.25] * 4, [0.25] * 4) == 0.0
    small = psi([0.25] * 4, [0.3, 0.2, 0.25, 0.25])
    large = psi([0.25] * 4, [0.7, 0.1, 0.1, 0.1])
    assert 0 < small < 0.05 < 0.25 < large
    # An empty reference bin is floored, not a division by zero.
    assert psi([0.5, 0.5, 0.0], [0.4, 0.4, 0.2]) == pytest.approx(
        2 * (0.4 - 0.5) * np.log(0.4 / 0.5) + (0.2 - 1e-4) * np.log(0.2 / 1e-4)
    )
    with pytest.raises(InvalidInputError):
        psi([0.5, 0.5], [1.0])


def test_bins_are_reference_quantiles_with_room_below_and_above() -> None:
    ref = list(np.arange(100, dtype=float))
    edges = quantile_edges(ref, 4)
    assert edges == (0.0, 24.75, 49.5, 74.25, 99.0)
    shares = bin_shares(edges, ref)
    assert shares[0] == 0.0 and shares[-1] == 0.0
    assert shares[1:-1] == pytest.approx([0.25, 0.25, 0.25, 0.25])
    assert bin_shares(edges, [-5.0, 0.0, 99.0, 150.0]) == [0.25, 0.25, 0, 0, 0.25, 0.25]


def test_a_constant_reference_still_sees_a_new_value() -> None:
    """kVp is 120 for every synthetic study: 100 kVp must land outside its bin."""
    edges = quantile_edges([120.0] * 50, 10)
    assert edges == (120.0,)
    assert bin_shares(edges, [120.0, 120.0]) == [0.0, 1.0, 0.0]
    assert bin_shares(edges, [100.0, 140.0]) == [0.5, 0.0, 0.5]
    ref = build_reference(
        [DriftRecord(f"r{i}", kvp=120.0) for i in range(100)], source="constant kVp"
    )
    report = compare(ref, [DriftRecord(f"c{i}", kvp=100.0) for i in range(40)], CFG)
    assert report.feature("kvp").alert


def test_reference_profile_round_trips_through_json(
    reference: ReferenceProfile, tmp_path: Path
) -> None:
    path = reference.save(tmp_path / "ref.json")
    loaded = ReferenceProfile.load(path)
    assert loaded == reference
    assert len(loaded.numeric["score"].sample) == loaded.numeric["score"].count > 900
    data = json.loads(path.read_text())
    data["format"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(InvalidInputError, match="format"):
        ReferenceProfile.load(path)
    with pytest.raises(InvalidInputError, match="not found"):
        ReferenceProfile.load(tmp_path / "missing.json")


def test_report_metrics_are_flat_numbers(
    reference: ReferenceProfile, bank: PhantomBank, pools: tuple[list[float], list[float]]
) -> None:
    report = compare(reference, simulate(100, 8, bank, pools), CFG, pathway="stroke_triage")
    metrics = report.metrics()
    assert metrics["studies"] == 100.0 and metrics["alerts"] == 0.0
    for name in ("score", "image_std_hu", "manufacturer", "kernel"):
        assert f"psi.{name}" in metrics
    assert "ks_p.score" in metrics and "ks_p.manufacturer" not in metrics
    assert all(isinstance(v, float) for v in metrics.values())
    assert json.loads(json.dumps(report.to_json()))["pathway"] == "stroke_triage"


# --- features of one inference ------------------------------------------------------------
def _header(**kw: object) -> InstanceHeader:
    return InstanceHeader(study_uid="1.2", series_uid="1.2.3", sop_uid="1.2.3.4", **kw)  # type: ignore[arg-type]


def test_inference_features_from_headers_and_volume() -> None:
    headers = [
        _header(manufacturer="Philips", kernel="UB", slice_thickness=5.0, kvp=120.0),
        _header(manufacturer="Philips", kernel="UB", slice_thickness=5.0, kvp=120.0),
        _header(manufacturer="", kernel="UB", slice_thickness=None, kvp=None),
    ]
    rng = np.random.default_rng(0)
    hu = np.full((4, 32, 32), -1000.0, dtype=np.float32)  # air
    hu[:, 8:24, 8:24] = 40.0 + rng.normal(0, 5.0, (4, 16, 16))  # brain
    hu[:, 8:24, 6:8] = 1200.0  # bone: inside the body, outside the soft-tissue window
    whole = body_intensity_stats(hu, step=1)
    assert whole.voxels == 4 * 16 * 16
    assert whole.body_fraction == pytest.approx(4 * 16 * 18 / hu.size, abs=1e-3)
    stats = body_intensity_stats(hu)  # every second row and column
    assert stats.voxels == 4 * 8 * 8
    assert stats.mean_hu == pytest.approx(40.0, abs=0.5)
    assert stats.std_hu == pytest.approx(5.0, abs=0.3)
    features = inference_features(headers, stats)
    assert features == {
        "manufacturer": "PHILIPS",
        "kernel": "UB",
        "slice_thickness_mm": 5.0,
        "kvp": 120.0,
        "image_mean_hu": stats.mean_hu,
        "image_std_hu": stats.std_hu,
    }
    assert json.loads(json.dumps(features)) == features
    assert inference_features([], None)["manufacturer"] is None
    with pytest.raises(InvalidInputError):
        body_intensity_stats(np.empty((0, 4, 4)))


def test_records_from_the_shipped_evaluation(evaluation: dict[str, object]) -> None:
    records = records_from_evaluation(evaluation)
    assert len(records) == 100
    manufacturers = {r.manufacturer for r in records}
    assert manufacturers == {"GE MEDICAL SYSTEMS", "SIEMENS", "PHILIPS", "TOSHIBA"}
    assert {r.kvp for r in records} == {120.0}
    assert all(r.image_std_hu is None for r in records)
    profile = build_reference(records, source="ich.eval.json")
    assert set(profile.numeric) == {"score", "slice_thickness_mm", "kvp", "latency_s"}
    assert set(profile.categorical) == {"manufacturer", "kernel"}
    with pytest.raises(InvalidInputError):
        records_from_evaluation({"studies": []})
