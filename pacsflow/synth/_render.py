"""Slice-by-slice rendering of a phantom model, with lesion voxels chosen in the same pass.

Every lesion is a scorer: on each slice it returns candidate voxels with a score, and the
lesion is the `n_voxels` candidates with the lowest scores. Choosing a voxel count instead
of a threshold makes the rendered volume match the requested volume to one voxel, whatever
the shape and the anatomy around it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from pacsflow.errors import InvalidInputError
from pacsflow.synth._canvas import Canvas, Frame
from pacsflow.synth.grid import Grid

ScorerResult = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]
Scorer = Callable[[Canvas], ScorerResult | None]


class SliceModel(Protocol):
    frame: Frame
    background_hu: float

    def slice_crop_lps(self, z_mm: float) -> tuple[tuple[float, float], tuple[float, float]] | None:
        """Patient (x, y) box holding everything of the slice at z but air; None if empty."""
        ...

    def render_slice(self, cv: Canvas) -> np.ndarray: ...

    def paint_fixed(self, raw: np.ndarray, grid: Grid) -> None:
        """Objects fixed to the table rather than the patient (head holder, couch)."""
        ...


@dataclass
class LesionPlan:
    """A lesion to place: how many voxels, how to rank candidates, what HU to give it."""

    label: int
    n_voxels: int
    scorer: Scorer
    hu_mean: float
    hu_sd: float
    description: str
    core_voxels: int = 0  # part-solid nodules: the best-ranked voxels form a solid core
    core_hu_mean: float = 0.0
    flat: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    score: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    aux: np.ndarray | None = None

    def core_mask(self) -> np.ndarray:
        """Which of `flat` belong to the solid core."""
        mask = np.zeros(self.flat.size, dtype=bool)
        if self.core_voxels > 0:
            mask[np.argsort(self.score, kind="stable")[: self.core_voxels]] = True
        return mask


def render(grid: Grid, model: SliceModel, plans: list[LesionPlan]) -> np.ndarray:
    """Noise-free HU volume (float32); fills each plan's `flat` voxel indices (sorted)."""
    raw = np.full(grid.shape_zyx, model.background_hu, dtype=np.float32)
    model.paint_fixed(raw, grid)
    ys_all, xs_all, zs = grid.y_mm(), grid.x_mm(), grid.z_mm()
    ny, nx = grid.ny, grid.nx
    dy, dx = grid.spacing_zyx_mm[1], grid.spacing_zyx_mm[2]
    y0, x0 = grid.origin_lps_mm[1], grid.origin_lps_mm[0]
    found: list[list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]] = [[] for _ in plans]
    for k, z in enumerate(zs):
        box = model.slice_crop_lps(float(z))
        if box is None:
            continue
        (xlo, ylo), (xhi, yhi) = box
        i0, i1 = max(0, int((ylo - y0) // dy)), min(ny, int((yhi - y0) // dy) + 2)
        j0, j1 = max(0, int((xlo - x0) // dx)), min(nx, int((xhi - x0) // dx) + 2)
        if i0 >= i1 or j0 >= j1:
            continue
        cv = Canvas.for_slice(model.frame, float(z), ys_all[i0:i1], xs_all[j0:j1])
        hu2d = model.render_slice(cv)
        target = raw[k, i0:i1, j0:j1]
        np.copyto(target, hu2d, where=cv.cls != 0)
        for plan, bucket in zip(plans, found, strict=True):
            got = plan.scorer(cv)
            if got is None or got[0].size == 0:
                continue
            ii, jj, score, aux = got
            flat = (k * ny + ii.astype(np.int64) + i0) * nx + jj + j0
            bucket.append((flat, score.astype(np.float32, copy=False), aux))
    for plan, bucket in zip(plans, found, strict=True):
        _select(plan, bucket, grid)
    return raw


def _select(
    plan: LesionPlan, bucket: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]], grid: Grid
) -> None:
    total = sum(b[0].size for b in bucket)
    if total < plan.n_voxels:
        raise InvalidInputError(
            f"{plan.description} does not fit: room for {total * grid.voxel_ml:.1f} mL, "
            f"{plan.n_voxels * grid.voxel_ml:.1f} mL requested"
        )
    flat = np.concatenate([b[0] for b in bucket])
    score = np.concatenate([b[1] for b in bucket])
    pick = np.argpartition(score, plan.n_voxels - 1)[: plan.n_voxels]
    order = np.argsort(flat[pick], kind="stable")
    pick = pick[order]
    plan.flat = flat[pick]
    plan.score = score[pick]
    if all(b[2] is not None for b in bucket):
        plan.aux = np.concatenate([b[2] for b in bucket if b[2] is not None])[pick]


def paint_lesions(raw: np.ndarray, plans: list[LesionPlan], rng: np.random.Generator) -> np.ndarray:
    """Write lesion HU into `raw` and return the label volume (later lesions win overlaps)."""
    labels = np.zeros(raw.shape, dtype=np.uint8)
    flat_raw = raw.reshape(-1)
    flat_labels = labels.reshape(-1)
    for plan in plans:
        values = plan.hu_mean + plan.hu_sd * rng.standard_normal(plan.flat.size, dtype=np.float32)
        if plan.core_voxels > 0:
            core = plan.core_mask()
            values[core] += plan.core_hu_mean - plan.hu_mean
        flat_raw[plan.flat] = values
        flat_labels[plan.flat] = plan.label
    return labels
