"""Analytic chest anatomy for chest CT, lung lobes by position, and nodule placement.

Local frame (mm; +X patient left, +Y posterior, +Z superior), origin on the midline at the
carina. The patient lies flat, so the frame only turns about the long axis (yaw) and every
axial slice has one local Z: shapes that depend on Z alone are evaluated once per slice.
Body wall (fat, muscle, ribs, sternum, spine), lungs with diaphragmatic domes and a
branching pulmonary vessel tree, mediastinum (heart, aorta, pulmonary arteries, venae
cavae, airways, oesophagus) and the upper abdomen are painted in that order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pacsflow.errors import InvalidInputError
from pacsflow.synth._canvas import Canvas, Capsule, Ellipsoid, Frame, Shape, class_set
from pacsflow.synth._render import LesionPlan, ScorerResult
from pacsflow.synth.grid import Grid
from pacsflow.synth.specs import LUNG_LOBES, Nodule

(
    AIR,
    FAT,
    MUSCLE,
    RIB,
    CARTILAGE,
    VERTEBRA,
    MARROW,
    DISC,
    CORD,
    LUNG,
    VESSEL,
    AIRWAY,
    AIRWAY_WALL,
    HEART,
    AORTA,
    LIVER,
    SPLEEN,
    ABDOMEN,
    STOMACH_AIR,
    TABLE,
    TABLE_FOAM,
) = range(21)
N_CLASSES = 24

_LUNG_ROOM = class_set(N_CLASSES, LUNG, VESSEL)
_CAVITY = class_set(N_CLASSES, FAT, LUNG)
_ABDOMEN_ROOM = class_set(N_CLASSES, FAT, LUNG, ABDOMEN, LIVER)
_SOFT_ROOM = class_set(N_CLASSES, FAT, LUNG, MUSCLE, ABDOMEN, LIVER, VESSEL)
_WALL_ROOM = class_set(N_CLASSES, FAT, LUNG, MUSCLE, ABDOMEN, LIVER, VESSEL, AORTA)
_ABDOMEN_ONLY = class_set(N_CLASSES, ABDOMEN)
_LUNG_ONLY = class_set(N_CLASSES, LUNG)

LOBE_WEIGHTS = {"RUL": 0.3, "RML": 0.08, "RLL": 0.18, "LUL": 0.27, "LLL": 0.17}


def nominal_tissue_hu() -> list[float]:
    hu = [0.0] * N_CLASSES
    hu[AIR] = -1000.0
    hu[FAT] = -100.0
    hu[MUSCLE] = 50.0
    hu[RIB] = 650.0
    hu[CARTILAGE] = 140.0
    hu[VERTEBRA] = 700.0
    hu[MARROW] = 230.0
    hu[DISC] = 85.0
    hu[CORD] = 25.0
    hu[LUNG] = -860.0
    hu[VESSEL] = 40.0
    hu[AIRWAY] = -990.0
    hu[AIRWAY_WALL] = 35.0
    hu[HEART] = 42.0
    hu[AORTA] = 42.0
    hu[LIVER] = 60.0
    hu[SPLEEN] = 50.0
    hu[ABDOMEN] = 35.0
    hu[STOMACH_AIR] = -980.0
    hu[TABLE] = 150.0
    hu[TABLE_FOAM] = -880.0
    return hu


Segment = tuple[tuple[float, float, float], tuple[float, float, float], float]


@dataclass(frozen=True)
class ChestAnatomy:
    """Patient-specific chest geometry and densities (drawn by `draw_chest_anatomy`)."""

    frame: Frame
    scale: tuple[float, float, float]
    body_axes: tuple[float, float]  # left-right, antero-posterior semi-axes (mm)
    fat_mm: float
    wall_mm: float
    lung_apex_mm: float
    dome_right_mm: float
    dome_left_mm: float
    rib_phase_mm: float
    vessels: tuple[Segment, ...]
    tissue_hu: tuple[float, ...]


def _vessel_tree(rng: np.random.Generator, side: float) -> list[Segment]:
    """Pulmonary arteries/veins: from the hilum, three lobar trunks, four generations."""
    hilum = np.array([side * 42.0, 8.0, -8.0])
    out: list[Segment] = []
    trunks = [(side * 0.5, -0.2, 0.85), (side * 0.85, -0.45, -0.1), (side * 0.45, 0.45, -0.75)]
    stack = [(hilum, np.array(t) / np.linalg.norm(t), 4.8, 42.0, 0) for t in trunks]
    while stack:
        p, d, r, length, gen = stack.pop()
        q = p + d * length
        out.append((tuple(float(v) for v in p), tuple(float(v) for v in q), float(r)))  # type: ignore[arg-type]
        if gen >= 4:
            continue
        for _ in range(2):
            nd = d + rng.normal(scale=0.45, size=3)
            nd /= np.linalg.norm(nd)
            stack.append(
                (q, nd, max(r * 0.7, 0.8), length * float(rng.uniform(0.65, 0.85)), gen + 1)
            )
    return out


def draw_chest_anatomy(
    rng: np.random.Generator, grid: Grid, *, jitter: bool = True
) -> ChestAnatomy:
    """A plausible adult chest placed in the grid's field of view."""

    def u(lo: float, hi: float, nominal: float) -> float:
        return float(rng.uniform(lo, hi)) if jitter else nominal

    g = u(0.92, 1.08, 1.0)
    scale = (g * u(0.96, 1.04, 1.0), g * u(0.96, 1.04, 1.0), g * u(0.95, 1.05, 1.0))
    x, y, z = grid.x_mm(), grid.y_mm(), grid.z_mm()
    coverage = z[-1] - z[0] + grid.spacing_zyx_mm[0]
    fat = u(8.0, 25.0, 15.0)
    body = (140.0 * scale[0] + fat, 96.0 * scale[1] + fat)
    center = (
        float((x[0] + x[-1]) / 2) + u(-10, 10, 0),
        float((y[0] + y[-1]) / 2) + u(-8, 12, 0),
        float(z[0] - grid.spacing_zyx_mm[0] / 2 + 0.57 * coverage) + u(-10, 10, 0),
    )
    vessels = []
    for side in (-1.0, 1.0):
        for p0, p1, r in _vessel_tree(rng, side):
            vessels.append(
                (
                    tuple(a * s for a, s in zip(p0, scale, strict=True)),
                    tuple(a * s for a, s in zip(p1, scale, strict=True)),
                    r,
                )
            )
    hu = nominal_tissue_hu()
    hu[LUNG] = u(-880.0, -830.0, -860.0)
    hu[MUSCLE] = u(42.0, 58.0, 50.0)
    hu[FAT] = u(-110.0, -90.0, -100.0)
    hu[LIVER] = u(50.0, 70.0, 60.0)
    blood = u(35.0, 48.0, 42.0)
    hu[HEART] = hu[AORTA] = hu[VESSEL] = blood
    return ChestAnatomy(
        frame=Frame.from_angles(center, u(-4, 4, 0)),
        scale=scale,
        body_axes=body,
        fat_mm=fat,
        wall_mm=u(11.0, 16.0, 13.0),
        lung_apex_mm=u(105.0, 125.0, 115.0) * scale[2],
        dome_right_mm=u(-105.0, -85.0, -95.0) * scale[2],
        dome_left_mm=u(-120.0, -100.0, -108.0) * scale[2],
        rib_phase_mm=u(0.0, 28.0, 0.0),
        vessels=tuple(vessels),  # type: ignore[arg-type]
        tissue_hu=tuple(hu),
    )


@dataclass
class _Layout:
    cls: np.ndarray
    ring: tuple[np.ndarray, ...] | None
    ring_angle: np.ndarray | None
    lung_q: np.ndarray
    cavity: tuple[np.ndarray, ...]
    dome: np.ndarray
    organ: np.ndarray
    sternum: np.ndarray


class ChestModel:
    background_hu = -1000.0

    def __init__(self, anatomy: ChestAnatomy) -> None:
        self.an = anatomy
        self.frame = anatomy.frame
        self.lut = np.asarray(anatomy.tissue_hu, dtype=np.float32)
        sx, sy, sz = anatomy.scale
        self.sx, self.sy, self.sz = sx, sy, sz
        a, b = anatomy.body_axes
        self.cavity = (a - anatomy.fat_mm - anatomy.wall_mm, b - anatomy.fat_mm - anatomy.wall_mm)
        self.lung_cy = 8.0 * sy
        self.lung_axes = (0.47 * self.cavity[0], 0.97 * self.cavity[1])
        self.lung_cx = 0.53 * self.cavity[0]
        self.spine_y = b - anatomy.fat_mm - 52.0 * sy
        self._layout_key: tuple[float, ...] | None = None
        self._layout_cache: _Layout | None = None
        self._build_structures()

    def s(self, x: float, y: float, z: float) -> tuple[float, float, float]:
        return (x * self.sx, y * self.sy, z * self.sz)

    def _build_structures(self) -> None:
        s = self.s
        ms = (self.sx + self.sy + self.sz) / 3

        def cap(
            p0: tuple[float, float, float],
            p1: tuple[float, float, float],
            r: float,
        ) -> Capsule:
            return Capsule(s(*p0), s(*p1), r * ms)

        self.heart = Ellipsoid(s(18, -22, -72), (62 * self.sx, 50 * self.sy, 48 * self.sz))
        self.great_vessels: list[Shape] = [
            cap((8, -14, -45), (8, -16, 25), 15),  # ascending aorta
            cap((8, -16, 25), (6, 4, 40), 13),  # arch
            cap((6, 4, 40), (22, 24, 28), 12),
            cap((22, 24, 28), (12, 20, -220), 12),  # descending aorta
            cap((10, -34, -28), (14, -10, 4), 14),  # pulmonary trunk
            cap((14, -10, 4), (-44, 6, -6), 10.5),  # right pulmonary artery
            cap((14, -10, 4), (46, 12, 1), 10),  # left pulmonary artery
            cap((-26, -14, -20), (-22, -8, 80), 10),  # superior vena cava
            cap((-20, 8, -230), (-18, 0, -105), 12),  # inferior vena cava
        ]
        self.airway_walls = [
            cap((0, 5, -5), (0, -12, 170), 11),
            cap((0, 5, -5), (-42, 12, -25), 8.5),
            cap((0, 5, -5), (44, 14, -38), 8),
        ]
        self.airways = [
            cap((0, 5, -5), (0, -12, 170), 8.5),
            cap((0, 5, -5), (-42, 12, -25), 6.5),
            cap((0, 5, -5), (44, 14, -38), 6),
        ]
        self.esophagus = cap((4, 30, -220), (0, 22, 170), 7)
        self.spleen = Ellipsoid(s(78, 45, -150), (26 * self.sx, 42 * self.sy, 45 * self.sz))
        self.stomach = Ellipsoid(s(45, -25, -135), (40 * self.sx, 36 * self.sy, 28 * self.sz))
        self.vessel_caps = [Capsule(p0, p1, r) for p0, p1, r in self.an.vessels]
        # Patient z-range of each vessel, to skip the many that miss a slice in one go.
        ends = np.array(
            [
                [self.frame.to_world(c.p0)[2], self.frame.to_world(c.p1)[2], c.radius]
                for c in self.vessel_caps
            ]
        ).reshape(-1, 3)
        self._vessel_zlo = np.minimum(ends[:, 0], ends[:, 1]) - ends[:, 2]
        self._vessel_zhi = np.maximum(ends[:, 0], ends[:, 1]) + ends[:, 2]

    # ---- geometry -----------------------------------------------------------------------
    def slice_crop_lps(self, z_mm: float) -> tuple[tuple[float, float], tuple[float, float]] | None:
        a, b = self.an.body_axes
        m = self.frame.matrix
        c, s = m[0, 0], m[1, 0]
        hx = math.hypot(a * c, b * s) + 2.0
        hy = math.hypot(a * s, b * c) + 2.0
        ox, oy, _ = self.frame.origin_lps
        return (ox - hx, oy - hy), (ox + hx, oy + hy)

    def paint_fixed(self, raw: np.ndarray, grid: Grid) -> None:
        """The couch under the patient: two carbon skins around foam."""
        ox, oy, _ = self.frame.origin_lps
        bottom = oy + self.an.body_axes[1]
        y = grid.y_mm()
        x = grid.x_mm()
        wide = np.abs(x - ox) < 210.0
        layers = [(1.0, 3.5, TABLE), (3.5, 22.0, TABLE_FOAM), (22.0, 24.5, TABLE)]
        for lo, hi, code in layers:
            rows = (y >= bottom + lo) & (y < bottom + hi)
            raw[:, rows[:, None] & wide[None, :]] = self.lut[code]

    def dome(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """Z of the diaphragm under each lung (right for X < 0), lower at the edges and back."""
        ax, ay = self.lung_axes
        right = X < 0
        cx = np.where(right, -self.lung_cx, self.lung_cx)
        top = np.where(right, self.an.dome_right_mm, self.an.dome_left_mm)
        rr = ((X - cx) / ax) ** 2 + ((Y - self.lung_cy + 10.0) / ay) ** 2
        return top - 38.0 * self.sz * rr - 14.0 * self.sz * np.clip(Y / ay, -1, 1)

    def _layout(self, X: np.ndarray, Y: np.ndarray, with_ribs: bool) -> _Layout:
        """Everything of a slice that does not depend on Z (the body is a straight cylinder)."""
        an = self.an
        a, b = an.body_axes
        ca, cb = self.cavity
        fa, fb = a - an.fat_mm, b - an.fat_mm
        f32 = np.float32
        cls = np.zeros(X.shape, dtype=np.uint8)
        rho = (X * f32(1 / a)) ** 2 + (Y * f32(1 / b)) ** 2
        cls[rho <= 1.0] = FAT
        rm = (X * f32(1 / fa)) ** 2 + (Y * f32(1 / fb)) ** 2
        cls[rm <= 1.0] = MUSCLE
        rc = (X * f32(1 / ca)) ** 2 + (Y * f32(1 / cb)) ** 2
        cavity = rc <= 1.0
        cls[cavity] = FAT
        ring = np.nonzero((rc > 1.0) & (rm < 0.93)) if with_ribs else None
        ring_angle = np.abs(np.arctan2(X[ring], Y[ring])).astype(f32) if ring else None
        # Normalised lung radius (min over both lungs) at full width, inf outside the cavity.
        ax, ay = self.lung_axes
        q = np.full(X.shape, np.inf, dtype=f32)
        for cx in (-self.lung_cx, self.lung_cx):
            t = ((X - f32(cx)) * f32(1 / ax)) ** 2 + ((Y - f32(self.lung_cy)) * f32(1 / ay)) ** 2
            np.minimum(q, t, out=q)
        q[~cavity] = np.inf
        cav = np.nonzero(cavity)
        dome = self.dome(X[cav], Y[cav]).astype(f32)
        organ = np.where(X[cav] < 15.0 * self.sx, LIVER, ABDOMEN).astype(np.uint8)
        sternum = (X * f32(1 / 17.0)) ** 2 + ((Y + f32(fb - 9.0)) * f32(1 / 7.0)) ** 2 <= 1.0
        return _Layout(cls, ring, ring_angle, q, cav, dome, organ, sternum)

    def _cached_layout(self, cv: Canvas) -> _Layout:
        key = (cv.X.shape[0], cv.X.shape[1], float(cv.X.flat[0]), float(cv.Y.flat[0]))
        if self._layout_key != key or self._layout_cache is None:
            self._layout_cache = self._layout(cv.X, cv.Y, with_ribs=True)
            self._layout_key = key
        return self._layout_cache

    # ---- classification -------------------------------------------------------------------
    def classify(self, cv: Canvas) -> None:
        """Fill cv.cls; a chest canvas is planar (one local Z)."""
        an = self.an
        z = float(cv.Z.flat[0])
        if cv.ys_mm is not None:
            lay = self._cached_layout(cv)
        else:
            lay = self._layout(cv.X, cv.Y, with_ribs=False)
        cls = cv.cls
        cls[...] = lay.cls
        if lay.ring is not None and lay.ring_angle is not None:
            # Ribs: a helix-like band inside the muscle, descending towards the front.
            ang = lay.ring_angle
            phase = (z + an.rib_phase_mm + 48.0 * ang) * np.float32(1 / 27.0)
            phase -= np.floor(phase)
            rib = (phase < 0.36) & (ang < 2.95)
            cur = cls[lay.ring]
            cur[rib & (ang < 2.55)] = RIB
            cur[rib & (ang >= 2.55)] = CARTILAGE
            cls[lay.ring] = cur
        # Lungs within the rib cage, above the domes, rounded at the apex.
        top_flat = an.lung_apex_mm - 70.0 * self.sz
        f = 1.0
        if z > top_flat:
            t = (z - top_flat) / (an.lung_apex_mm - top_flat)
            f = math.sqrt(max(1.0 - t * t, 0.0))
        if f > 0.02 and z > min(an.dome_right_mm, an.dome_left_mm) - 70.0 * self.sz:
            cls[lay.lung_q <= f * f] = LUNG
        # Upper abdomen below the domes.
        if z < max(an.dome_right_mm, an.dome_left_mm) + 2.0:
            below = z < lay.dome
            cur = cls[lay.cavity]
            cur[below] = lay.organ[below]
            cls[lay.cavity] = cur
            cv.paint(self.spleen, SPLEEN, only=_ABDOMEN_ROOM)
            cv.paint(self.stomach, STOMACH_AIR, only=_ABDOMEN_ONLY)
        cv.paint(self.heart, HEART, only=_CAVITY)
        for shape in self.great_vessels:
            cv.paint(shape, AORTA, only=_SOFT_ROOM)
        for shape in self.airway_walls:
            cv.paint(shape, AIRWAY_WALL, only=_WALL_ROOM)
        for shape in self.airways:
            cv.paint(shape, AIRWAY)
        cv.paint(self.esophagus, MUSCLE, only=_SOFT_ROOM)
        if cv.z_world is not None:
            near = np.flatnonzero(
                (self._vessel_zlo <= cv.z_world) & (self._vessel_zhi >= cv.z_world)
            )
            for i in near:
                cv.paint(self.vessel_caps[i], VESSEL, only=_LUNG_ONLY)
        else:
            for shape in self.vessel_caps:
                cv.paint(shape, VESSEL, only=_LUNG_ONLY)
        self._spine(cv, z)
        if -100.0 * self.sz < z < 100.0 * self.sz:
            cls[lay.sternum] = RIB

    def _spine(self, cv: Canvas, z: float) -> None:
        sy, sx = self.sy, self.sx
        yv = self.spine_y
        box = cv.window(np.array([0.0, yv + 15.0 * sy, z]), 60.0 * sy)
        if box is None:
            return
        X, Y, cls = cv.X[box], cv.Y[box], cv.cls[box]
        fb = np.float32
        muscles = (
            ((np.abs(X) - fb(28 * sx)) * fb(1 / (20 * sx))) ** 2
            + ((Y - fb(yv + 36 * sy)) * fb(1 / (19 * sy))) ** 2
        ) <= 1.0
        cls[muscles & (cls != AIR)] = MUSCLE
        body = (X * fb(1 / (19 * sx))) ** 2 + ((Y - fb(yv)) * fb(1 / (16 * sy))) ** 2
        disc = ((z - self.an.rib_phase_mm) / (27.0 * self.sz)) % 1.0 < 0.2
        cls[body <= 1.0] = DISC if disc else VERTEBRA
        if not disc:
            cls[body <= 0.8] = MARROW
        dy = Y - fb(yv + 27 * sy)
        canal = X * X + dy * dy
        cls[(canal <= (13.0 * sx) ** 2) & (dy > -6.0 * sy)] = VERTEBRA
        transverse = (
            ((np.abs(X) - fb(22 * sx)) * fb(1 / (12 * sx))) ** 2
            + ((Y - fb(yv + 22 * sy)) * fb(1 / (5 * sy))) ** 2
        ) <= 1.0
        cls[transverse] = VERTEBRA
        spinous = (
            (X * fb(1 / (4 * sx))) ** 2 + ((Y - fb(yv + 44 * sy)) * fb(1 / (10 * sy))) ** 2
        ) <= 1.0
        cls[spinous] = VERTEBRA
        cls[canal <= (8.0 * sx) ** 2] = CORD

    def render_slice(self, cv: Canvas) -> np.ndarray:
        self.classify(cv)
        hu = self.lut[cv.cls]
        lung = cv.cls == LUNG
        # Dependent lung (posterior, patient supine) is denser.
        hu[lung] += np.float32(45.0 / self.lung_axes[1]) * cv.Y[lung]
        return hu

    # ---- lobes ------------------------------------------------------------------------------
    def lobe(self, X: float, Y: float, Z: float) -> str:
        """RUL/RML/RLL/LUL/LLL from position: oblique and horizontal fissures as planes."""
        ay = self.lung_axes[1]
        v = max(-1.0, min(1.0, (Y - self.lung_cy) / ay))
        base = min(self.an.dome_right_mm, self.an.dome_left_mm) - 30.0 * self.sz
        h = (Z - base) / (self.an.lung_apex_mm - base)
        lower = h < 0.42 + 0.30 * v
        if X < 0:
            if lower:
                return "RLL"
            return "RML" if h < 0.56 else "RUL"
        return "LLL" if lower else "LUL"

    def classify_points(self, X: np.ndarray, Y: np.ndarray, Z: np.ndarray) -> np.ndarray:
        """Classes of arbitrary local points (grouped by Z: chest canvases are planar)."""
        out = np.zeros(np.shape(X), dtype=np.uint8)
        for zv in np.unique(Z):
            sel = Z == zv
            cv = Canvas.for_points(X[sel], Y[sel], np.full(int(sel.sum()), zv))
            self.classify(cv)
            out[sel] = cv.cls
        return out


# ---- nodule placement ------------------------------------------------------------------------


@dataclass(frozen=True)
class PlacedNodule:
    center_local: tuple[float, float, float]
    center_lps: tuple[float, float, float]
    lobe: str


def _directions() -> np.ndarray:
    d = [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]
    d += [(sx, sy, sz) for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]
    a = np.asarray(d, dtype=np.float64)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


_DIRS = _directions()


def place_nodule(
    model: ChestModel, nod: Nodule, grid: Grid, rng: np.random.Generator
) -> PlacedNodule:
    """Centre of a nodule: explicit (checked to be in a lung) or sampled in its lobe."""
    radius = nod.diameter_mm / 2.0
    if nod.center_mm is not None:
        local = model.frame.to_local(nod.center_mm)
        cls = model.classify_points(*(np.array([v]) for v in local))
        if cls[0] not in (LUNG, VESSEL):
            raise InvalidInputError(f"nodule centre {nod.center_mm} is not inside a lung")
        return PlacedNodule(
            tuple(float(v) for v in local),  # type: ignore[arg-type]
            tuple(float(v) for v in nod.center_mm),  # type: ignore[arg-type]
            model.lobe(*local),
        )
    lobe = nod.lobe
    if lobe is None:
        w = np.array([LOBE_WEIGHTS[k] for k in LUNG_LOBES])
        lobe = str(rng.choice(LUNG_LOBES, p=w / w.sum()))
    z_world = grid.z_mm()
    margin = radius + 3.0
    z_lo = model.frame.to_local((0, 0, z_world[0] + margin))[2]
    z_hi = model.frame.to_local((0, 0, z_world[-1] - margin))[2]
    side = -1.0 if lobe.startswith("R") else 1.0
    ax, ay = model.lung_axes
    for _ in range(60):
        z = float(
            rng.uniform(
                max(z_lo, model.an.dome_left_mm - 40.0), min(z_hi, model.an.lung_apex_mm - 10.0)
            )
        )
        n = 64
        X = side * model.lung_cx + rng.uniform(-ax, ax, n)
        Y = model.lung_cy + rng.uniform(-ay, ay, n)
        Z = np.full(n, z)
        cls = model.classify_points(X, Y, Z)
        for i in np.flatnonzero(cls == LUNG):
            c = (float(X[i]), float(Y[i]), z)
            if model.lobe(*c) != lobe:
                continue
            pts = np.asarray(c) + _DIRS * margin
            around = model.classify_points(pts[:, 0], pts[:, 1], pts[:, 2])
            if np.all(_LUNG_ROOM[around]):
                world = model.frame.to_world(c)
                return PlacedNodule(c, tuple(round(float(v), 2) for v in world), lobe)  # type: ignore[arg-type]
    raise InvalidInputError(
        f"no room for a {nod.diameter_mm:g} mm nodule in {lobe} within the scanned range"
    )


def plan_nodule(
    model: ChestModel, nod: Nodule, label: int, grid: Grid, rng: np.random.Generator
) -> tuple[LesionPlan, PlacedNodule]:
    placed = place_nodule(model, nod, grid, rng)
    c = np.asarray(placed.center_local)
    radius = nod.diameter_mm / 2.0
    n = max(1, round(nod.volume_ml / grid.voxel_ml))
    k = rng.normal(size=(2, 3))
    k *= (2 * math.pi / max(1.2 * radius, 1.0)) / np.linalg.norm(k, axis=1, keepdims=True)
    k = k.astype(np.float32)
    ph = rng.uniform(0, 2 * math.pi, 2).astype(np.float32)
    lobulation = 0.09 if nod.nodule_type == "solid" else 0.06
    inv = np.float32(1.0 / radius)
    # Room for candidates: beyond the sphere, and at least one voxel whatever the grid.
    half_diag = 0.5 * math.sqrt(sum(v * v for v in grid.spacing_zyx_mm))
    reach = max(1.8 * radius, radius + 2.0 * half_diag)
    q_max = np.float32((reach / radius) ** 2)
    bound = reach + 1.0

    def scorer(cv: Canvas) -> ScorerResult | None:
        win = cv.window(c, bound)
        if win is None:
            return None
        dx = cv.X[win] - np.float32(c[0])
        dy = cv.Y[win] - np.float32(c[1])
        dz = cv.Z[win] - np.float32(c[2])
        q = (dx * dx + dy * dy + dz * dz) * (inv * inv)
        q *= 1.0 + lobulation * (
            np.cos(k[0, 0] * dx + k[0, 1] * dy + k[0, 2] * dz + ph[0])
            + 0.6 * np.cos(k[1, 0] * dx + k[1, 1] * dy + k[1, 2] * dz + ph[1])
        )
        m = _LUNG_ROOM[cv.cls[win]] & (q < q_max)
        ii, jj = np.nonzero(m)
        return ii + win[0].start, jj + win[1].start, q[m], None  # type: ignore[union-attr]

    desc = f"{nod.diameter_mm:g} mm {nod.nodule_type} nodule in {placed.lobe}"
    if nod.nodule_type == "solid":
        plan = LesionPlan(label, n, scorer, float(rng.uniform(25.0, 50.0)), 6.0, desc)
    elif nod.nodule_type == "ground-glass":
        plan = LesionPlan(label, n, scorer, float(rng.uniform(-680.0, -450.0)), 35.0, desc)
    else:
        frac = (
            nod.solid_fraction if nod.solid_fraction is not None else float(rng.uniform(0.35, 0.65))
        )
        plan = LesionPlan(
            label,
            n,
            scorer,
            float(rng.uniform(-620.0, -480.0)),
            30.0,
            desc,
            core_voxels=max(1, round(n * frac**3)),
            core_hu_mean=float(rng.uniform(10.0, 45.0)),
        )
    return plan, placed
