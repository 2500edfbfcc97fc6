"""DICOM series -> HU volume with its geometry; the shared first step of training and inference.

Slices are ordered by their position along the slice normal (never by InstanceNumber).
Gantry-tilted or non-uniformly spaced series are refused with a clear reason rather than
silently distorted. Pixel data may be signed or unsigned; RescaleSlope/Intercept give HU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pydicom

from pacsflow.errors import NotAnalysableError

AIR_HU = -1024.0


@dataclass(frozen=True)
class Volume:
    """A CT volume in HU, indexed (z, y, x) = (slice, row, column), with its geometry."""

    hu: np.ndarray  # float32 or int16, shape (z, y, x)
    spacing_zyx: tuple[float, float, float]  # mm
    origin_lps: np.ndarray  # position of voxel (0, 0, 0), mm
    row_dir: np.ndarray  # unit vector along x (columns increase)
    col_dir: np.ndarray  # unit vector along y (rows increase)
    slice_dir: np.ndarray  # unit vector along z (slices increase)
    sop_instance_uids: tuple[str, ...]  # source instance of each z index

    @property
    def voxel_volume_ml(self) -> float:
        z, y, x = self.spacing_zyx
        return z * y * x / 1000.0

    def to_lps(self, zyx: np.ndarray) -> np.ndarray:
        """Voxel indices (..., 3) in (z, y, x) order -> patient coordinates (..., 3) LPS mm."""
        zyx = np.asarray(zyx, dtype=np.float64)
        dz, dy, dx = self.spacing_zyx
        return (
            self.origin_lps
            + zyx[..., 2:3] * dx * self.row_dir
            + zyx[..., 1:2] * dy * self.col_dir
            + zyx[..., 0:1] * dz * self.slice_dir
        )


def _orientation(ds: pydicom.Dataset) -> tuple[np.ndarray, np.ndarray]:
    iop = [float(v) for v in ds.ImageOrientationPatient]
    return np.array(iop[:3]), np.array(iop[3:])


def sort_slices(datasets: Sequence[pydicom.Dataset]) -> list[pydicom.Dataset]:
    """Order slices along the normal of their common orientation."""
    if not datasets:
        raise NotAnalysableError(["the series has no images"])
    for ds in datasets:
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            if keyword not in ds:
                raise NotAnalysableError([f"{keyword} missing: geometry unknown"])
    row, col = _orientation(datasets[0])
    normal = np.cross(row, col)
    return sorted(
        datasets, key=lambda d: float(np.dot(normal, [float(v) for v in d.ImagePositionPatient]))
    )


def load_volume(
    datasets: Sequence[pydicom.Dataset], *, max_spacing_deviation: float = 0.1
) -> Volume:
    """Build a Volume from the instances of one axial series (any order)."""
    slices = sort_slices(datasets)
    row, col = _orientation(slices[0])
    normal = np.cross(row, col)
    for ds in slices[1:]:
        r, c = _orientation(ds)
        if not (np.allclose(r, row, atol=1e-3) and np.allclose(c, col, atol=1e-3)):
            raise NotAnalysableError(["slices have different orientations"])
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in slices])
    if len(slices) > 1:
        steps = np.diff(positions, axis=0)
        along = steps @ normal
        if np.any(along <= 0):
            raise NotAnalysableError(["two slices share one position (duplicate or mixed series)"])
        # Gantry tilt: the step between slices is not parallel to the slice normal.
        off_axis = np.linalg.norm(steps - np.outer(along, normal), axis=1)
        if np.max(off_axis / along) > 0.02:
            raise NotAnalysableError(
                [
                    "gantry-tilted acquisition (slice step not along the normal); "
                    "reconstruct without tilt to analyse"
                ]
            )
        spacing_z = float(np.median(along))
        if np.max(np.abs(along - spacing_z)) > max_spacing_deviation * spacing_z:
            raise NotAnalysableError(["slice spacing is not uniform (missing slices?)"])
        slice_dir = normal
    else:
        spacing_z = float(slices[0].get("SliceThickness", 1.0) or 1.0)
        slice_dir = normal
    dy, dx = (float(v) for v in slices[0].PixelSpacing)  # row spacing, column spacing
    rows, cols = int(slices[0].Rows), int(slices[0].Columns)
    hu = np.empty((len(slices), rows, cols), dtype=np.float32)
    for i, ds in enumerate(slices):
        if int(ds.Rows) != rows or int(ds.Columns) != cols:
            raise NotAnalysableError(["slices have different matrix sizes"])
        stored = ds.pixel_array
        pixels = stored.astype(np.float32)
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        hu[i] = pixels * slope + intercept
        # Pixel Padding Value (PS3.3 C.7.5.1.1.2) marks pixels outside the reconstruction,
        # not tissue: show them as air instead of the vendor's out-of-range sentinel.
        padding = ds.get("PixelPaddingValue")
        if isinstance(padding, int):
            hu[i][stored == padding] = AIR_HU
    return Volume(
        hu=hu,
        spacing_zyx=(spacing_z, dy, dx),
        origin_lps=positions[0],
        row_dir=row,
        col_dir=col,
        slice_dir=slice_dir,
        sop_instance_uids=tuple(str(ds.SOPInstanceUID) for ds in slices),
    )
