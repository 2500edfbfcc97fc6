"""Measurements of a voxel mask: volume, centroid and axial diameters."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import ConvexHull, QhullError

from pacsflow.synth.grid import Grid


@dataclass(frozen=True)
class MaskMeasurement:
    n_voxels: int
    volume_ml: float
    centroid_zyx: tuple[float, float, float]
    centroid_lps_mm: tuple[float, float, float]
    longest_axial_mm: float
    short_axis_mm: float

    @property
    def mean_diameter_mm(self) -> float:
        return (self.longest_axial_mm + self.short_axis_mm) / 2.0

    @property
    def centroid_voxel(self) -> tuple[int, int, int]:
        k, i, j = (round(v) for v in self.centroid_zyx)
        return (int(k), int(i), int(j))


def measure_voxels(grid: Grid, k: np.ndarray, i: np.ndarray, j: np.ndarray) -> MaskMeasurement:
    """Measure the voxels (k, i, j), given sorted by slice k (as np.nonzero returns them)."""
    n = int(k.size)
    if n == 0:
        return MaskMeasurement(0, 0.0, (0.0, 0.0, 0.0), grid.index_to_lps((0, 0, 0)), 0.0, 0.0)
    cz, cy, cx = float(k.mean()), float(i.mean()), float(j.mean())
    lps = grid.index_to_lps((cz, cy, cx))
    _, dy, dx = grid.spacing_zyx_mm
    px = (dy + dx) / 2.0  # centre-to-centre distances + one pixel = edge to edge
    best_long, best_short = 0.0, 0.0
    starts = np.flatnonzero(np.diff(k, prepend=k[0] - 1))
    ends = np.append(starts[1:], n)
    for s, e in zip(starts, ends, strict=True):
        pts = np.column_stack((i[s:e] * dy, j[s:e] * dx)).astype(np.float64)
        long_mm, short_mm = _axial_diameters(pts)
        if long_mm > best_long:
            best_long, best_short = long_mm, short_mm
    return MaskMeasurement(
        n_voxels=n,
        volume_ml=n * grid.voxel_ml,
        centroid_zyx=(cz, cy, cx),
        centroid_lps_mm=(round(lps[0], 3), round(lps[1], 3), round(lps[2], 3)),
        longest_axial_mm=round(best_long + px, 2),
        short_axis_mm=round(best_short + px, 2),
    )


def _axial_diameters(pts: np.ndarray) -> tuple[float, float]:
    """Longest in-plane distance between two points, and the extent perpendicular to it."""
    if len(pts) < 2:
        return 0.0, 0.0
    cand = pts
    if len(pts) > 8:
        try:
            cand = pts[ConvexHull(pts).vertices]
        except QhullError:  # collinear points: the extremes along each axis suffice
            idx = {int(pts[:, 0].argmin()), int(pts[:, 0].argmax())}
            idx |= {int(pts[:, 1].argmin()), int(pts[:, 1].argmax())}
            cand = pts[sorted(idx)]
    d = cand[:, None, :] - cand[None, :, :]
    d2 = (d * d).sum(-1)
    a, b = np.unravel_index(int(d2.argmax()), d2.shape)
    long_mm = float(np.sqrt(d2[a, b]))
    if long_mm == 0.0:
        return 0.0, 0.0
    u = (cand[b] - cand[a]) / long_mm
    normal = np.array([-u[1], u[0]])
    proj = pts @ normal
    return long_mm, float(proj.max() - proj.min())
