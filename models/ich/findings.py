"""Probability map -> hemorrhage findings measured on the source grid.

Per lesion: volume in mL (voxel count x voxel volume), centroid in patient coordinates,
side (LPS +x is the patient's left), supra/infratentorial compartment, and a subtype
estimate from its relation to the skull (extra-axial lesions touch the inner table).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from models.scoring import operating_probability
from models.volume import Volume
from pacsflow.domain import Finding, Location

BONE_HU = 300.0
HEAD_HU = -200.0


def _midline_x(volume: Volume, head: np.ndarray) -> float:
    cols = np.nonzero(head.any(axis=(0, 1)))[0]
    centre_col = (cols[0] + cols[-1]) / 2 if cols.size else volume.hu.shape[2] / 2
    return float(volume.to_lps(np.array([0.0, 0.0, centre_col]))[0])


def _compartment(z_index: float, head: np.ndarray) -> str:
    zs = np.nonzero(head.any(axis=(1, 2)))[0]
    if zs.size == 0:
        return "supratentorial"
    # The posterior fossa is roughly the lowest quarter of the head's extent; z grows
    # superiorly for axial series sorted along the normal (feet to head).
    return "infratentorial" if z_index < zs[0] + 0.25 * (zs[-1] - zs[0]) else "supratentorial"


def _subtype(component: np.ndarray, bone_near: np.ndarray) -> str:
    touching = np.count_nonzero(component & bone_near) / max(1, np.count_nonzero(component))
    if touching < 0.15:
        return "intraparenchymal"
    # Extra-axial: a lens (epidural) is thick for its extent, a crescent (subdural) thin.
    thickness = ndimage.distance_transform_edt(component.any(axis=0)).max()
    extent = np.sqrt(np.count_nonzero(component.any(axis=0)))
    return "epidural" if thickness > 0.28 * extent else "subdural"


def _bone_near(hu: np.ndarray, box: tuple[slice, ...], reach: int) -> np.ndarray:
    """Voxels of `box` within `reach` in-plane voxels of bone. Dilating only the box (plus
    the reach around it) instead of the whole volume keeps thin series fast."""
    zs, ys, xs = box
    y0, x0 = max(0, ys.start - reach), max(0, xs.start - reach)
    y1, x1 = min(hu.shape[1], ys.stop + reach), min(hu.shape[2], xs.stop + reach)
    bone = hu[zs, y0:y1, x0:x1] > BONE_HU
    near = ndimage.binary_dilation(bone, structure=np.ones((1, 3, 3), bool), iterations=reach)
    return near[:, ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]


def findings_from_probability(
    prob: np.ndarray,
    volume: Volume,
    *,
    threshold: float = 0.5,
    min_volume_ml: float = 0.05,
    min_probability: float = 0.0,
    max_median_hu: float | None = None,
) -> tuple[list[Finding], np.ndarray, float]:
    """Returns (findings, label map on the source grid (0 = none, i = finding i), study
    probability). Components smaller than min_volume_ml, or whose 95th-percentile
    probability is under min_probability, are noise, not findings. Acute blood measures
    about 40-100 HU: a component whose median HU exceeds max_median_hu is calcification,
    bone or a head holder in partial volume, and is dropped without counting as evidence.

    Probabilities (per finding and per study) are on the operating scale of
    models.scoring: a finding has >= 0.5, a study without one < 0.5."""
    mask = prob >= threshold
    labels, _ = ndimage.label(mask)
    head = volume.hu > HEAD_HU
    # Within ~3 mm of bone in-plane.
    dy, dx = volume.spacing_zyx[1:]
    reach = max(1, round(3.0 / min(dy, dx)))
    midline = _midline_x(volume, head)
    min_score = max(threshold, min_probability)
    # Evidence outside every component (all under the threshold): under one half.
    findings: list[Finding] = []
    out = np.zeros(prob.shape, dtype=np.uint8)
    study_probability = operating_probability(
        float(np.max(prob, where=~mask, initial=0.0)), min_score=min_score
    )
    objects = ndimage.find_objects(labels)
    for index, box in enumerate(objects, start=1):
        if box is None:
            continue
        component = labels[box] == index
        if max_median_hu is not None and np.median(volume.hu[box][component]) > max_median_hu:
            continue
        volume_ml = float(np.count_nonzero(component) * volume.voxel_volume_ml)
        score = float(np.percentile(prob[box][component], 95))
        p = operating_probability(
            score, min_score=min_score, size=volume_ml, min_size=min_volume_ml
        )
        study_probability = max(study_probability, p)
        if volume_ml < min_volume_ml or score < min_score:
            continue
        local = np.argwhere(component).mean(axis=0)
        centre = local + np.array([s.start for s in box])
        lps = volume.to_lps(centre)
        offset = float(lps[0] - midline)
        side = "left" if offset > 3.0 else "right" if offset < -3.0 else "midline"
        findings.append(
            Finding(
                kind="hemorrhage",
                subtype=_subtype(component, _bone_near(volume.hu, box, reach)),
                probability=p,
                volume_ml=round(volume_ml, 3),
                centroid_mm=(float(lps[0]), float(lps[1]), float(lps[2])),
                location=Location(side=side, compartment=_compartment(centre[0], head)),
            )
        )
        if len(findings) < 255:
            out[box][component] = len(findings)
    # Largest first: the report and the SR lead with the main lesion.
    order = sorted(range(len(findings)), key=lambda i: -(findings[i].volume_ml or 0))
    remap = np.zeros(len(findings) + 1, dtype=np.uint8)
    for new, old in enumerate(order, start=1):
        remap[old + 1] = new
    findings = [findings[i] for i in order]
    out = remap[out]
    return findings, out, float(study_probability)
