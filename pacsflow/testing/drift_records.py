"""TEST DATA: drift records of simulated head-CT studies, sampled from the synthetic
generator's distributions without writing DICOM (for drift tests and demos).

How a record is made, per study:
- vendor: one of pacsflow.synth's vendors, uniformly (as `write_head_ct_study` picks);
  its header conventions give Manufacturer and the head soft-tissue ConvolutionKernel.
- protocol: thick / thick / thin / both, as in the held-out mix (models/evaluate.py
  `ich_cases`); the pathway reads the 5 mm series when there is one, else the vendor's
  thin series (SliceThickness = its thin_head_mm). kVp: the generator's 120.
- image statistics: a small bank of noise-free head phantoms rendered by
  pacsflow.synth.phantoms (soft-tissue kernel, coarse matrix), a random subsample of each
  volume's voxels, plus Gaussian noise of the study's level (5 mm noise uniform in the
  held-out range 3-12 HU, times sqrt(5 / t) for a thin series), measured with
  `body_intensity_stats` exactly as the pathway measures a volume.
- score and latency: drawn from pools given by the caller (the evaluation's per-study
  probabilities and seconds).
- not analysed (validation failure): with a small probability.

A `Scanner` added to the population stands for a shift: a vendor the generator does not
know, with its own kernel and noise range.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pacsflow.governance.drift import (
    DriftRecord,
    body_intensity_stats,
    inference_features,
)
from pacsflow.pathways.headers import InstanceHeader
from pacsflow.synth.grid import Grid
from pacsflow.synth.phantoms import render_head, soft_kernel_float
from pacsflow.synth.vendors import PROFILES, VENDORS

HEAD_THICK_MM = 5.0
PROTOCOLS = ("thick", "thick", "thin", "both")


@dataclass(frozen=True)
class Scanner:
    """A scanner outside the generator's vendors (a shift), and its share of studies."""

    manufacturer: str
    kernel: str
    slice_thickness_mm: float
    noise_hu: tuple[float, float]
    share: float
    kvp: float = 120.0


@dataclass(frozen=True)
class Population:
    noise_hu: tuple[float, float] = (3.0, 12.0)
    failure_rate: float = 0.01
    extra: Scanner | None = None


@dataclass
class PhantomBank:
    """Noise-free head volumes (HU) to draw voxel subsamples from."""

    volumes: list[np.ndarray] = field(default_factory=list)

    @classmethod
    def render(cls, count: int = 4, matrix: int = 96, seed: int = 0) -> PhantomBank:
        volumes = []
        for i in range(count):
            rng = np.random.default_rng([seed, i])
            grid = Grid.axial(matrix=matrix, fov_mm=240.0, n_slices=36, slice_mm=5.0)
            raw = render_head(grid, (), rng).raw
            volumes.append(soft_kernel_float(raw, 0.0, rng).reshape(-1))
        return cls(volumes)


def _header(manufacturer: str, kernel: str, thickness: float, kvp: float) -> InstanceHeader:
    return InstanceHeader(
        study_uid="",
        series_uid="",
        sop_uid="",
        modality="CT",
        manufacturer=manufacturer,
        kernel=kernel,
        slice_thickness=thickness,
        kvp=kvp,
    )


def simulate_records(
    n: int,
    *,
    seed: int,
    bank: PhantomBank,
    scores: Sequence[float],
    latencies: Sequence[float],
    population: Population | None = None,
    voxels: int = 20_000,
) -> list[DriftRecord]:
    """`n` records of studies drawn from `population` (the held-out mix by default)."""
    pop = population or Population()
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        if pop.extra is not None and rng.random() < pop.extra.share:
            s = pop.extra
            manufacturer, kernel, thickness, kvp = (
                s.manufacturer,
                s.kernel,
                s.slice_thickness_mm,
                s.kvp,
            )
            noise = float(rng.uniform(*s.noise_hu))
        else:
            profile = PROFILES[VENDORS[int(rng.integers(len(VENDORS)))]]
            thin_only = PROTOCOLS[int(rng.integers(len(PROTOCOLS)))] == "thin"
            thickness = profile.thin_head_mm if thin_only else HEAD_THICK_MM
            manufacturer, kernel, kvp = profile.manufacturer, profile.kernel("head", "thick"), 120.0
            noise = float(rng.uniform(*pop.noise_hu)) * math.sqrt(HEAD_THICK_MM / thickness)
        volume = bank.volumes[int(rng.integers(len(bank.volumes)))]
        sample = volume[rng.integers(0, volume.size, voxels)]
        sample = sample + rng.normal(0.0, noise, voxels).astype(np.float32)
        features = inference_features(
            [_header(manufacturer, kernel, thickness, kvp)], body_intensity_stats(sample)
        )
        failed = bool(rng.random() < pop.failure_rate)
        records.append(
            DriftRecord.from_features(
                f"sim-{seed}-{i}",
                features,
                score=None if failed else float(scores[int(rng.integers(len(scores)))]),
                latency_s=None if failed else float(latencies[int(rng.integers(len(latencies)))]),
                validation_failed=failed,
            )
        )
    return records
