"""Probability map -> nodule findings: refinement, diameters, volume, type and side."""

from __future__ import annotations

import numpy as np
import pytest

from models.nodule.findings import axial_diameters, findings_from_probability
from models.volume import Volume

SPACING = (1.0, 0.9, 0.9)
SHAPE = (40, 150, 200)


def _chest(nodules: list[tuple[tuple[float, float, float], float, float, float]]) -> Volume:
    """Body (40 HU) with two lungs (-850 HU); nodules as (centre mm zyx, radius mm, HU,
    core radius mm at 40 HU)."""
    z, y, x = (g.astype(np.float32) for g in np.mgrid[0 : SHAPE[0], 0 : SHAPE[1], 0 : SHAPE[2]])
    zm, ym, xm = z * SPACING[0], y * SPACING[1], x * SPACING[2]
    hu = np.full(SHAPE, -1000.0, dtype=np.float32)
    body = ((ym - 67) / 62) ** 2 + ((xm - 90) / 87) ** 2 < 1
    hu[body] = 40.0
    for cx in (50.0, 130.0):
        hu[body & (((ym - 67) / 47) ** 2 + ((xm - cx) / 32) ** 2 < 1)] = -850.0
    for (cz, cy, cx), radius, value, core in nodules:
        d = np.sqrt((zm - cz) ** 2 + (ym - cy) ** 2 + (xm - cx) ** 2)
        hu[d <= radius] = value
        hu[d <= core] = 40.0
    return Volume(
        hu=hu,
        spacing_zyx=SPACING,
        origin_lps=np.array([-90.0, -67.0, -20.0]),
        row_dir=np.array([1.0, 0.0, 0.0]),
        col_dir=np.array([0.0, 1.0, 0.0]),
        slice_dir=np.array([0.0, 0.0, 1.0]),
        sop_instance_uids=tuple(str(k) for k in range(SHAPE[0])),
    )


def _ball(centre: tuple[float, float, float], radius: float) -> np.ndarray:
    z, y, x = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1], 0 : SHAPE[2]].astype(np.float32)
    d2 = sum(
        ((g * s - c) / radius) ** 2 for g, s, c in zip((z, y, x), SPACING, centre, strict=True)
    )
    return d2 <= 1.0


def test_axial_diameters_of_a_rectangle() -> None:
    pts = np.array([[i, j] for i in range(0, 11) for j in range(0, 5)], dtype=float)
    long_mm, short_mm = axial_diameters(pts)
    assert long_mm == pytest.approx(np.hypot(10, 4))
    # Perpendicular to the diagonal the rectangle spans (10 * 4 + 4 * 10) / diagonal.
    assert short_mm == pytest.approx(80.0 / np.hypot(10, 4))


@pytest.mark.parametrize(
    ("value", "core", "expected"),
    [(40.0, 0.0, "solid"), (-600.0, 0.0, "ground-glass"), (-600.0, 3.5, "part-solid")],
)
def test_solid_ground_glass_and_part_solid(value: float, core: float, expected: str) -> None:
    centre, radius = (20.0, 67.0, 130.0), 6.0  # 12 mm nodule in the left lung (+x)
    volume = _chest([(centre, radius, value, core)])
    # The network's component is a little too large: refinement brings it back.
    prob = np.where(_ball(centre, radius + 1.2), 0.9, 0.01).astype(np.float32)
    findings, labels, study_p = findings_from_probability(prob, volume)
    assert len(findings) == 1
    f = findings[0]
    assert f.subtype == expected
    assert f.location.side == "left"
    assert f.diameter_mm == pytest.approx(12.0, abs=1.0)
    assert f.mean_diameter_mm == pytest.approx(12.0, abs=1.0)
    assert f.volume_ml == pytest.approx(4 / 3 * np.pi * radius**3 / 1000, rel=0.10)
    assert f.centroid_mm == pytest.approx((130.0 - 90.0, 0.0, 0.0), abs=0.5)
    assert study_p == pytest.approx(0.9)
    assert labels.max() == 1


def test_specks_are_not_findings_and_largest_comes_first() -> None:
    big, small = ((20.0, 67.0, 50.0), 8.0), ((15.0, 60.0, 130.0), 3.0)
    volume = _chest([(big[0], big[1], 40.0, 0.0), (small[0], small[1], 40.0, 0.0)])
    prob = np.zeros(SHAPE, dtype=np.float32)
    prob[_ball(*big)] = 0.8
    prob[_ball(*small)] = 0.7
    prob[5, 5, 5] = 0.9  # one voxel: noise
    findings, labels, _ = findings_from_probability(prob, volume)
    assert [f.location.side for f in findings] == ["right", "left"]
    assert findings[0].diameter_mm == pytest.approx(16.0, abs=1.0)
    assert set(np.unique(labels)) == {0, 1, 2}
