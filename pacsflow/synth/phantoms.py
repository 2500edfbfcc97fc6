"""Synthetic head and chest CT volumes with labelled lesions (pure numpy, no I/O).

    grid = Grid.axial(matrix=128, fov_mm=250, n_slices=36, slice_mm=5.0)
    vol = head_phantom(grid, [Hemorrhage("subdural", 30.0, "left")], np.random.default_rng(7))
    vol.hu        # int16 (z, y, x) Hounsfield units, soft-tissue kernel with noise
    vol.labels    # uint8 (z, y, x): 0 background, i + 1 inside lesion i
    vol.lesions   # LesionTruth per lesion, measured on `labels`

Anatomy varies with the generator (size, position, small rotations, atrophy, densities)
unless `anatomy_jitter=False`. Rendering is two steps so that a study writer can make
several reconstructions of one scan: `render_head` / `render_chest` give the noise-free
volume, and `soft_kernel` / `sharp_kernel` turn it into images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pacsflow.errors import InvalidInputError
from pacsflow.synth import _chest, _head
from pacsflow.synth._measure import measure_voxels
from pacsflow.synth._render import LesionPlan, paint_lesions, render
from pacsflow.synth.grid import Grid
from pacsflow.synth.specs import LOBE_NAMES, Hemorrhage, Nodule
from pacsflow.synth.truth import LesionTruth

__all__ = [
    "ChestAnatomy",
    "Grid",
    "HeadAnatomy",
    "Hemorrhage",
    "LesionTruth",
    "Nodule",
    "PhantomVolume",
    "RenderedPhantom",
    "chest_phantom",
    "draw_chest_anatomy",
    "draw_head_anatomy",
    "head_phantom",
    "render_chest",
    "render_head",
    "sharp_kernel",
    "soft_kernel",
]

HeadAnatomy = _head.HeadAnatomy
ChestAnatomy = _chest.ChestAnatomy
HU_MIN, HU_MAX = -1024, 3071


def draw_head_anatomy(rng: np.random.Generator, grid: Grid, *, jitter: bool = True) -> HeadAnatomy:
    """Draw one patient's head (placed in `grid`); pass it to `render_head` to reuse it."""
    return _head.draw_head_anatomy(rng, grid, jitter=jitter)


def draw_chest_anatomy(
    rng: np.random.Generator, grid: Grid, *, jitter: bool = True
) -> ChestAnatomy:
    """Draw one patient's chest (placed in `grid`); reuse it for priors and follow-ups."""
    return _chest.draw_chest_anatomy(rng, grid, jitter=jitter)


@dataclass
class RenderedPhantom:
    """Noise-free rendering: HU before blur and noise, labels and measured lesions."""

    grid: Grid
    raw: np.ndarray  # float32 (z, y, x)
    labels: np.ndarray  # uint8 (z, y, x)
    lesions: list[LesionTruth]
    anatomy: Any
    model: Any


@dataclass
class PhantomVolume:
    """A CT volume with noise, its lesion labels and the measured truth."""

    grid: Grid
    hu: np.ndarray  # int16 (z, y, x)
    labels: np.ndarray  # uint8 (z, y, x)
    lesions: list[LesionTruth]
    noise_hu: float
    anatomy: Any


# ---- kernels ------------------------------------------------------------------------------


def _blur_inplane(v: np.ndarray) -> np.ndarray:
    """Separable [1 2 1] / 4 blur along rows and columns: the scanner's limited resolution."""
    out = np.multiply(v, np.float32(0.5))
    out[:, 1:, :] += np.float32(0.25) * v[:, :-1, :]
    out[:, :-1, :] += np.float32(0.25) * v[:, 1:, :]
    out[:, 0, :] += np.float32(0.25) * v[:, 0, :]
    out[:, -1, :] += np.float32(0.25) * v[:, -1, :]
    res = np.multiply(out, np.float32(0.5))
    res[:, :, 1:] += np.float32(0.25) * out[:, :, :-1]
    res[:, :, :-1] += np.float32(0.25) * out[:, :, 1:]
    res[:, :, 0] += np.float32(0.25) * out[:, :, 0]
    res[:, :, -1] += np.float32(0.25) * out[:, :, -1]
    return res


def _to_hu(v: np.ndarray, noise_hu: float, rng: np.random.Generator) -> np.ndarray:
    if noise_hu > 0:
        noise = rng.standard_normal(v.shape, dtype=np.float32)
        noise *= np.float32(noise_hu)
        v += noise
    np.rint(v, out=v)
    np.clip(v, HU_MIN, HU_MAX, out=v)
    return v.astype(np.int16)


def soft_kernel(raw: np.ndarray, noise_hu: float, rng: np.random.Generator) -> np.ndarray:
    """Soft-tissue (brain / standard) reconstruction: slight blur, Gaussian noise, int16 HU."""
    return _to_hu(_blur_inplane(raw), noise_hu, rng)


def soft_kernel_float(raw: np.ndarray, noise_hu: float, rng: np.random.Generator) -> np.ndarray:
    """As `soft_kernel`, kept in float32 (for thick slabs averaged from thin slices)."""
    v = _blur_inplane(raw)
    if noise_hu > 0:
        noise = rng.standard_normal(v.shape, dtype=np.float32)
        noise *= np.float32(noise_hu)
        v += noise
    return v


def sharp_kernel(
    raw: np.ndarray, noise_hu: float, rng: np.random.Generator, *, noise_gain: float = 2.5
) -> np.ndarray:
    """Bone / lung reconstruction: edge enhancement and `noise_gain` times more noise."""
    v = raw - _blur_inplane(raw)
    v *= np.float32(0.6)
    v += raw
    return _to_hu(v, noise_hu * noise_gain, rng)


def finish_hu(v: np.ndarray) -> np.ndarray:
    """Round and clip float HU to the int16 range a CT stores."""
    np.rint(v, out=v)
    np.clip(v, HU_MIN, HU_MAX, out=v)
    return v.astype(np.int16)


# ---- head ---------------------------------------------------------------------------------


def render_head(
    grid: Grid,
    hemorrhages: Sequence[Hemorrhage],
    rng: np.random.Generator,
    *,
    contrast: bool = False,
    anatomy_jitter: bool = True,
    anatomy: HeadAnatomy | None = None,
) -> RenderedPhantom:
    """Noise-free head CT with the hemorrhages placed and measured."""
    an = anatomy if anatomy is not None else draw_head_anatomy(rng, grid, jitter=anatomy_jitter)
    contrast_hu = (float(rng.uniform(150.0, 250.0)), float(rng.uniform(180.0, 300.0)))
    model = _head.HeadModel(an, contrast=contrast, contrast_hu=contrast_hu)
    if len(hemorrhages) > 250:
        raise InvalidInputError("at most 250 lesions per volume")
    plans = [
        _head.plan_hemorrhage(model, h, i + 1, grid, rng) for i, h in enumerate(hemorrhages)
    ]
    raw = render(grid, model, plans)
    labels = paint_lesions(raw, plans, rng)
    lesions = [
        _head_truth(grid, model, h, p, labels) for h, p in zip(hemorrhages, plans, strict=True)
    ]
    return RenderedPhantom(grid, raw, labels, lesions, an, model)


def _head_truth(
    grid: Grid, model: _head.HeadModel, hem: Hemorrhage, plan: LesionPlan, labels: np.ndarray
) -> LesionTruth:
    keep = labels.reshape(-1)[plan.flat] == plan.label
    k, i, j = np.unravel_index(plan.flat[keep], grid.shape_zyx)
    m = measure_voxels(grid, k, i, j)
    local = model.frame.to_local(m.centroid_lps_mm)
    thickness = None
    if hem.subtype in ("subdural", "epidural") and plan.aux is not None and keep.any():
        thickness = round(float(plan.aux[keep].max()) + grid.spacing_zyx_mm[1], 1)
    return LesionTruth(
        label=plan.label,
        kind="hemorrhage",
        subtype=hem.subtype,
        tracking_id=f"H{plan.label}",
        target_volume_ml=hem.volume_ml,
        volume_ml=round(m.volume_ml, 4),
        n_voxels=m.n_voxels,
        longest_axial_diameter_mm=m.longest_axial_mm,
        short_axis_diameter_mm=m.short_axis_mm,
        mean_diameter_mm=round(m.mean_diameter_mm, 2),
        centroid_lps_mm=m.centroid_lps_mm,
        centroid_voxel_zyx=m.centroid_voxel,
        location=model.location(local, hem.subtype),
        assigned_hu=round(plan.hu_mean, 1),
        max_thickness_mm=thickness,
    )


def head_phantom(
    grid: Grid,
    hemorrhages: Sequence[Hemorrhage],
    rng: np.random.Generator,
    *,
    noise_hu: float = 6.0,
    contrast: bool = False,
    anatomy_jitter: bool = True,
    anatomy: HeadAnatomy | None = None,
) -> PhantomVolume:
    """Head CT (soft-tissue kernel) with hemorrhages; see the module docstring."""
    r = render_head(
        grid, hemorrhages, rng, contrast=contrast, anatomy_jitter=anatomy_jitter, anatomy=anatomy
    )
    hu = soft_kernel(r.raw, noise_hu, rng)
    return PhantomVolume(grid, hu, r.labels, with_mean_hu(r.lesions, hu, r.labels), noise_hu,
                         r.anatomy)


def with_mean_hu(
    lesions: list[LesionTruth], hu: np.ndarray, labels: np.ndarray
) -> list[LesionTruth]:
    """Add each lesion's mean HU in the final image, away from its in-plane border (where
    partial volume with bone or air would bias it); the whole mask if nothing is left."""
    if not lesions:
        return []
    core = labels.copy()
    same = np.ones(labels.shape, dtype=bool)
    same[:, 1:, :] &= labels[:, 1:, :] == labels[:, :-1, :]
    same[:, :-1, :] &= labels[:, :-1, :] == labels[:, 1:, :]
    same[:, :, 1:] &= labels[:, :, 1:] == labels[:, :, :-1]
    same[:, :, :-1] &= labels[:, :, :-1] == labels[:, :, 1:]
    core[~same] = 0
    out = []
    for mask_labels in (core, labels):
        flat = mask_labels.reshape(-1)
        idx = np.flatnonzero(flat)
        sums = np.bincount(flat[idx], weights=hu.reshape(-1)[idx], minlength=256)
        counts = np.bincount(flat[idx], minlength=256)
        out.append((sums, counts))
    result = []
    for les in lesions:
        mean = None
        for sums, counts in out:
            if counts[les.label]:
                mean = round(float(sums[les.label] / counts[les.label]), 1)
                break
        result.append(les.model_copy(update={"mean_hu": mean}))
    return result


# ---- chest --------------------------------------------------------------------------------


def render_chest(
    grid: Grid,
    nodules: Sequence[Nodule],
    rng: np.random.Generator,
    *,
    anatomy_jitter: bool = True,
    anatomy: ChestAnatomy | None = None,
    tracking_ids: Sequence[str] | None = None,
) -> RenderedPhantom:
    """Noise-free chest CT with the nodules placed (in their lobe or at center_mm)."""
    an = anatomy if anatomy is not None else draw_chest_anatomy(rng, grid, jitter=anatomy_jitter)
    model = _chest.ChestModel(an)
    plans = [_chest.plan_nodule(model, n, i + 1, grid, rng) for i, n in enumerate(nodules)]
    raw = render(grid, model, [p for p, _ in plans])
    labels = paint_lesions(raw, [p for p, _ in plans], rng)
    lesions = []
    for i, (nod, (plan, placed)) in enumerate(zip(nodules, plans, strict=True)):
        tid = tracking_ids[i] if tracking_ids is not None else f"N{plan.label}"
        lesions.append(_nodule_truth(grid, model, nod, plan, placed, labels, tid))
    return RenderedPhantom(grid, raw, labels, lesions, an, model)


def _nodule_truth(
    grid: Grid,
    model: _chest.ChestModel,
    nod: Nodule,
    plan: LesionPlan,
    placed: _chest.PlacedNodule,
    labels: np.ndarray,
    tracking_id: str,
) -> LesionTruth:
    keep = labels.reshape(-1)[plan.flat] == plan.label
    k, i, j = np.unravel_index(plan.flat[keep], grid.shape_zyx)
    m = measure_voxels(grid, k, i, j)
    solid_d = solid_v = None
    if nod.nodule_type == "part-solid":
        core = plan.core_mask() & keep
        ck, ci, cj = np.unravel_index(plan.flat[core], grid.shape_zyx)
        cm = measure_voxels(grid, ck, ci, cj)
        solid_d, solid_v = round(cm.mean_diameter_mm, 2), round(cm.volume_ml, 5)
    elif nod.nodule_type == "solid":
        solid_d, solid_v = round(m.mean_diameter_mm, 2), round(m.volume_ml, 5)
    side = "right" if placed.lobe.startswith("R") else "left"
    from pacsflow.domain import Location

    return LesionTruth(
        label=plan.label,
        kind="nodule",
        subtype=nod.nodule_type,
        tracking_id=tracking_id,
        target_volume_ml=round(nod.volume_ml, 5),
        volume_ml=round(m.volume_ml, 5),
        n_voxels=m.n_voxels,
        longest_axial_diameter_mm=m.longest_axial_mm,
        short_axis_diameter_mm=m.short_axis_mm,
        mean_diameter_mm=round(m.mean_diameter_mm, 2),
        centroid_lps_mm=m.centroid_lps_mm,
        centroid_voxel_zyx=m.centroid_voxel,
        location=Location(side=side, compartment="lung", region=LOBE_NAMES[placed.lobe]),
        assigned_hu=round(plan.hu_mean if nod.nodule_type != "part-solid" else plan.hu_mean, 1),
        target_diameter_mm=nod.diameter_mm,
        lobe=placed.lobe,
        solid_component_diameter_mm=solid_d,
        solid_component_volume_ml=solid_v,
    )


def chest_phantom(
    grid: Grid,
    nodules: Sequence[Nodule],
    rng: np.random.Generator,
    *,
    noise_hu: float = 12.0,
    anatomy_jitter: bool = True,
    anatomy: ChestAnatomy | None = None,
) -> PhantomVolume:
    """Chest CT (soft-tissue kernel) with lung nodules; see the module docstring."""
    r = render_chest(grid, nodules, rng, anatomy_jitter=anatomy_jitter, anatomy=anatomy)
    hu = soft_kernel(r.raw, noise_hu, rng)
    return PhantomVolume(grid, hu, r.labels, with_mean_hu(r.lesions, hu, r.labels), noise_hu,
                         r.anatomy)
