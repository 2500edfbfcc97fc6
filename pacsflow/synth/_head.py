"""Analytic head anatomy for non-contrast and contrast head CT, and hemorrhage placement.

The head lives in a local frame (mm; +X patient left, +Y posterior, +Z superior) centred on
the cranial cavity. Layers follow the ray distance `e` to the inner table of an ellipsoidal
cranial vault (negative inside): scalp, outer table, diploe, inner table, subarachnoid
CSF, cortex with sulci, white matter. Named structures (ventricles, deep grey matter,
posterior fossa, cisterns, venous sinuses, arteries, skull base) are painted on top.
Nominal sizes are those of an adult; `HeadAnatomy.scale` stretches them per patient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pacsflow.domain import Location
from pacsflow.errors import InvalidInputError
from pacsflow.synth._canvas import (
    Canvas,
    Capsule,
    Ellipsoid,
    Frame,
    Shape,
    class_set,
    ellipsoid_section_box,
)
from pacsflow.synth._render import LesionPlan, Scorer, ScorerResult
from pacsflow.synth.grid import Grid
from pacsflow.synth.specs import Hemorrhage

# Tissue classes.
(
    AIR,
    SKIN,
    FAT,
    CORTICAL,
    DIPLOE,
    CSF,
    GM,
    WM,
    VENTRICLE,
    DEEP_GM,
    CEREBELLUM,
    BRAINSTEM,
    VENOUS,
    ARTERY,
    DURA,
    CALCIFICATION,
    SINUS_AIR,
    ORBIT_FAT,
    GLOBE,
    SOFT,
    BASE_BONE,
    MASTOID,
    HOLDER,
) = range(23)
N_CLASSES = 24

_PARENCHYMA = class_set(N_CLASSES, GM, WM, DEEP_GM, CEREBELLUM, BRAINSTEM)
_BRAIN_OR_CSF = class_set(N_CLASSES, GM, WM, DEEP_GM, CEREBELLUM, BRAINSTEM, CSF)
_GM_WM = class_set(N_CLASSES, GM, WM)
_INTRACRANIAL = class_set(
    N_CLASSES, GM, WM, DEEP_GM, CEREBELLUM, BRAINSTEM, CSF, VENTRICLE, DURA, ARTERY, VENOUS
)
_EXTRA_AXIAL_ROOM = class_set(N_CLASSES, CSF, GM, WM, DEEP_GM, CEREBELLUM, VENOUS, DURA, ARTERY)
_BONE_OR_SOFT = class_set(N_CLASSES, SOFT, BASE_BONE, CORTICAL, DIPLOE, SKIN, FAT)
_BASE = class_set(N_CLASSES, SOFT, BASE_BONE, CORTICAL, DIPLOE, CSF)
_NOT_BRAIN = class_set(
    N_CLASSES, AIR, SKIN, FAT, CORTICAL, DIPLOE, SOFT, BASE_BONE, ORBIT_FAT, SINUS_AIR, MASTOID
)
_VESSEL_ROOM = class_set(N_CLASSES, CSF, GM, WM, DEEP_GM, CEREBELLUM, BRAINSTEM, DURA)

# Nominal inner-table semi-axes (mm): left-right, antero-posterior, up, down.
NOMINAL_AXES = (67.0, 85.0, 70.0, 100.0)

REGION_NAMES = (
    "frontal lobe",
    "parietal lobe",
    "temporal lobe",
    "occipital lobe",
    "basal ganglia",
    "thalamus",
    "cerebellum",
    "brainstem",
)
FRONTAL, PARIETAL, TEMPORAL, OCCIPITAL, BASAL_GANGLIA, THALAMUS, CEREBELLUM_R, BRAINSTEM_R = range(
    8
)
_LOBE_CODE = {
    "frontal": FRONTAL,
    "parietal": PARIETAL,
    "temporal": TEMPORAL,
    "occipital": OCCIPITAL,
}


@dataclass(frozen=True)
class HeadAnatomy:
    """Patient-specific head geometry and tissue densities (drawn by `draw_head_anatomy`)."""

    frame: Frame
    scale: tuple[float, float, float]
    skull_mm: float
    scalp_mm: float
    scalp_fat_mm: float
    csf_rim_mm: float
    cortex_mm: float
    atrophy: float  # 0 young .. 1 atrophic: wider sulci and ventricles
    gyri: tuple[tuple[float, float, float, float], ...]  # wave vector (rad/mm) + phase
    calcified_choroid: bool
    calcified_pineal: bool
    tissue_hu: tuple[float, ...]

    @property
    def inner_axes(self) -> tuple[float, float, float, float]:
        sx, sy, sz = self.scale
        a, b, c, cl = NOMINAL_AXES
        return (a * sx, b * sy, c * sz, cl * sz)

    @property
    def outer_mm(self) -> float:
        return self.skull_mm + self.scalp_mm


def nominal_tissue_hu() -> list[float]:
    hu = [0.0] * N_CLASSES
    hu[AIR] = -1000.0
    hu[SKIN] = 42.0
    hu[FAT] = -90.0
    hu[CORTICAL] = 1350.0
    hu[DIPLOE] = 550.0
    hu[CSF] = 6.0
    hu[GM] = 37.0
    hu[WM] = 29.0
    hu[VENTRICLE] = 5.0
    hu[DEEP_GM] = 35.0
    hu[CEREBELLUM] = 37.0
    hu[BRAINSTEM] = 31.0
    hu[VENOUS] = 48.0
    hu[ARTERY] = 44.0
    hu[DURA] = 55.0
    hu[CALCIFICATION] = 180.0
    hu[SINUS_AIR] = -950.0
    hu[ORBIT_FAT] = -85.0
    hu[GLOBE] = 12.0
    hu[SOFT] = 55.0
    hu[BASE_BONE] = 950.0
    hu[MASTOID] = -450.0
    hu[HOLDER] = 180.0
    return hu


def draw_head_anatomy(rng: np.random.Generator, grid: Grid, *, jitter: bool = True) -> HeadAnatomy:
    """A plausible adult head placed in the grid's field of view (varied when `jitter`)."""

    def u(lo: float, hi: float, nominal: float) -> float:
        return float(rng.uniform(lo, hi)) if jitter else nominal

    g = u(0.93, 1.06, 1.0)
    scale = (g * u(0.96, 1.04, 1.0), g * u(0.96, 1.04, 1.0), g * u(0.96, 1.04, 1.0))
    yaw, pitch, roll = u(-6, 6, 0), u(-10, 8, 0), u(-3, 3, 0)
    x = grid.x_mm()
    y = grid.y_mm()
    z = grid.z_mm()
    coverage = z[-1] - z[0] + grid.spacing_zyx_mm[0]
    center = (
        float((x[0] + x[-1]) / 2) + u(-8, 8, 0),
        float((y[0] + y[-1]) / 2) + u(-6, 10, 0),
        float(z[0] - grid.spacing_zyx_mm[0] / 2 + 0.44 * coverage) + u(-4, 4, 0),
    )
    atrophy = u(0.0, 1.0, 0.3)
    gyri = []
    for _ in range(3):
        v = rng.normal(size=3) if jitter else np.array([1.0, 0.7, 0.4])
        v = v / np.linalg.norm(v)
        k = 2 * math.pi / u(16.0, 22.0, 19.0)
        gyri.append((float(v[0] * k), float(v[1] * k), float(v[2] * k), u(0, 2 * math.pi, 1.0)))
    hu = nominal_tissue_hu()
    gm = u(34.0, 40.0, 37.0)
    hu[GM] = gm
    hu[CEREBELLUM] = gm + u(-1.0, 1.5, 0.0)
    hu[DEEP_GM] = gm - u(0.5, 3.0, 2.0)
    hu[WM] = gm - u(6.0, 9.0, 8.0)
    hu[BRAINSTEM] = hu[WM] + u(0.0, 3.0, 2.0)
    hu[CSF] = u(3.0, 9.0, 6.0)
    hu[VENTRICLE] = hu[CSF] - u(0.0, 2.0, 1.0)
    hu[CORTICAL] = u(1100.0, 1600.0, 1350.0)
    hu[DIPLOE] = u(400.0, 700.0, 550.0)
    hu[SKIN] = u(35.0, 50.0, 42.0)
    hu[VENOUS] = u(42.0, 55.0, 48.0)
    hu[ARTERY] = u(38.0, 48.0, 44.0)
    return HeadAnatomy(
        frame=Frame.from_angles(center, yaw, pitch, roll),
        scale=scale,
        skull_mm=u(5.5, 8.0, 6.5),
        scalp_mm=u(4.0, 7.0, 5.5),
        scalp_fat_mm=u(0.6, 1.4, 1.0),
        csf_rim_mm=1.0 + 2.0 * atrophy,
        cortex_mm=u(2.4, 3.2, 2.8),
        atrophy=atrophy,
        gyri=tuple(gyri),
        calcified_choroid=bool(rng.random() < 0.6) if jitter else True,
        calcified_pineal=bool(rng.random() < 0.5) if jitter else True,
        tissue_hu=tuple(hu),
    )


class _OrientedEllipsoid(Shape):
    """Ellipsoid whose first axis is turned by `tilt_deg` in the Y-Z plane (Sylvian cleft)."""

    def __init__(
        self, center: tuple[float, float, float], axes: tuple[float, float, float], tilt_deg: float
    ) -> None:
        self.center = np.asarray(center, dtype=np.float64)
        self.bound = max(axes)
        t = math.radians(tilt_deg)
        self._c = tuple(np.float32(v) for v in center)
        self._cos, self._sin = np.float32(math.cos(t)), np.float32(math.sin(t))
        self._inv = tuple(np.float32(1.0 / a) for a in axes)

    def contains(self, X: np.ndarray, Y: np.ndarray, Z: np.ndarray) -> np.ndarray:
        dy, dz = Y - self._c[1], Z - self._c[2]
        a = (X - self._c[0]) * self._inv[0]
        b = (dy * self._cos + dz * self._sin) * self._inv[1]
        c = (dz * self._cos - dy * self._sin) * self._inv[2]
        return a * a + b * b + c * c <= 1.0


def _sig(t: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-t))


class HeadModel:
    """Compiled head anatomy: classifies canvas pixels and renders HU slices."""

    background_hu = -1000.0

    def __init__(
        self,
        anatomy: HeadAnatomy,
        *,
        contrast: bool = False,
        contrast_hu: tuple[float, float] = (200.0, 240.0),
    ) -> None:
        self.an = anatomy
        self.frame = anatomy.frame
        self.contrast = contrast
        hu = np.asarray(anatomy.tissue_hu, dtype=np.float32)
        if contrast:
            hu[VENOUS], hu[ARTERY] = contrast_hu
            hu[GM] += 4.0
            hu[CEREBELLUM] += 4.0
            hu[DEEP_GM] += 3.0
            hu[WM] += 2.0
            hu[BRAINSTEM] += 2.0
            hu[DURA] = 90.0
            hu[SKIN] += 8.0
        self.lut = hu
        self._build_structures()

    # ---- geometry helpers -------------------------------------------------------------
    def s(self, x: float, y: float, z: float) -> tuple[float, float, float]:
        """Nominal local point -> this patient's local point."""
        sx, sy, sz = self.an.scale
        return (x * sx, y * sy, z * sz)

    def _under_table(self, p: tuple[float, float, float], depth: float) -> tuple[float, ...]:
        """Move nominal point `p` along its ray to `depth` mm inside the inner table."""
        x, y, z = self.s(*p)
        a, b, c, cl = self.an.inner_axes
        cz = c if z > 0 else cl
        r = math.sqrt((x / a) ** 2 + (y / b) ** 2 + (z / cz) ** 2)
        sx, sy, sz = x / r, y / r, z / r
        n = math.sqrt(sx * sx + sy * sy + sz * sz)
        f = max(n - depth, 0.0) / n
        return (sx * f, sy * f, sz * f)

    def _build_structures(self) -> None:
        an = self.an
        s = self.s
        sx, sy, sz = an.scale
        ms = (sx + sy + sz) / 3.0
        vs = 0.85 + 0.5 * an.atrophy  # ventricle scale

        def ell(
            c: tuple[float, float, float],
            ax: tuple[float, float, float],
            f: float = 1.0,
        ) -> Ellipsoid:
            return Ellipsoid(s(*c), (ax[0] * sx * f, ax[1] * sy * f, ax[2] * sz * f))

        def cap(
            p0: tuple[float, float, float],
            p1: tuple[float, float, float],
            r: float,
        ) -> Capsule:
            return Capsule(s(*p0), s(*p1), r * ms)

        self.deep_gm = [ell((side * 20, -8, 4), (9, 18, 12)) for side in (-1, 1)] + [
            ell((side * 10, 12, 4), (8, 14, 9)) for side in (-1, 1)
        ]
        self.ventricles: list[Shape] = []
        for side in (-1, 1):
            self.ventricles += [
                Ellipsoid(s(side * (9 + 2 * vs), -2, 18), (6 * sx * vs, 30 * sy, 7 * sz * vs)),
                Ellipsoid(s(side * (10 + 2 * vs), -27, 10), (6 * sx * vs, 11 * sy, 8 * sz * vs)),
                Ellipsoid(s(side * (17 + 2 * vs), 31, 9), (6 * sx * vs, 13 * sy, 7 * sz * vs)),
                Ellipsoid(s(side * 30, 0, -20), (3.5 * sx * vs, 14 * sy, 4 * sz * vs)),
            ]
        self.ventricles.append(Ellipsoid(s(0, 4, 0), (2.5 * sx * vs, 14 * sy, 9 * sz)))
        self.fourth = ell((0, 30, -45), (7, 4, 8))
        self.sylvian = [
            _OrientedEllipsoid(
                s(side * 47, -4, -3), (15 * sx, 27 * sy, (2.0 + an.atrophy) * sz), 20.0
            )
            for side in (-1, 1)
        ]
        self.cisterns = [
            ell((0, -13, -17), (17, 14, 5)),  # suprasellar
            ell((0, 10, -13), (21, 19, 6)),  # ambient, around the midbrain
            ell((0, -8, -40), (11, 6, 18)),  # prepontine
            ell((0, 26, -6), (8, 6, 5)),  # quadrigeminal
        ]
        self.brainstem = ell((0, 11, -38), (12, 12, 34))
        self.cord_csf = cap((0, 14, -130), (0, 12, -60), 12)
        self.cord = cap((0, 14, -130), (0, 12, -60), 7)
        self.dens = cap((0, -4, -130), (0, -4, -84), 8)
        self.calcifications: list[Shape] = []
        if an.calcified_choroid:
            self.calcifications += [ell((side * 19, 31, 12), (2.5, 2.5, 2.5)) for side in (-1, 1)]
        if an.calcified_pineal:
            self.calcifications.append(ell((0, 21, 2), (3, 3, 3)))
        # Venous sinuses just inside the inner table (transverse, sigmoid, straight).
        self.sinuses: list[Shape] = []
        torcula = self._under_table((0, 85, -30), 4)
        for side in (-1, 1):
            a = self._under_table((side * 35, 74, -33), 4)
            b = self._under_table((side * 58, 40, -38), 4)
            c = self._under_table((side * 55, 18, -58), 5)
            self.sinuses += [
                Capsule(torcula, a, 3.5 * ms),
                Capsule(a, b, 3.5 * ms),
                Capsule(b, c, 3.2 * ms),
            ]
        self.sinuses.append(Capsule(s(0, 20, -6), torcula, 2.6 * ms))
        self.arteries: list[Shape] = [
            cap((0, -4, -66), (0, -4, -20), 1.7),  # basilar
        ]
        for side in (-1, 1):
            self.arteries += [
                cap((side * 8, 6, -85), (0, -4, -66), 1.6),  # vertebral
                cap((side * 14, -12, -34), (side * 14, -9, -13), 2.2),  # ICA terminal
                cap((side * 14, -9, -13), (side * 42, -5, -7), 1.7),  # MCA M1
                cap((side * 42, -5, -7), (side * 52, 12, 6), 1.2),  # MCA M2
                cap((side * 42, -5, -7), (side * 50, -22, 4), 1.2),
                cap((side * 14, -9, -13), (side * 2.5, -28, -6), 1.3),  # ACA A1
                cap((side * 2.5, -28, -6), (side * 2.5, -45, 22), 1.2),  # ACA A2
                cap((side * 2.5, -45, 22), (side * 2.5, -15, 42), 1.1),
                cap((0, -4, -20), (side * 20, 14, -16), 1.3),  # PCA
                cap((side * 20, 14, -16), (side * 26, 48, -10), 1.1),
            ]
        b_ = NOMINAL_AXES[1]
        self.orbits = [ell((side * 30, -b_ + 12, -38), (16, 17, 14)) for side in (-1, 1)]
        self.globes = [ell((side * 31, -b_ - 3, -40), (12, 12, 12)) for side in (-1, 1)]
        self.frontal_sinus = ell((0, -b_ - 2, -10), (14, 6, 10))
        self.air_sinuses = [
            ell((0, -64, -58), (15, 25, 30)),  # ethmoid / nasal cavity
            ell((0, -28, -48), (13, 11, 10)),  # sphenoid
        ] + [ell((side * 30, -58, -76), (15, 18, 18)) for side in (-1, 1)]  # maxillary
        self.petrous = [cap((side * 16, -2, -44), (side * 52, 24, -49), 7.0) for side in (-1, 1)]
        self.mastoids = [ell((side * 53, 25, -57), (9, 11, 10)) for side in (-1, 1)]

    # ---- classification -----------------------------------------------------------------
    def slice_crop_lps(self, z_mm: float) -> tuple[tuple[float, float], tuple[float, float]] | None:
        a, b, c, cl = self.an.inner_axes
        o = self.an.outer_mm + 6.0  # the globes stand a little proud of the scalp
        boxes = [ellipsoid_section_box(self.frame, (a + o, b + o, cz + o), z_mm) for cz in (c, cl)]
        found = [bx for bx in boxes if bx is not None]
        if not found:
            return None
        lo = (min(bx[0][0] for bx in found), min(bx[0][1] for bx in found))
        hi = (max(bx[1][0] for bx in found), max(bx[1][1] for bx in found))
        return lo, hi

    def classify(self, cv: Canvas) -> None:
        """Fill cv.cls; leaves cv.e (mm beyond the inner table) and cv.rn (normalised radius)."""
        an = self.an
        X, Y, Z, cls = cv.X, cv.Y, cv.Z, cv.cls
        a, b, c, cl = an.inner_axes
        sz = an.scale[2]
        if cv.z_min >= 0:
            invc: np.ndarray | np.float32 = np.float32(1.0 / c)
        elif cv.z_max <= 0:
            invc = np.float32(1.0 / cl)
        else:
            invc = np.where(Z > 0, np.float32(1.0 / c), np.float32(1.0 / cl))
        t = X * np.float32(1.0 / a)
        q = t * t
        t = Y * np.float32(1.0 / b)
        q += t * t
        t = Z * invc
        q += t * t
        rn = np.sqrt(q, out=q)
        np.maximum(rn, np.float32(1e-3), out=rn)
        plen = X * X
        plen += Y * Y
        plen += Z * Z
        np.sqrt(plen, out=plen)
        e = plen - plen / rn
        cv.e, cv.rn, cv.invc = e, rn, invc

        tsk = an.skull_mm
        cls[e < tsk + an.scalp_mm] = SKIN
        cls[(e >= tsk + 0.8) & (e < tsk + 0.8 + an.scalp_fat_mm)] = FAT
        cls[(e >= 0) & (e < tsk)] = CORTICAL
        cls[(e >= 1.4) & (e < tsk - 1.8)] = DIPLOE
        d = -e
        d -= an.csf_rim_mm  # depth below the brain surface
        cls[e < 0] = CSF
        cls[d > 0] = WM
        band = np.nonzero((d > 0) & (d < 13.0))
        if band[0].size:
            xb, yb, zb = X[band], Y[band], Z[band]
            g = np.zeros(xb.shape, dtype=np.float32)
            for kx, ky, kz, ph in an.gyri:
                g += np.cos(
                    np.float32(kx) * xb + np.float32(ky) * yb + np.float32(kz) * zb + np.float32(ph)
                )
            np.abs(g, out=g)
            db = d[band]
            sulcus = g < np.float32(0.22 + 0.12 * an.atrophy) * (1.0 - db / np.float32(16.0))
            cortex = (g < np.float32(1.05)) | (db < an.cortex_mm)
            cls[band] = np.where(sulcus, CSF, np.where(cortex, GM, WM)).astype(np.uint8)
        if cv.z_min < -20.0 * sz:
            self._skull_base(cv, e)
        if cv.z_min < -8.0 * sz:
            self._posterior_fossa(cv)
        for shape in self.deep_gm:
            cv.paint(shape, DEEP_GM, only=_GM_WM)
        for shape in self.sylvian:
            cv.paint(shape, CSF, only=_PARENCHYMA)
        self._fissure(cv, e)
        for shape in self.ventricles:
            cv.paint(shape, VENTRICLE, only=_PARENCHYMA)
        if cv.z_min < 0:
            for shape in self.cisterns:
                cv.paint(shape, CSF, only=_PARENCHYMA)
            cv.paint(self.brainstem, BRAINSTEM, only=_BRAIN_OR_CSF | _BASE)
            cv.paint(self.fourth, VENTRICLE, only=_INTRACRANIAL)
        if cv.z_min < -55.0 * sz:
            cv.paint(self.cord_csf, CSF, only=_BONE_OR_SOFT)
            cv.paint(self.cord, BRAINSTEM, only=_BONE_OR_SOFT | class_set(N_CLASSES, CSF))
            cv.paint(self.dens, BASE_BONE, only=_BONE_OR_SOFT)
        for shape in self.calcifications:
            cv.paint(shape, CALCIFICATION, only=class_set(N_CLASSES, VENTRICLE, CSF, DEEP_GM, WM))
        self._superior_sagittal_sinus(cv, e)
        for shape in self.sinuses:
            cv.paint(shape, VENOUS, only=_INTRACRANIAL)
        for shape in self.arteries:
            cv.paint(shape, ARTERY, only=_VESSEL_ROOM)
        if cv.z_min < -20.0 * sz:
            for shape in self.orbits:
                cv.paint(shape, ORBIT_FAT, only=_NOT_BRAIN)
            for shape in self.globes:
                cv.paint(shape, GLOBE, only=_NOT_BRAIN)
            for shape in self.air_sinuses:
                cv.paint(shape, SINUS_AIR, only=_BASE)
            for shape in self.petrous:
                cv.paint(shape, BASE_BONE, only=_BASE)
            for shape in self.mastoids:
                cv.paint(shape, MASTOID, only=_BASE)
        if cv.z_max > 5.0 * sz:
            cv.paint(self.frontal_sinus, SINUS_AIR, only=class_set(N_CLASSES, CORTICAL, DIPLOE))

    def floor(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """Z of the cranial floor: anterior fossa, middle fossa, posterior fossa (nominal)."""
        sx, sy, sz = self.an.scale
        xn, yn = np.abs(X) / sx, Y / sy
        yp = -5.0 + 0.55 * np.maximum(xn - 15.0, 0.0)
        return sz * (-25.0 - 21.0 * _sig((yn + 35.0) / 4.0) - 20.0 * _sig((yn - yp) / 4.0))

    def tentorium(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        sx, sy, sz = self.an.scale
        return sz * (-10.0 - 0.28 * np.maximum(Y / sy, 0.0) - 0.15 * np.abs(X) / sx)

    def petrous_y(self, X: np.ndarray) -> np.ndarray:
        sx, sy, _ = self.an.scale
        return sy * (-5.0 + 0.55 * np.maximum(np.abs(X) / sx - 15.0, 0.0))

    def _skull_base(self, cv: Canvas, e: np.ndarray) -> None:
        sz = self.an.scale[2]
        idx = np.nonzero((cv.Z < -20.0 * sz) & (e < self.an.skull_mm))
        if not idx[0].size:
            return
        x, y, z, ee = cv.X[idx], cv.Y[idx], cv.Z[idx], e[idx]
        f = self.floor(x, y)
        cur = cv.cls[idx]
        below = z < f
        inside = ee < 0
        cur = np.where(below & inside, np.where(z >= f - 3.5, BASE_BONE, SOFT), cur)
        cur = np.where(below & ~inside & (z < f - 12.0), SOFT, cur)
        cv.cls[idx] = cur.astype(np.uint8)

    def _posterior_fossa(self, cv: Canvas) -> None:
        sz = self.an.scale[2]
        idx = np.nonzero((cv.Z < -8.0 * sz) & _GM_WM[cv.cls])
        if not idx[0].size:
            return
        x, y, z = cv.X[idx], cv.Y[idx], cv.Z[idx]
        infra = (z < self.tentorium(x, y)) & (y > self.petrous_y(x))
        cur = cv.cls[idx]
        cv.cls[idx] = np.where(infra, CEREBELLUM, cur).astype(np.uint8)
        # The tentorium itself: a thin dural sheet, open at the incisura.
        idx = np.nonzero((cv.Z < -8.0 * sz) & _INTRACRANIAL[cv.cls])
        x, y, z = cv.X[idx], cv.Y[idx], cv.Z[idx]
        sheet = (np.abs(z - self.tentorium(x, y)) < 0.3) & (y > self.petrous_y(x))
        sheet &= np.abs(x) > 5.0 * self.an.scale[0]
        cur = cv.cls[idx]
        cv.cls[idx] = np.where(sheet, DURA, cur).astype(np.uint8)

    def _fissure(self, cv: Canvas, e: np.ndarray) -> None:
        """Interhemispheric fissure with the falx in its middle, above the corpus callosum."""
        sx, sy, sz = self.an.scale
        w = (1.0 + 0.6 * self.an.atrophy) * sx
        idx = np.nonzero((np.abs(cv.X) < w) & _BRAIN_OR_CSF[cv.cls])
        if not idx[0].size:
            return
        x, y, z = cv.X[idx], cv.Y[idx], cv.Z[idx]
        supra = z > self.tentorium(x, y)
        deep = (z > 24.0 * sz) | (y < -38.0 * sy) | (y > 50.0 * sy)
        m = supra & deep & (e[idx] > -60.0)
        cur = cv.cls[idx]
        cur = np.where(m, np.where(np.abs(x) < 0.45, DURA, CSF), cur)
        cv.cls[idx] = cur.astype(np.uint8)

    def _superior_sagittal_sinus(self, cv: Canvas, e: np.ndarray) -> None:
        if cv.z_max < 0:
            return
        idx = np.nonzero((np.abs(cv.X) < 4.5) & (e < 0) & (e > -6.0) & (cv.Z > 0))
        if not idx[0].size:
            return
        x, ee = cv.X[idx], e[idx]
        tri = np.abs(x) < 4.5 * (1.0 + ee / 6.0)
        cur = cv.cls[idx]
        cv.cls[idx] = np.where(tri & _INTRACRANIAL[cur], VENOUS, cur).astype(np.uint8)

    def paint_fixed(self, raw: np.ndarray, grid: Grid) -> None:
        """Carbon head holder under the occiput: a cylinder along patient z, on the table."""
        a, b, _, _ = self.an.inner_axes
        ox, oy, _ = self.frame.origin_lps
        rx, ry = a + self.an.outer_mm + 11.0, b + self.an.outer_mm + 11.0
        wy = ((grid.y_mm() - oy) / ry)[:, None]
        wx = ((grid.x_mm() - ox) / rx)[None, :]
        r = wx * wx + wy * wy
        mask = (r > 1.0) & (r < 1.09) & (wy > 0.3)
        raw[:, mask] = self.lut[HOLDER]

    def render_slice(self, cv: Canvas) -> np.ndarray:
        self.classify(cv)
        return self.lut[cv.cls]

    # ---- regions ----------------------------------------------------------------------
    def region_codes(self, X: np.ndarray, Y: np.ndarray, Z: np.ndarray) -> np.ndarray:
        sx, sy, sz = self.an.scale
        xn, yn, zn = X / sx, Y / sy, Z / sz
        code = np.full(np.shape(X), PARIETAL, dtype=np.int8)
        code[yn < -5.0 + 0.25 * zn] = FRONTAL
        code[yn > 50.0 - 0.15 * zn] = OCCIPITAL
        code[(zn < 2.0 + 0.25 * yn) & (np.abs(xn) > 26.0) & (yn < 45.0)] = TEMPORAL
        for shape in self.deep_gm[:2]:
            code[shape.contains(X, Y, Z)] = BASAL_GANGLIA
        for shape in self.deep_gm[2:]:
            code[shape.contains(X, Y, Z)] = THALAMUS
        infra = (Z < self.tentorium(X, Y)) & (Y > self.petrous_y(X))
        code[infra] = CEREBELLUM_R
        code[self.brainstem.contains(X, Y, Z)] = BRAINSTEM_R
        return code

    def location(self, local: np.ndarray, subtype: str) -> Location:
        x, y, z = (np.array([float(v)]) for v in local)
        side = "midline" if abs(float(x[0])) < 3.0 else ("left" if x[0] > 0 else "right")
        code = int(self.region_codes(x, y, z)[0])
        compartment = "infratentorial" if code in (CEREBELLUM_R, BRAINSTEM_R) else "supratentorial"
        lobe = REGION_NAMES[code]
        if subtype in ("subdural", "epidural"):
            region = (
                "posterior fossa"
                if compartment == "infratentorial"
                else lobe.replace(" lobe", "") + " convexity"
            )
        elif subtype == "intraventricular":
            region = self._ventricle_name(float(x[0]), float(z[0]))
        elif subtype == "subarachnoid":
            region = self._sah_region(float(x[0]), float(y[0]), float(z[0]), lobe)
        else:
            region = lobe
        return Location(side=side, compartment=compartment, region=region)

    def _ventricle_name(self, x: float, z: float) -> str:
        if z < -25.0 * self.an.scale[2]:
            return "fourth ventricle"
        if abs(x) < 3.0:
            return "third ventricle"
        return "lateral ventricle"

    def _sah_region(self, x: float, y: float, z: float, lobe: str) -> str:
        sx, sy, sz = self.an.scale
        if abs(x) < 8.0 * sx and z > 0:
            return "interhemispheric fissure"
        if abs(x) < 25.0 * sx and z < 0:
            return "basal cisterns"
        if abs(x) > 30.0 * sx and abs(z / sz + 3.0 - 0.36 * (y / sy + 4.0)) < 14.0:
            return "sylvian fissure"
        return lobe.replace(" lobe", "") + " sulci"

    # ---- point sampling ---------------------------------------------------------------
    def sample_points(self, rng: np.random.Generator, n: int = 6000) -> tuple[Canvas, np.ndarray]:
        """Random local points in the cranial cavity, classified, with their region codes."""
        a, b, c, cl = self.an.inner_axes
        lo = -0.75 * cl
        X = rng.uniform(-a, a, n)
        Y = rng.uniform(-b, b, n)
        Z = rng.uniform(lo, c, n)
        cv = Canvas.for_points(X, Y, Z)
        self.classify(cv)
        return cv, self.region_codes(cv.X, cv.Y, cv.Z)


# ---- hemorrhage placement ----------------------------------------------------------------

_CONVEXITY_DIRECTIONS = {
    "frontal": (0.45, -0.8, 0.45),
    "parietal": (0.6, 0.42, 0.68),
    "temporal": (0.97, -0.1, -0.2),
    "occipital": (0.35, 0.88, 0.25),
    "convexity": (0.65, -0.3, 0.7),
}


def plan_hemorrhage(
    model: HeadModel,
    hem: Hemorrhage,
    label: int,
    grid: Grid,
    rng: np.random.Generator,
) -> LesionPlan:
    """Decide where and how a hemorrhage goes; the renderer picks its voxels."""
    n = max(1, round(hem.volume_ml / grid.voxel_ml))
    side = 1.0 if hem.side == "left" else -1.0
    desc = f"{hem.volume_ml:g} mL {hem.side} {hem.subtype} hemorrhage"
    if hem.subtype == "intraparenchymal":
        scorer, hu = _plan_iph(model, hem, side, grid, rng)
        return LesionPlan(label, n, scorer, hu, 2.5, desc)
    if hem.subtype in ("subdural", "epidural"):
        scorer = _plan_extra_axial(model, hem, side, rng)
        hu = float(rng.uniform(58.0, 80.0))
        return LesionPlan(label, n, scorer, hu, 3.0, desc)
    if hem.subtype == "subarachnoid":
        scorer = _plan_sah(model, hem, side, rng)
        return LesionPlan(label, n, scorer, float(rng.uniform(58.0, 72.0)), 3.0, desc)
    scorer = _plan_ivh(model, side)
    return LesionPlan(label, n, scorer, float(rng.uniform(58.0, 75.0)), 2.5, desc)


def _plan_iph(
    model: HeadModel, hem: Hemorrhage, side: float, grid: Grid, rng: np.random.Generator
) -> tuple[Scorer, float]:
    radius = (3.0 * hem.volume_ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
    f = rng.uniform(0.8, 1.25, 3)
    f /= np.prod(f) ** (1.0 / 3.0)
    axes = radius * f
    region = hem.region
    if region is None:
        region = str(rng.choice(["basal ganglia", "frontal", "parietal", "temporal", "thalamus"]))
    wanted: tuple[int, ...]
    if region in _LOBE_CODE:
        wanted = (_LOBE_CODE[region],)
    elif region == "basal ganglia":
        wanted = (BASAL_GANGLIA,)
    elif region == "thalamus":
        wanted = (THALAMUS,)
    elif region in ("cerebellum", "infratentorial"):
        wanted = (CEREBELLUM_R,)
    else:  # supratentorial
        wanted = (FRONTAL, PARIETAL, TEMPORAL, OCCIPITAL, BASAL_GANGLIA)
    center = None
    margin = 0.9 * radius + 3.0
    around = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]])
    for attempt in range(8):
        cv, codes = model.sample_points(rng)
        depth = -cv.e - model.an.csf_rim_mm
        ok = np.isin(codes, wanted) & _PARENCHYMA[cv.cls] & (side * cv.X > 6.0)
        ok &= depth > margin
        hits = np.flatnonzero(ok)
        if hits.size and attempt < 6:
            # Keep centres whose surroundings are in the region too, so that the lesion's
            # centroid (which avoids ventricles and sulci) stays where it was asked.
            p = np.column_stack((cv.X[hits], cv.Y[hits], cv.Z[hits]))
            q = (p[:, None, :] + 0.7 * radius * around[None, :, :]).reshape(-1, 3)
            near = model.region_codes(q[:, 0], q[:, 1], q[:, 2]).reshape(len(hits), 6)
            hits = hits[np.isin(near, wanted).all(axis=1)]
        if hits.size:
            i = int(hits[0])
            center = (float(cv.X[i]), float(cv.Y[i]), float(cv.Z[i]))
            break
        margin *= 0.7
    if center is None:
        raise InvalidInputError(f"no room for a {hem.volume_ml:g} mL hemorrhage in {region}")
    c = np.asarray(center)
    k = rng.normal(size=(2, 3))
    k *= (2 * math.pi / (1.6 * radius)) / np.linalg.norm(k, axis=1, keepdims=True)
    k = k.astype(np.float32)
    ph = rng.uniform(0, 2 * math.pi, 2).astype(np.float32)
    inv = (1.0 / axes).astype(np.float32)
    half_diag = 0.5 * math.sqrt(sum(v * v for v in grid.spacing_zyx_mm))
    reach = max(2.0 * float(axes.max()), float(axes.min()) + 2.0 * half_diag)
    q_max = np.float32((reach / float(axes.min())) ** 2)
    bound = reach + 2.0

    def scorer(cv: Canvas) -> ScorerResult | None:
        win = cv.window(c, bound)
        if win is None:
            return None
        X, Y, Z = cv.X[win], cv.Y[win], cv.Z[win]
        dx, dy, dz = X - np.float32(c[0]), Y - np.float32(c[1]), Z - np.float32(c[2])
        q = (dx * inv[0]) ** 2 + (dy * inv[1]) ** 2 + (dz * inv[2]) ** 2
        lob = 1.0 + 0.16 * np.cos(k[0, 0] * dx + k[0, 1] * dy + k[0, 2] * dz + ph[0])
        lob += 0.10 * np.cos(k[1, 0] * dx + k[1, 1] * dy + k[1, 2] * dz + ph[1])
        q *= lob
        m = _PARENCHYMA[cv.cls[win]] & (q < q_max)
        ii, jj = np.nonzero(m)
        oi, oj = _offset(win, ii, jj)
        return oi, oj, q[m], None

    return scorer, float(rng.uniform(60.0, 80.0))


def _offset(
    win: tuple[slice, ...], ii: np.ndarray, jj: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    return ii + win[0].start, jj + win[1].start  # type: ignore[return-value]


SUBDURAL_FULL_SPREAD_ML = 10.0  # smaller subdurals cover a proportionally smaller arc


def _plan_extra_axial(
    model: HeadModel,
    hem: Hemorrhage,
    side: float,
    rng: np.random.Generator,
) -> Scorer:
    key = hem.region if hem.region in _CONVEXITY_DIRECTIONS else None
    if key is None:
        key = str(rng.choice(["frontal", "parietal", "convexity", "temporal"]))
    u0 = np.asarray(_CONVEXITY_DIRECTIONS[key], dtype=np.float64)
    u0 = u0 + rng.normal(scale=0.08, size=3)
    u0[0] = side * abs(u0[0])
    u0 /= np.linalg.norm(u0)
    subdural = hem.subtype == "subdural"
    # Crescent: thin and wide, thickness falling off slowly (4th power of the angle);
    # lens: thick and short, an ellipse in (depth, angle) so both borders are convex.
    thick = float(rng.uniform(10.0, 14.0)) if subdural else float(rng.uniform(14.0, 18.0))
    half_angle = math.radians(rng.uniform(48.0, 58.0) if subdural else rng.uniform(26.0, 32.0))
    # A small crescent keeps its shape and shrinks in extent (angle), not only in depth:
    # drawn by depth alone, a subdural under ~10 mL was a layer 1-2 voxels thin that the
    # soft kernel's blur mixes with the inner table, so the image showed no blood where
    # the truth said there was (visible_ml 0 under 2.5 mL). Scaling the angle with the
    # volume keeps such bleeds about 3-4 mm deep at any volume; from 10 mL up the
    # crescent is drawn as before.
    spread = np.float32(min(1.0, hem.volume_ml / SUBDURAL_FULL_SPREAD_ML)) if subdural else None
    one_minus_cos = np.float32(1.0 - math.cos(half_angle))
    a, b, _, _ = model.an.inner_axes
    ux, uy, uz = (np.float32(v) for v in u0)
    inv_a, inv_b = np.float32(1.0 / a), np.float32(1.0 / b)

    def scorer(cv: Canvas) -> ScorerResult | None:
        e = cv.e
        m = _EXTRA_AXIAL_ROOM[cv.cls] & (e > -30.0) & (side * cv.X > 1.5)
        ii, jj = np.nonzero(m)
        if not ii.size:
            return None
        X, Y, Z = cv.X[ii, jj], cv.Y[ii, jj], cv.Z[ii, jj]
        invc = cv.invc if np.ndim(cv.invc) == 0 else cv.invc[ii, jj]
        cosang = (X * inv_a * ux + Y * inv_b * uy + Z * invc * uz) / cv.rn[ii, jj]
        ang = (1.0 - cosang) / one_minus_cos
        depth = -e[ii, jj]
        if spread is not None:
            a_rel = ang / spread
            score = depth / np.float32(thick) + a_rel * a_rel
        else:
            t = depth / np.float32(thick)
            score = t * t + ang
        keep = score < 3.0
        return ii[keep], jj[keep], score[keep], depth[keep]

    return scorer


_SAH_SEEDS = {
    "sylvian fissure": (44.0, -5.0, -4.0),
    "basal cisterns": (9.0, -10.0, -16.0),
    "interhemispheric fissure": (1.5, -25.0, 38.0),
}


def _plan_sah(
    model: HeadModel,
    hem: Hemorrhage,
    side: float,
    rng: np.random.Generator,
) -> Scorer:
    region = hem.region or "sylvian fissure"
    if region in _SAH_SEEDS:
        x, y, z = _SAH_SEEDS[region]
        seed = np.asarray(model.s(side * x, y, z))
    else:
        key = region if region in _CONVEXITY_DIRECTIONS else "convexity"
        d = np.asarray(_CONVEXITY_DIRECTIONS[key]) * 60.0
        d[0] = side * abs(d[0])
        seed = np.asarray(model._under_table(tuple(d), model.an.csf_rim_mm + 4.0))
    seed = seed + rng.normal(scale=2.0, size=3)
    lateral = region != "interhemispheric fissure"
    k = rng.normal(size=3)
    k *= (2 * math.pi / 25.0) / np.linalg.norm(k)
    k = k.astype(np.float32)
    ph = np.float32(rng.uniform(0, 2 * math.pi))
    reach = 95.0

    def scorer(cv: Canvas) -> ScorerResult | None:
        win = cv.window(seed, reach)
        if win is None:
            return None
        cls = cv.cls[win]
        m = cls == CSF
        if lateral:
            m &= side * cv.X[win] > -2.0
        ii, jj = np.nonzero(m)
        if not ii.size:
            return None
        X, Y, Z = cv.X[win][ii, jj], cv.Y[win][ii, jj], cv.Z[win][ii, jj]
        dx, dy, dz = X - np.float32(seed[0]), Y - np.float32(seed[1]), Z - np.float32(seed[2])
        dist = np.sqrt(dx * dx + dy * dy + dz * dz)
        dist *= 1.0 + 0.25 * np.cos(k[0] * X + k[1] * Y + k[2] * Z + ph)
        oi, oj = _offset(win, ii, jj)
        return oi, oj, dist, None

    return scorer


def _plan_ivh(model: HeadModel, side: float) -> Scorer:
    center = np.asarray(model.s(0.0, 5.0, -5.0))
    reach = 75.0 * max(model.an.scale)
    sz = model.an.scale[2]

    def scorer(cv: Canvas) -> ScorerResult | None:
        win = cv.window(center, reach)
        if win is None:
            return None
        m = cv.cls[win] == VENTRICLE
        ii, jj = np.nonzero(m)
        if not ii.size:
            return None
        X, Y, Z = cv.X[win][ii, jj], cv.Y[win][ii, jj], cv.Z[win][ii, jj]
        # Supine patient: blood settles posteriorly (dependent), first in the ipsilateral
        # lateral ventricle, then the third and fourth, then the other side.
        score = -Y.astype(np.float32)
        score += np.where((np.abs(X) < 3.0) | (Z < -25.0 * sz), 400.0, 0.0).astype(np.float32)
        score += np.where(side * X < -3.0, 800.0, 0.0).astype(np.float32)
        oi, oj = _offset(win, ii, jj)
        return oi, oj, score, None

    return scorer
