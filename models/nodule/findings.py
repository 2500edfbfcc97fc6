"""Probability map -> lung nodule findings measured on the source grid.

Per nodule: the network's component is refined on the source image (half-way HU between
the nodule and the lung around it, within a thin band around the component), then
measured the way radiologists and Lung-RADS v2022 do: longest axial diameter and the
perpendicular short axis on the same slice, mean diameter = (long + short) / 2, volume
(mm3 and mL), centre in patient coordinates (LPS), and the type (solid / part-solid /
ground-glass) from the share of solid-density voxels inside the nodule.

Vessels: the network also fires on pulmonary vessel segments and branch points, near the
hila most of all. Two measures of the dense object around each component tell them
apart (issue #3; thresholds chosen on validation studies, see models/weights/nodule.json):
- roundness: sqrt(smallest / largest principal variance) of the object the image shows
  up to ROUNDNESS_REACH_MM beyond the nodule, in 3D (1 for a sphere, about 0.3 for a tube
  three times as long as it is wide). Looking a little beyond the nodule completes a
  nodule the network only half covered, and follows a vessel out of the component.
- contact: the share of the nodule's surroundings (up to CONTACT_REACH_MM) that is as
  dense as the nodule's edge rather than aerated lung. A vessel continues beyond the
  component; a nodule sits in lung. Caution: a nodule against the pleura or the
  mediastinum (juxtapleural) has a high contact too; the synthetic studies place none
  there, so on images that may have them keep max_contact off (1.0).

Diameters follow one convention: centre-to-centre distance of the two farthest voxels
plus one pixel (edge to edge).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from models.scoring import FLOOR, operating_probability
from models.volume import Volume
from pacsflow.domain import Finding, Location

SOLID_HU = -300.0  # denser than this is solid tissue (ground glass stays well below)
LUNG_HU = -500.0  # aerated lung is below this
SOLID_INTERIOR_SHARE = 0.6  # solid: most of the nodule's interior is solid density
GROUND_GLASS_SOLID_SHARE = 0.02  # ground glass: (almost) no solid voxel at all
ROUNDNESS_REACH_MM = 3.0  # how far beyond the nodule its shape is judged
CONTACT_REACH_MM = 5.0  # how far beyond the nodule its surroundings are looked at
MIN_CONTRAST_HU = 80.0  # nodule vs lung: less, and the image cannot draw the boundary


@dataclass(frozen=True)
class NoduleMeasurement:
    n_voxels: int
    volume_mm3: float
    centre_zyx: tuple[float, float, float]
    longest_axial_mm: float
    short_axis_mm: float
    solid_share: float  # share of voxels >= SOLID_HU
    solid_interior_share: float  # same, for the voxels away from the edge
    nodule_type: str

    @property
    def mean_diameter_mm(self) -> float:
        return (self.longest_axial_mm + self.short_axis_mm) / 2.0

    @property
    def solid_diameter_mm(self) -> float:
        """Diameter of the sphere with the solid component's volume (Lung-RADS sizes the
        solid part of a part-solid nodule separately)."""
        return float((6.0 * self.solid_share * self.volume_mm3 / np.pi) ** (1.0 / 3.0))


def axial_diameters(points_mm: np.ndarray) -> tuple[float, float]:
    """Longest in-plane distance between two points (centres) and the extent
    perpendicular to it, both in mm."""
    if len(points_mm) < 2:
        return 0.0, 0.0
    candidates = points_mm
    if len(points_mm) > 8:
        try:
            candidates = points_mm[ConvexHull(points_mm).vertices]
        except QhullError:  # collinear: the extremes along each axis suffice
            ends = {int(points_mm[:, a].argmin()) for a in (0, 1)}
            ends |= {int(points_mm[:, a].argmax()) for a in (0, 1)}
            candidates = points_mm[sorted(ends)]
    d = candidates[:, None, :] - candidates[None, :, :]
    d2 = (d * d).sum(-1)
    a, b = np.unravel_index(int(d2.argmax()), d2.shape)
    long_mm = float(np.sqrt(d2[a, b]))
    if long_mm == 0.0:
        return 0.0, 0.0
    u = (candidates[b] - candidates[a]) / long_mm
    across = points_mm @ np.array([-u[1], u[0]])
    return long_mm, float(across.max() - across.min())


def roundness(mask: np.ndarray, spacing_zyx: tuple[float, float, float]) -> float:
    """sqrt(smallest / largest eigenvalue) of the covariance of the voxel positions in mm.

    Each voxel counts as a box, not a point (its own variance, spacing**2 / 12 along
    each axis, is added), so that a small nodule on thick slices is not called flat only
    because it covers few slices. 1.0 for a sphere, about 0.3 for a cylinder three times
    as long as it is wide, 0 for a line."""
    k, i, j = np.nonzero(mask)
    if k.size == 0:
        return 0.0
    spacing = np.asarray(spacing_zyx, dtype=float)
    points = np.column_stack((k, i, j)) * spacing
    centred = points - points.mean(axis=0)
    cov = centred.T @ centred / k.size + np.diag(spacing**2 / 12.0)
    eig = np.linalg.eigvalsh(cov)  # ascending
    return float(np.sqrt(max(eig[0], 0.0) / eig[-1]))


@dataclass(frozen=True)
class Surroundings:
    roundness: float  # of the dense object up to ROUNDNESS_REACH_MM beyond the nodule
    contact: float  # share of the CONTACT_REACH_MM shell around the nodule that is dense

    def within_limits(self, min_roundness: float, max_contact: float) -> float:
        """1.0: within both limits (a nodule); under 1.0: outside one of them (a vessel),
        the lower the clearer. A limit at its default (0.0, 1.0) is off."""
        within = 1.0
        if min_roundness > 0.0:
            within = min(within, self.roundness / min_roundness)
        if max_contact < 1.0:
            within = min(within, (1.0 - self.contact) / (1.0 - max_contact))
        return within


def surroundings(
    component: np.ndarray,
    nodule: np.ndarray,
    hu: np.ndarray,
    spacing_zyx: tuple[float, float, float],
) -> Surroundings:
    """Shape and contact of a nodule (masks on the crop `hu`, which must reach at least
    CONTACT_REACH_MM beyond them). Dense means at least half-way between the component's
    median HU and the lung around the nodule, the cut refine() draws the nodule with."""
    distance = ndimage.distance_transform_edt(~nodule, sampling=spacing_zyx)
    shell = (distance > 0.0) & (distance <= CONTACT_REACH_MM)
    lung = hu[shell & (hu < LUNG_HU)]
    lesion_hu = float(np.median(hu[component])) if component.any() else LUNG_HU
    if lung.size < 8:  # no lung around it: not a lung nodule's surroundings
        return Surroundings(roundness(nodule, spacing_zyx), contact=1.0)
    lung_hu = float(np.median(lung))
    if lesion_hu - lung_hu < MIN_CONTRAST_HU:  # too faint to tell its edge: no evidence
        return Surroundings(roundness(nodule, spacing_zyx), contact=0.0)
    dense = hu >= (lesion_hu + lung_hu) / 2.0
    near = dense & (distance <= ROUNDNESS_REACH_MM) | nodule
    labels, _ = ndimage.label(near)
    touching = np.unique(labels[nodule])
    shape = np.isin(labels, touching[touching > 0])
    return Surroundings(
        roundness=roundness(shape, spacing_zyx), contact=float(np.mean(dense[shell]))
    )


def nodule_type(solid_share: float, solid_interior_share: float) -> str:
    if solid_interior_share >= SOLID_INTERIOR_SHARE:
        return "solid"
    if solid_share < GROUND_GLASS_SOLID_SHARE:
        return "ground-glass"
    return "part-solid"


def measure(
    mask: np.ndarray, hu: np.ndarray, spacing_zyx: tuple[float, float, float]
) -> NoduleMeasurement:
    """Measure one nodule mask (a crop of the source grid) and the HU under it."""
    dz, dy, dx = spacing_zyx
    k, i, j = np.nonzero(mask)
    best_long, best_short = 0.0, 0.0
    for z in np.unique(k):
        on = k == z
        long_mm, short_mm = axial_diameters(np.column_stack((i[on] * dy, j[on] * dx)).astype(float))
        if long_mm > best_long:
            best_long, best_short = long_mm, short_mm
    px = (dy + dx) / 2.0
    values = hu[mask]
    solid_share = float(np.mean(values >= SOLID_HU)) if values.size else 0.0
    interior = ndimage.binary_erosion(mask, structure=np.ones((1, 3, 3), bool))
    inner = hu[interior] if interior.any() else values
    solid_interior = float(np.mean(inner >= SOLID_HU)) if inner.size else 0.0
    return NoduleMeasurement(
        n_voxels=int(k.size),
        volume_mm3=float(k.size * dz * dy * dx),
        centre_zyx=(float(k.mean()), float(i.mean()), float(j.mean())),
        longest_axial_mm=round(best_long + px, 2),
        short_axis_mm=round(best_short + px, 2),
        solid_share=solid_share,
        solid_interior_share=solid_interior,
        nodule_type=nodule_type(solid_share, solid_interior),
    )


def refine(
    component: np.ndarray, hu: np.ndarray, spacing_zyx: tuple[float, float, float], band_mm: float
) -> np.ndarray:
    """The nodule as the image shows it: voxels denser than half-way between the nodule
    and its surrounding lung, within `band_mm` of the network's component, connected to it.
    Keeps the component as is when the image gives no usable contrast."""
    reach = max(1, round(band_mm / min(spacing_zyx[1:])))
    near = ndimage.binary_dilation(component, structure=np.ones((1, 3, 3), bool), iterations=reach)
    shell = near & ~component
    lung = hu[shell & (hu < LUNG_HU)]
    inside = hu[component]
    if lung.size < 8 or inside.size == 0:
        return component
    # The median, not a high percentile: in a part-solid nodule the ground glass is most
    # of the volume, and the boundary must be the ground glass's, not the core's.
    lesion_hu = float(np.median(inside))
    lung_hu = float(np.median(lung))
    if lesion_hu - lung_hu < 80.0:
        return component
    candidate = near & (hu >= (lesion_hu + lung_hu) / 2.0)
    labels, n = ndimage.label(candidate)
    if n == 0:
        return component
    keep = np.unique(labels[component & candidate])
    keep = keep[keep > 0]
    refined = np.isin(labels, keep)
    return refined if refined.any() else component


def _lung_geometry(volume: Volume) -> tuple[float, tuple[float, float], tuple[float, float]]:
    """Body midline x (LPS mm), lung extent along z (index) and y (index), from a
    subsampled lung mask (air inside the body)."""
    step_z, step_xy = 2, 4
    small = volume.hu[::step_z, ::step_xy, ::step_xy]
    body = ndimage.binary_fill_holes(small > -500.0, structure=np.ones((1, 3, 3), bool))
    lung = body & (small < LUNG_HU) if body is not None else small < LUNG_HU
    cols = np.nonzero(body.any(axis=(0, 1)))[0] if body is not None else np.array([])
    centre_col = (cols[0] + cols[-1]) / 2 * step_xy if cols.size else volume.hu.shape[2] / 2
    midline = float(volume.to_lps(np.array([0.0, 0.0, centre_col]))[0])
    zs = np.nonzero(lung.any(axis=(1, 2)))[0]
    ys = np.nonzero(lung.any(axis=(0, 2)))[0]
    z_range = (zs[0] * step_z, zs[-1] * step_z) if zs.size else (0.0, volume.hu.shape[0] - 1.0)
    y_range = (ys[0] * step_xy, ys[-1] * step_xy) if ys.size else (0.0, volume.hu.shape[1] - 1.0)
    return midline, (float(z_range[0]), float(z_range[1])), (float(y_range[0]), float(y_range[1]))


def lobe(side: str, height: float, depth: float) -> str:
    """Lobe estimated by position: the oblique fissure runs from high at the back to low
    at the front, the horizontal fissure splits the right middle lobe from the upper.
    height 0 (lung base) .. 1 (apex); depth -1 (anterior) .. 1 (posterior)."""
    lower = height < 0.42 + 0.30 * depth
    if side == "right":
        if lower:
            return "right lower lobe"
        return "right middle lobe" if height < 0.56 else "right upper lobe"
    return "left lower lobe" if lower else "left upper lobe"


def _pad(box: tuple[slice, ...], pad: tuple[int, ...], shape: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(
        slice(max(0, b.start - p), min(n, b.stop + p))
        for b, p, n in zip(box, pad, shape, strict=True)
    )


def findings_from_probability(
    prob: np.ndarray,
    volume: Volume,
    *,
    threshold: float = 0.5,
    min_diameter_mm: float = 3.0,
    band_mm: float = 1.5,
    min_probability: float = 0.0,
    min_roundness: float = 0.0,
    max_contact: float = 1.0,
) -> tuple[list[Finding], np.ndarray, float]:
    """Returns (findings largest first, label map on the source grid (0 none, i finding i),
    study probability). Components whose longest axial diameter is under min_diameter_mm
    are noise, not findings, as are those whose 95th-percentile probability is under
    min_probability; those less round than min_roundness or with more dense contact than
    max_contact are vessels (see `surroundings`). Probabilities are on the operating scale
    of models.scoring: a finding has >= 0.5, a study without one < 0.5."""
    mask = prob >= threshold
    labels, _ = ndimage.label(mask)
    objects = ndimage.find_objects(labels)
    out = np.zeros(prob.shape, dtype=np.uint8)
    min_score = max(threshold, min_probability)
    # Evidence outside every component (all under the threshold): under one half.
    study = operating_probability(
        float(np.max(prob, where=~mask, initial=0.0)), min_score=min_score
    )
    if not objects:
        return [], out, study
    midline, z_range, y_range = _lung_geometry(volume)
    spacing = volume.spacing_zyx
    margin = max(2, round(band_mm / min(spacing[1:])) + 1)
    judge_shape = min_roundness > 0.0 or max_contact < 1.0
    # Room around a nodule for its surroundings: the band refine() may add, then the shell.
    context = tuple(int(np.ceil((band_mm + CONTACT_REACH_MM) / d)) + 1 for d in spacing)
    found: list[tuple[Finding, tuple[slice, ...], np.ndarray]] = []
    for index, box in enumerate(objects, start=1):
        if box is None:
            continue
        grown = _pad(box, (1, margin, margin), prob.shape)
        component = labels[grown] == index
        score = float(np.percentile(prob[grown][component], 95))
        if score < min_score:
            study = max(study, operating_probability(score, min_score=min_score))
            continue
        hu = volume.hu[grown]
        nodule = refine(component, hu, spacing, band_mm)
        m = measure(nodule, hu, spacing)
        p = operating_probability(
            score, min_score=min_score, size=m.longest_axial_mm, min_size=min_diameter_mm
        )
        vessel = False
        if judge_shape and m.longest_axial_mm >= min_diameter_mm:
            wide = _pad(box, context, prob.shape)
            inner = tuple(
                slice(g.start - w.start, g.stop - w.start) for g, w in zip(grown, wide, strict=True)
            )
            wide_component = labels[wide] == index
            wide_nodule = np.zeros_like(wide_component)
            wide_nodule[inner] = nodule
            around = surroundings(wide_component, wide_nodule, volume.hu[wide], spacing)
            within = around.within_limits(min_roundness, max_contact)
            if within < 1.0:
                # A vessel: under one half, the less nodule-like the lower, so that only
                # near misses reach the review band.
                vessel = True
                p = min(p, FLOOR, 0.5 * within)
        study = max(study, p)
        if m.longest_axial_mm < min_diameter_mm or vessel:
            continue
        centre = np.array(m.centre_zyx) + np.array([s.start for s in grown])
        lps = volume.to_lps(centre)
        side = "left" if lps[0] > midline else "right"
        # Height in the lungs (0 base .. 1 apex) and depth (-1 anterior .. 1 posterior),
        # whichever way the slices and rows of this series run.
        up = (centre[0] - z_range[0]) / max(1.0, z_range[1] - z_range[0])
        height = float(np.clip(up if volume.slice_dir[2] > 0 else 1.0 - up, 0.0, 1.0))
        back = 2.0 * (centre[1] - y_range[0]) / max(1.0, y_range[1] - y_range[0]) - 1.0
        depth = float(np.clip(back if volume.col_dir[1] > 0 else -back, -1.0, 1.0))
        finding = Finding(
            kind="nodule",
            subtype=m.nodule_type,
            probability=p,
            volume_ml=round(m.volume_mm3 / 1000.0, 5),
            diameter_mm=round(m.longest_axial_mm, 2),
            mean_diameter_mm=round(m.mean_diameter_mm, 2),
            centroid_mm=(round(float(lps[0]), 2), round(float(lps[1]), 2), round(float(lps[2]), 2)),
            solid_diameter_mm=(
                round(m.solid_diameter_mm, 2) if m.nodule_type == "part-solid" else None
            ),
            location=Location(side=side, compartment="lung", region=lobe(side, height, depth)),
        )
        found.append((finding, grown, nodule))
    found.sort(key=lambda item: -(item[0].volume_ml or 0.0))
    for number, (_, grown, nodule) in enumerate(found[:255], start=1):
        region = out[grown]
        region[nodule & (region == 0)] = number
    findings = [f for f, _, _ in found]
    return findings, out, study
