"""Probability map -> hemorrhage findings measured on the source grid.

Per lesion: volume in mL (voxel count x voxel volume), centroid in patient coordinates,
side (LPS +x is the patient's left), supra/infratentorial compartment, and a subtype
estimate from its relation to the skull (extra-axial lesions touch the inner table), its
depth in the head and its distance from the midline. Which components are findings, and
the study probability, are models.ich.aggregate's.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from models.ich.aggregate import Candidate, OperatingPoint, lesion_probability, study_probability
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


def _subtype(
    component: np.ndarray,
    bone_near: np.ndarray,
    depth_mm: float,
    midline_mm: float,
    volume_ml: float,
) -> str:
    """A geometric estimate. Extra-axial blood touches the inner table: a lens (epidural)
    is thick for its extent, a crescent (subdural) thin. Intra-axial blood deep in the head
    and near the midline is in the ventricles; thin blood just under the cortex far from
    the midline is in the sulci (subarachnoid; under 10 mL); the rest is parenchymal. The
    limits were read off the validation studies (seeds 20000..), not the held-out ones."""
    touching = np.count_nonzero(component & bone_near) / max(1, np.count_nonzero(component))
    # Thickness for extent of the axial footprint: a disc gives 1/sqrt(pi) = 0.56.
    # Padded: a footprint that fills its bounding box has no background to measure from.
    footprint = np.pad(component.any(axis=0), 1)
    thickness = ndimage.distance_transform_edt(footprint).max()
    flatness = thickness / max(1.0, np.sqrt(np.count_nonzero(footprint)))
    if touching >= 0.15:
        return "epidural" if flatness > 0.405 else "subdural"
    if depth_mm >= 43.0 and abs(midline_mm) < 25.0:
        return "intraventricular"
    if depth_mm < 37.0 and abs(midline_mm) >= 40.0 and flatness < 0.5 and volume_ml < 10.0:
        return "subarachnoid"
    return "intraparenchymal"


def _depth_mm(head: np.ndarray, centre_zyx: np.ndarray, spacing_zyx: tuple[float, ...]) -> float:
    """In-plane distance (mm) from the centre to the outside of the head, on its slice."""
    z, y, x = (round(float(v)) for v in centre_zyx)
    z = min(max(z, 0), head.shape[0] - 1)
    y = min(max(y, 0), head.shape[1] - 1)
    x = min(max(x, 0), head.shape[2] - 1)
    sampling = (float(spacing_zyx[1]), float(spacing_zyx[2]))
    return float(ndimage.distance_transform_edt(head[z], sampling=sampling)[y, x])


def _bone_near(hu: np.ndarray, box: tuple[slice, ...], reach: int) -> np.ndarray:
    """Voxels of `box` within `reach` in-plane voxels of bone. Dilating only the box (plus
    the reach around it) instead of the whole volume keeps thin series fast."""
    zs, ys, xs = box
    y0, x0 = max(0, ys.start - reach), max(0, xs.start - reach)
    y1, x1 = min(hu.shape[1], ys.stop + reach), min(hu.shape[2], xs.stop + reach)
    bone = hu[zs, y0:y1, x0:x1] > BONE_HU
    near = ndimage.binary_dilation(bone, structure=np.ones((1, 3, 3), bool), iterations=reach)
    return near[:, ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]


def candidates(
    prob: np.ndarray, volume: Volume, threshold: float
) -> tuple[np.ndarray, list[tuple[int, tuple[slice, ...]]], list[Candidate]]:
    """Connected components of `prob >= threshold`: the label map, (label, bounding box)
    of each and its Candidate summary (volume, 95th-percentile score, median HU).

    Bone is never blood: voxels denser than BONE_HU stay out of every component. The map
    comes back from the 5 mm x 1.5 mm model grid blurred, and a thin subdural's component
    used to spill into the inner table, so that its median HU read as bone and the
    finding was dropped (the held-out set's missed subdurals, 2026-11-29)."""
    labels, _ = ndimage.label((prob >= threshold) & (volume.hu <= BONE_HU))
    boxes: list[tuple[int, tuple[slice, ...]]] = []
    found: list[Candidate] = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        component = labels[box] == index
        boxes.append((index, box))
        found.append(
            Candidate(
                volume_ml=float(np.count_nonzero(component) * volume.voxel_volume_ml),
                score=float(np.percentile(prob[box][component], 95)),
                median_hu=float(np.median(volume.hu[box][component])),
            )
        )
    return labels, boxes, found


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
    probability). A component is a finding when models.ich.aggregate's operating point
    says so: not denser than max_median_hu (acute blood measures about 40-100 HU;
    calcification, bone or a head holder in partial volume are denser), at least
    min_volume_ml, and a 95th-percentile probability of at least min_probability.

    Probabilities (per finding and per study) are on the operating scale of
    models.scoring: a finding has >= 0.5, a study without one < 0.5."""
    op = OperatingPoint(threshold, min_probability, min_volume_ml, max_median_hu)
    labels, boxes, found = candidates(prob, volume, threshold)
    head = volume.hu > HEAD_HU
    # Within ~3 mm of bone in-plane.
    dy, dx = volume.spacing_zyx[1:]
    reach = max(1, round(3.0 / min(dy, dx)))
    midline = _midline_x(volume, head)
    findings: list[Finding] = []
    out = np.zeros(prob.shape, dtype=np.uint8)
    for (index, box), cand in zip(boxes, found, strict=True):
        if not op.is_finding(cand):
            continue
        component = labels[box] == index
        local = np.argwhere(component).mean(axis=0)
        centre = local + np.array([s.start for s in box])
        lps = volume.to_lps(centre)
        offset = float(lps[0] - midline)
        side = "left" if offset > 3.0 else "right" if offset < -3.0 else "midline"
        findings.append(
            Finding(
                kind="hemorrhage",
                subtype=_subtype(
                    component,
                    _bone_near(volume.hu, box, reach),
                    _depth_mm(head, centre, volume.spacing_zyx),
                    offset,
                    cand.volume_ml,
                ),
                probability=lesion_probability(cand, op),
                volume_ml=round(cand.volume_ml, 3),
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
    return findings, out, study_probability(found, op)
