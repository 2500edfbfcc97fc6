"""Probability map -> hemorrhage findings: volume, side and label map on the source grid."""

from __future__ import annotations

import numpy as np
import pytest

from models.ich.findings import findings_from_probability
from models.volume import Volume

SPACING = (5.0, 1.0, 1.0)


def _head() -> Volume:
    """A 'head': an ellipse of brain (35 HU) in a 6 mm skull (1000 HU), air outside."""
    _, y, x = np.mgrid[0:24, 0:160, 0:140].astype(np.float32)
    r = np.sqrt(((y - 80) / 70) ** 2 + ((x - 70) / 60) ** 2)
    hu = np.where(r < 1.0, 35.0, -1000.0).astype(np.float32)
    hu[(r >= 0.9) & (r < 1.0)] = 1000.0
    return Volume(
        hu=hu,
        spacing_zyx=SPACING,
        origin_lps=np.array([-70.0, -80.0, 0.0]),
        row_dir=np.array([1.0, 0.0, 0.0]),
        col_dir=np.array([0.0, 1.0, 0.0]),
        slice_dir=np.array([0.0, 0.0, 1.0]),
        sop_instance_uids=tuple(f"1.2.3.{k}" for k in range(24)),
    )


def _ball(shape: tuple[int, int, int], centre_mm: tuple[float, float, float], radius_mm: float):  # type: ignore[no-untyped-def]
    z, y, x = np.mgrid[0 : shape[0], 0 : shape[1], 0 : shape[2]].astype(np.float32)
    d2 = sum(
        ((g * s - c) / radius_mm) ** 2
        for g, s, c in zip((z, y, x), SPACING, centre_mm, strict=True)
    )
    return d2 <= 1.0


def test_blob_gives_volume_side_and_label_map() -> None:
    volume = _head()
    # 20 mm radius ball, centred right of midline? column 100 > 70: +x = patient LEFT.
    ball = _ball(volume.hu.shape, (60.0, 80.0, 100.0), 20.0)
    prob = np.where(ball, 0.9, 0.02).astype(np.float32)
    findings, labels, study_p = findings_from_probability(prob, volume, threshold=0.5)
    assert len(findings) == 1
    f = findings[0]
    true_ml = 4 / 3 * np.pi * 20.0**3 / 1000.0
    assert f.volume_ml == pytest.approx(true_ml, rel=0.10)
    assert f.location.side == "left"
    assert f.subtype == "intraparenchymal"
    assert f.centroid_mm is not None and f.centroid_mm[0] == pytest.approx(30.0, abs=1.0)
    assert study_p == pytest.approx(0.9)
    assert labels.shape == volume.hu.shape and set(np.unique(labels)) == {0, 1}
    assert np.count_nonzero(labels) == np.count_nonzero(ball)


def test_two_lesions_largest_first_and_right_side() -> None:
    volume = _head()
    big = _ball(volume.hu.shape, (60.0, 80.0, 40.0), 15.0)  # column 40 < 70: patient right
    small = _ball(volume.hu.shape, (60.0, 80.0, 105.0), 8.0)
    prob = np.where(big | small, 0.8, 0.0).astype(np.float32)
    findings, labels, _ = findings_from_probability(prob, volume)
    assert [f.location.side for f in findings] == ["right", "left"]
    assert findings[0].volume_ml > findings[1].volume_ml  # type: ignore[operator]
    assert np.all(labels[big] == 1) and np.all(labels[small] == 2)


def test_no_lesion_gives_no_findings_and_low_probability() -> None:
    volume = _head()
    prob = np.full(volume.hu.shape, 0.1, dtype=np.float32)
    findings, labels, study_p = findings_from_probability(prob, volume)
    assert findings == [] and not labels.any()
    # Voxels under the threshold are not evidence: the study stays out of the review band.
    assert study_p == 0.0


def test_rejected_components_keep_the_study_under_one_half() -> None:
    volume = _head()
    speck = _ball(volume.hu.shape, (60.0, 80.0, 40.0), 2.0)  # ~0.03 mL
    prob = np.where(speck, 0.99, 0.0).astype(np.float32)
    findings, labels, study_p = findings_from_probability(prob, volume, min_volume_ml=0.1)
    assert findings == [] and not labels.any()
    assert 0.0 < study_p < 0.5


def test_dense_components_are_not_blood() -> None:
    volume = _head()
    calcification = _ball(volume.hu.shape, (60.0, 80.0, 70.0), 6.0)
    volume.hu[calcification] = 180.0
    prob = np.where(calcification, 0.95, 0.0).astype(np.float32)
    findings, _, study_p = findings_from_probability(prob, volume, max_median_hu=100.0)
    assert findings == [] and study_p < 0.5
    assert len(findings_from_probability(prob, volume)[0]) == 1


def test_probability_spilling_into_the_skull_does_not_make_blood_read_as_bone() -> None:
    volume = _head()
    _, y, x = np.mgrid[0:24, 0:160, 0:140].astype(np.float32)
    r = np.sqrt(((y - 80) / 70) ** 2 + ((x - 70) / 60) ** 2)
    # A 2-3 mm layer of blood (70 HU) against the inner table on slices 10-13, and the
    # probability as a coarse grid maps it back: over the blood and as far again into
    # the skull, so most of the component's voxels would be bone.
    layer = (r >= 0.86) & (r < 0.9)
    layer[:10] = layer[14:] = False
    volume.hu[layer] = 70.0
    spill = (r >= 0.86) & (r < 0.96)
    spill[:10] = spill[14:] = False
    prob = np.where(spill, 0.95, 0.0).astype(np.float32)
    findings, labels, _ = findings_from_probability(prob, volume, max_median_hu=100.0)
    assert len(findings) == 1 and findings[0].subtype == "subdural"
    assert np.count_nonzero(labels) == np.count_nonzero(layer)  # the bone left out


def _streak(shape: tuple[int, int, int], centre_mm: tuple[float, float, float]) -> np.ndarray:
    """A thin blood-filled sulcus: 2 mm wide, 24 mm long (y), one 5 mm slice."""
    z, y, x = np.mgrid[0 : shape[0], 0 : shape[1], 0 : shape[2]].astype(np.float32)
    cz, cy, cx = centre_mm
    return (np.abs(z * 5.0 - cz) < 2.5) & (np.abs(y - cy) <= 12.0) & (np.abs(x - cx) <= 1.0)


@pytest.mark.parametrize(
    ("centre_mm", "radius_mm", "subtype"),
    [
        ((60.0, 80.0, 75.0), 6.0, "intraventricular"),  # deep, 5 mm from the midline
        ((60.0, 80.0, 115.0), 0.0, "subarachnoid"),  # thin, 45 mm lateral, under the cortex
        ((60.0, 80.0, 115.0), 4.0, "intraparenchymal"),  # the same place, but compact
        ((60.0, 80.0, 100.0), 8.0, "intraparenchymal"),  # 30 mm lateral, 30 mm deep
    ],
)
def test_subtype_of_intra_axial_blood_from_depth_and_midline(
    centre_mm: tuple[float, float, float], radius_mm: float, subtype: str
) -> None:
    volume = _head()
    if radius_mm:
        blob = _ball(volume.hu.shape, centre_mm, radius_mm)
    else:
        blob = _streak(volume.hu.shape, centre_mm)
    prob = np.where(blob, 0.9, 0.0).astype(np.float32)
    findings, _, _ = findings_from_probability(prob, volume)
    assert [f.subtype for f in findings] == [subtype]
