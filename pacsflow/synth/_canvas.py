"""Local anatomical frames, primitive shapes and the per-slice canvas they are painted on.

A phantom is described in its own local frame (millimetres, axes along the patient's
left, posterior and superior directions, like LPS) and placed in patient coordinates by a
rigid `Frame`. Rendering walks the acquisition grid slice by slice: each axial slice gets a
`Canvas` holding the local coordinates of its pixels and a class label per pixel, and
shapes are painted only inside the window where their bounding sphere meets the slice.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Vec3 = tuple[float, float, float]
Window = tuple[slice, ...]
_EMPTY = np.zeros(0, dtype=np.float32)


def rotation_matrix(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """Local -> patient rotation: yaw about S, pitch (nodding) about L, roll about P."""
    cy, sy = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    cp, sp = math.cos(math.radians(pitch_deg)), math.sin(math.radians(pitch_deg))
    cr, sr = math.cos(math.radians(roll_deg)), math.sin(math.radians(roll_deg))
    rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
    ry = np.array([[cr, 0.0, sr], [0.0, 1.0, 0.0], [-sr, 0.0, cr]])
    return rz @ rx @ ry


@dataclass(frozen=True)
class Frame:
    """Rigid placement: patient (LPS) = rotation @ local + origin_lps."""

    origin_lps: Vec3
    rotation: tuple[Vec3, Vec3, Vec3]

    @classmethod
    def from_angles(
        cls, origin_lps: Vec3, yaw_deg: float = 0.0, pitch_deg: float = 0.0, roll_deg: float = 0.0
    ) -> Frame:
        m = rotation_matrix(yaw_deg, pitch_deg, roll_deg)
        rows = tuple(tuple(float(v) for v in row) for row in m)
        return cls(origin_lps=tuple(float(v) for v in origin_lps), rotation=rows)  # type: ignore[arg-type]

    @property
    def matrix(self) -> np.ndarray:
        return np.asarray(self.rotation, dtype=np.float64)

    def to_world(self, local: Vec3 | np.ndarray) -> np.ndarray:
        return self.matrix @ np.asarray(local, dtype=np.float64) + np.asarray(self.origin_lps)

    def to_local(self, world: Vec3 | np.ndarray) -> np.ndarray:
        return self.matrix.T @ (np.asarray(world, dtype=np.float64) - np.asarray(self.origin_lps))

    def points_to_local(
        self, x: np.ndarray, y: np.ndarray, z: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mt = self.matrix.T
        o = self.origin_lps
        dx, dy, dz = x - o[0], y - o[1], z - o[2]
        return (
            mt[0, 0] * dx + mt[0, 1] * dy + mt[0, 2] * dz,
            mt[1, 0] * dx + mt[1, 1] * dy + mt[1, 2] * dz,
            mt[2, 0] * dx + mt[2, 1] * dy + mt[2, 2] * dz,
        )


def ellipsoid_section_box(
    frame: Frame, axes: Vec3, z_mm: float
) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """Bounding box (x, y) of the axial section at patient z of an ellipsoid centred on the
    frame origin with local semi-axes `axes`; None when the plane misses it."""
    m = frame.matrix
    q = m @ np.diag([1.0 / (a * a) for a in axes]) @ m.T
    w = z_mm - frame.origin_lps[2]
    quu, quz = q[:2, :2], q[:2, 2]
    inv = np.linalg.inv(quu)
    u0 = -w * (inv @ quz)
    s = 1.0 - w * w * (q[2, 2] - quz @ inv @ quz)
    if s <= 0:
        return None
    hx, hy = math.sqrt(s * inv[0, 0]), math.sqrt(s * inv[1, 1])
    ox, oy = frame.origin_lps[0] + u0[0], frame.origin_lps[1] + u0[1]
    return (ox - hx, oy - hy), (ox + hx, oy + hy)


class Canvas:
    """Local coordinates and a class label for each pixel of one slice (or a point set)."""

    def __init__(
        self,
        X: np.ndarray,
        Y: np.ndarray,
        Z: np.ndarray,
        window: Callable[[np.ndarray, float], Window | None] | None = None,
    ) -> None:
        self.X, self.Y, self.Z = X, Y, Z
        self.cls = np.zeros(X.shape, dtype=np.uint8)
        self._window = window
        # Patient y and x of the rows and columns (slices only): for table-fixed objects.
        self.ys_mm: np.ndarray | None = None
        self.xs_mm: np.ndarray | None = None
        self.frame: Frame | None = None
        self.z_world: float | None = None
        # Fields a model leaves for lesion scorers (the head: distance beyond the inner
        # table, normalised radius and 1 / vertical semi-axis per pixel).
        self.e: np.ndarray = _EMPTY
        self.rn: np.ndarray = _EMPTY
        self.invc: np.ndarray | np.float32 = np.float32(0.0)
        self.z_min = float(Z.min()) if Z.size else 0.0
        self.z_max = float(Z.max()) if Z.size else 0.0

    @classmethod
    def for_slice(cls, frame: Frame, z_mm: float, ys_mm: np.ndarray, xs_mm: np.ndarray) -> Canvas:
        """The pixels (ys x xs) of the axial plane at patient z, in the frame's local axes."""
        mt = frame.matrix.T
        o = frame.origin_lps
        xv = (xs_mm - o[0]).astype(np.float32)
        yv = (ys_mm - o[1]).astype(np.float32)
        dz = float(z_mm - o[2])
        coords = []
        for r in range(3):
            c = np.float32(mt[r, 2] * dz)
            coords.append(
                (np.float32(mt[r, 1]) * yv + c)[:, None] + (np.float32(mt[r, 0]) * xv)[None, :]
            )
        x0, y0 = float(xs_mm[0]), float(ys_mm[0])
        dxm = float(xs_mm[1] - xs_mm[0]) if len(xs_mm) > 1 else 1.0
        dym = float(ys_mm[1] - ys_mm[0]) if len(ys_mm) > 1 else 1.0
        ny, nx = len(ys_mm), len(xs_mm)
        m = frame.matrix
        origin = np.asarray(o)

        def window(center_local: np.ndarray, radius: float) -> Window | None:
            w = m @ center_local + origin
            dzc = z_mm - w[2]
            if abs(dzc) >= radius:
                return None
            h = math.sqrt(radius * radius - dzc * dzc)
            j0 = max(0, math.floor((w[0] - h - x0) / dxm))
            j1 = min(nx, math.ceil((w[0] + h - x0) / dxm) + 1)
            i0 = max(0, math.floor((w[1] - h - y0) / dym))
            i1 = min(ny, math.ceil((w[1] + h - y0) / dym) + 1)
            if j0 >= j1 or i0 >= i1:
                return None
            return (slice(i0, i1), slice(j0, j1))

        cv = cls(coords[0], coords[1], coords[2], window)
        cv.ys_mm, cv.xs_mm = ys_mm, xs_mm
        cv.frame, cv.z_world = frame, float(z_mm)
        return cv

    @classmethod
    def for_points(cls, X: np.ndarray, Y: np.ndarray, Z: np.ndarray) -> Canvas:
        """Arbitrary local points (any shape): every shape is evaluated everywhere."""
        f = np.float32
        return cls(np.asarray(X, f), np.asarray(Y, f), np.asarray(Z, f))

    def window(self, center_local: np.ndarray, radius: float) -> Window | None:
        if self._window is None:
            return (Ellipsis,)
        return self._window(center_local, radius)

    def paint(self, shape: Shape, code: int, only: np.ndarray | None = None) -> None:
        """Set `code` where the shape is, optionally only over classes where `only[cls]`."""
        sphere = shape.sphere_near(self)
        if sphere is None:
            return
        win = self.window(*sphere)
        if win is None:
            return
        m = shape.contains(self.X[win], self.Y[win], self.Z[win])
        sub = self.cls[win]
        if only is not None:
            m &= only[sub]
        sub[m] = code


class Shape:
    """A region of the local frame with a bounding sphere (centre, bound)."""

    center: np.ndarray
    bound: float

    def sphere_near(self, cv: Canvas) -> tuple[np.ndarray, float] | None:
        """A bounding sphere of the part of the shape near the canvas (default: all of it)."""
        return self.center, self.bound

    def contains(self, X: np.ndarray, Y: np.ndarray, Z: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class Ellipsoid(Shape):
    """Axis-aligned ellipsoid in the local frame."""

    def __init__(self, center: Vec3, axes: Vec3) -> None:
        self.center = np.asarray(center, dtype=np.float64)
        self.axes = tuple(float(a) for a in axes)
        self.bound = max(self.axes)
        self._inv = tuple(np.float32(1.0 / a) for a in self.axes)
        self._c = tuple(np.float32(c) for c in center)

    def contains(self, X: np.ndarray, Y: np.ndarray, Z: np.ndarray) -> np.ndarray:
        return self.q(X, Y, Z) <= 1.0

    def q(self, X: np.ndarray, Y: np.ndarray, Z: np.ndarray) -> np.ndarray:
        """Squared normalised radius (1 on the surface)."""
        a = (X - self._c[0]) * self._inv[0]
        a *= a
        b = (Y - self._c[1]) * self._inv[1]
        a += b * b
        b = (Z - self._c[2]) * self._inv[2]
        a += b * b
        return a


class Capsule(Shape):
    """Tube of constant radius around a segment (vessels, airways, bones)."""

    def __init__(self, p0: Vec3, p1: Vec3, radius: float) -> None:
        self.p0 = np.asarray(p0, dtype=np.float64)
        self.p1 = np.asarray(p1, dtype=np.float64)
        self.radius = float(radius)
        d = self.p1 - self.p0
        self._d = tuple(np.float32(v) for v in d)
        self._inv_len2 = np.float32(1.0 / max(float(d @ d), 1e-9))
        self._p = tuple(np.float32(v) for v in self.p0)
        self.center = (self.p0 + self.p1) / 2.0
        self.bound = float(np.linalg.norm(d)) / 2.0 + self.radius
        self._world_for: Frame | None = None
        self._w0 = self._w1 = self.p0

    def sphere_near(self, cv: Canvas) -> tuple[np.ndarray, float] | None:
        """On a slice, bound only the piece of the segment within `radius` of its plane."""
        if cv.frame is None or cv.z_world is None:
            return self.center, self.bound
        if self._world_for is not cv.frame:
            self._w0 = cv.frame.to_world(self.p0)
            self._w1 = cv.frame.to_world(self.p1)
            self._world_for = cv.frame
        z0, z1 = self._w0[2], self._w1[2]
        dz = z1 - z0
        if abs(dz) < 1e-9:
            if abs(cv.z_world - z0) > self.radius:
                return None
            return self.center, self.bound
        ta = (cv.z_world - self.radius - z0) / dz
        tb = (cv.z_world + self.radius - z0) / dz
        lo, hi = max(0.0, min(ta, tb)), min(1.0, max(ta, tb))
        if lo > hi:
            return None
        a = self.p0 + lo * (self.p1 - self.p0)
        b = self.p0 + hi * (self.p1 - self.p0)
        return (a + b) / 2.0, float(np.linalg.norm(b - a)) / 2.0 + self.radius

    def dist2(self, X: np.ndarray, Y: np.ndarray, Z: np.ndarray) -> np.ndarray:
        ax, ay, az = X - self._p[0], Y - self._p[1], Z - self._p[2]
        t = (ax * self._d[0] + ay * self._d[1] + az * self._d[2]) * self._inv_len2
        np.clip(t, 0.0, 1.0, out=t)
        ax -= t * self._d[0]
        ay -= t * self._d[1]
        az -= t * self._d[2]
        ax *= ax
        ax += ay * ay
        ax += az * az
        return ax

    def contains(self, X: np.ndarray, Y: np.ndarray, Z: np.ndarray) -> np.ndarray:
        return self.dist2(X, Y, Z) <= np.float32(self.radius * self.radius)


def class_set(n: int, *codes: int) -> np.ndarray:
    """Boolean lookup table over class codes (for `Canvas.paint(only=...)`)."""
    lut = np.zeros(n, dtype=bool)
    lut[list(codes)] = True
    return lut
