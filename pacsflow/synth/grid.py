"""The acquisition grid of an axial CT volume and its voxel -> patient (LPS) mapping.

Arrays are indexed [k, i, j] = (slice, row, column). The DICOM written for the grid uses
ImageOrientationPatient 1\\0\\0\\0\\1\\0 (PS3.3 C.7.6.2.1.1): a row runs along +X (patient
left), a column along +Y (posterior), and slices are stacked along +Z (superior), so

    LPS(k, i, j) = origin_lps_mm + (j * dx, i * dy, k * dz)

and ImagePositionPatient of slice k is (x0, y0, z0 + k * dz), the centre of its first voxel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pacsflow.errors import InvalidInputError


@dataclass(frozen=True)
class Grid:
    """Shape (z, y, x), spacing (z, y, x) in mm, origin (x, y, z) LPS of voxel [0, 0, 0]."""

    shape_zyx: tuple[int, int, int]
    spacing_zyx_mm: tuple[float, float, float]
    origin_lps_mm: tuple[float, float, float]

    def __post_init__(self) -> None:
        if len(self.shape_zyx) != 3 or min(self.shape_zyx) < 1:
            raise InvalidInputError(f"grid shape must be 3 positive sizes, got {self.shape_zyx}")
        if len(self.spacing_zyx_mm) != 3 or min(self.spacing_zyx_mm) <= 0:
            raise InvalidInputError(f"grid spacing must be positive, got {self.spacing_zyx_mm}")

    @classmethod
    def axial(
        cls,
        *,
        matrix: int,
        fov_mm: float,
        n_slices: int,
        slice_mm: float,
        center_lps_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
    ) -> Grid:
        """A square axial grid of `matrix` pixels over `fov_mm`, centred on `center_lps_mm`."""
        if matrix < 8:
            raise InvalidInputError(f"matrix must be at least 8 pixels, got {matrix}")
        px = fov_mm / matrix
        half = (matrix - 1) * px / 2.0
        cx, cy, cz = center_lps_mm
        origin = (
            round(cx - half, 4),
            round(cy - half, 4),
            round(cz - (n_slices - 1) * slice_mm / 2.0, 4),
        )
        return cls((n_slices, matrix, matrix), (slice_mm, px, px), origin)

    @property
    def nz(self) -> int:
        return self.shape_zyx[0]

    @property
    def ny(self) -> int:
        return self.shape_zyx[1]

    @property
    def nx(self) -> int:
        return self.shape_zyx[2]

    @property
    def voxel_ml(self) -> float:
        dz, dy, dx = self.spacing_zyx_mm
        return dz * dy * dx / 1000.0

    @property
    def pixel_spacing_mm(self) -> tuple[float, float]:
        """DICOM PixelSpacing order: (row spacing = dy, column spacing = dx)."""
        return (self.spacing_zyx_mm[1], self.spacing_zyx_mm[2])

    def x_mm(self) -> np.ndarray:
        return self.origin_lps_mm[0] + np.arange(self.nx) * self.spacing_zyx_mm[2]

    def y_mm(self) -> np.ndarray:
        return self.origin_lps_mm[1] + np.arange(self.ny) * self.spacing_zyx_mm[1]

    def z_mm(self) -> np.ndarray:
        return self.origin_lps_mm[2] + np.arange(self.nz) * self.spacing_zyx_mm[0]

    def slice_position(self, k: int) -> tuple[float, float, float]:
        """ImagePositionPatient of slice k."""
        x0, y0, z0 = self.origin_lps_mm
        return (x0, y0, z0 + k * self.spacing_zyx_mm[0])

    def index_to_lps(
        self, zyx: tuple[float, float, float] | np.ndarray
    ) -> tuple[float, float, float]:
        k, i, j = (float(v) for v in zyx)
        dz, dy, dx = self.spacing_zyx_mm
        x0, y0, z0 = self.origin_lps_mm
        return (x0 + j * dx, y0 + i * dy, z0 + k * dz)

    def lps_to_index(
        self, lps: tuple[float, float, float] | np.ndarray
    ) -> tuple[float, float, float]:
        x, y, z = (float(v) for v in lps)
        dz, dy, dx = self.spacing_zyx_mm
        x0, y0, z0 = self.origin_lps_mm
        return ((z - z0) / dz, (y - y0) / dy, (x - x0) / dx)

    def with_slices(self, n_slices: int, slice_mm: float, z0_mm: float) -> Grid:
        """Same in-plane grid, other slices (e.g. the thin series of the same scan)."""
        x0, y0, _ = self.origin_lps_mm
        return Grid(
            (n_slices, self.ny, self.nx),
            (slice_mm, self.spacing_zyx_mm[1], self.spacing_zyx_mm[2]),
            (x0, y0, round(z0_mm, 4)),
        )
