"""Training volumes for the nodule model: chest phantoms rendered near the model grid.

Rendered on a coarse acquisition grid (256 matrix, 1.25-2.5 mm slices, varied noise) and
resampled to the model grid by the same `resample` the inference path uses.
"""

from __future__ import annotations

import math

import numpy as np

from models.segmenter import SegmenterConfig
from models.training import Sample, to_model_grid
from pacsflow.errors import InvalidInputError
from pacsflow.synth.phantoms import Grid, Nodule, chest_phantom
from pacsflow.synth.specs import NODULE_TYPES

CONFIG = SegmenterConfig(
    kind="nodule",
    spacing_zyx=(1.5, 1.5, 1.5),
    # A narrow lung window (ground glass against aerated lung) and a wide one (solid
    # tissue, vessels, chest wall).
    windows=((-1000.0, -400.0), (-1000.0, 200.0)),
    channels=(8, 16, 32, 64),
    strides=(2, 2, 2),
    num_res_units=1,
    norm="batch",
    threshold=0.5,
    extra={"min_diameter_mm": 3.0, "refine_band_mm": 1.5},
)

DIAMETER_RANGE_MM = (3.0, 30.0)


def random_nodules(rng: np.random.Generator) -> list[Nodule]:
    """A fifth of scans without nodules, else 1-4 of any type; diameters log-uniform so
    small nodules are as common as large ones."""
    if rng.random() < 0.2:
        return []
    lo, hi = (math.log(v) for v in DIAMETER_RANGE_MM)
    return [
        Nodule(
            nodule_type=str(NODULE_TYPES[int(rng.choice(3, p=[0.45, 0.25, 0.30]))]),
            diameter_mm=round(math.exp(rng.uniform(lo, hi)), 1),
        )
        for _ in range(int(rng.integers(1, 5)))
    ]


def acquisition_grid(rng: np.random.Generator, *, matrix: int = 256) -> Grid:
    slice_mm = float(rng.choice([1.25, 2.0, 2.5]))
    coverage = float(rng.uniform(300.0, 360.0))
    return Grid.axial(
        matrix=matrix,
        fov_mm=float(rng.uniform(340.0, 400.0)),
        n_slices=max(8, round(coverage / slice_mm)),
        slice_mm=slice_mm,
        center_lps_mm=(0.0, 0.0, -200.0),
    )


def nodule_sample(
    rng: np.random.Generator, *, config: SegmenterConfig = CONFIG, matrix: int = 256
) -> Sample:
    grid = acquisition_grid(rng, matrix=matrix)
    noise = float(rng.uniform(5.0, 20.0))
    for _ in range(5):
        try:
            phantom = chest_phantom(grid, random_nodules(rng), rng, noise_hu=noise)
            break
        except InvalidInputError:  # no room for these nodules: draw again
            continue
    else:
        phantom = chest_phantom(grid, [], rng, noise_hu=noise)
    sample = to_model_grid(phantom.hu, phantom.labels > 0, grid.spacing_zyx_mm, config)
    return compact(sample)


def compact(sample: Sample) -> Sample:
    """Crop to the body in-plane and keep HU as int16: a pool of chest volumes then fits
    in a few hundred MB."""
    body = (sample.hu > -500.0).any(axis=0)
    rows, cols = np.nonzero(body.any(axis=1))[0], np.nonzero(body.any(axis=0))[0]
    if rows.size and cols.size:
        box = (slice(None), slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        inputs = None if sample.inputs is None else sample.inputs[(slice(None), *box)]
        sample = Sample(hu=sample.hu[box], mask=sample.mask[box], inputs=inputs)
    return Sample(
        hu=np.ascontiguousarray(np.rint(sample.hu).astype(np.int16)),
        mask=np.ascontiguousarray(sample.mask),
        inputs=None if sample.inputs is None else np.ascontiguousarray(sample.inputs),
    )
