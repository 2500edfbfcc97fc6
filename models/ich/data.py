"""Training volumes for the ICH model: head phantoms rendered near the model grid.

A phantom is rendered on a small acquisition grid (about 1 mm pixels, 5 mm "thick" or
2.5 mm "thin" slices, varied noise) and resampled to the model grid with the same
`resample` the inference path applies to a real series, so partial volume and noise
reduction match what the network sees at inference.

Tried and measured worse on the validation studies (models.evaluate.calibrate), kept out:
a 1 mm in-plane grid (sensitivity for small subdurals +0.1, specificity 0.63 instead of
0.83: bone partial volume at the skull base read as blood), 1.25 mm acquisitions
averaged into 5 mm slabs with extra-axial bleeds drawn more often and a 0.4 label
fraction (specificity 0.84 instead of 0.90 on the held-out set).
"""

from __future__ import annotations

import math

import numpy as np

from models.segmenter import SegmenterConfig
from models.training import Sample, to_model_grid
from pacsflow.errors import InvalidInputError
from pacsflow.synth.phantoms import Grid, Hemorrhage, head_phantom
from pacsflow.synth.specs import HEMORRHAGE_SUBTYPES, SIDES

CONFIG = SegmenterConfig(
    kind="ich",
    spacing_zyx=(5.0, 1.5, 1.5),
    # Brain window (blood against parenchyma) and a wide one (blood against calcification,
    # dura and bone, which all saturate the first).
    windows=((0.0, 100.0), (-100.0, 300.0)),
    channels=(8, 16, 32, 64),
    strides=(2, 2, 2),
    num_res_units=1,
    norm="batch",
    threshold=0.5,
    # Post-processing (not training): the voxel threshold, min volume, min probability and
    # max median HU of a finding are chosen on validation studies by
    # models.evaluate.calibrate (models.ich.aggregate); run it after every retrain. 100 HU
    # is the top of acute blood's range.
    extra={"min_volume_ml": 0.1, "max_median_hu": 100.0},
)

VOLUME_RANGE_ML = (0.5, 60.0)


def random_hemorrhages(
    rng: np.random.Generator, *, normal_fraction: float = 0.5
) -> list[Hemorrhage]:
    """About half normal; else one (sometimes two) hemorrhages of any subtype, side and a
    log-uniform volume, so small bleeds are as common as large ones."""
    if rng.random() < normal_fraction:
        return []
    count = 1 if rng.random() < 0.8 else 2
    lo, hi = (math.log(v) for v in VOLUME_RANGE_ML)
    return [
        Hemorrhage(
            subtype=str(rng.choice(HEMORRHAGE_SUBTYPES)),
            volume_ml=round(math.exp(rng.uniform(lo, hi)), 2),
            side=str(rng.choice(SIDES)),
        )
        for _ in range(count)
    ]


def acquisition_grid(rng: np.random.Generator, *, matrix: int = 256) -> Grid:
    """A head CT acquisition: thick (5 mm) or thin (2.5 mm) slices over 150-180 mm."""
    thick = rng.random() < 0.6
    slice_mm = 5.0 if thick else 2.5
    coverage = rng.uniform(150.0, 180.0)
    return Grid.axial(
        matrix=matrix,
        fov_mm=float(rng.uniform(220.0, 260.0)),
        n_slices=max(4, round(coverage / slice_mm)),
        slice_mm=slice_mm,
    )


def ich_sample(
    rng: np.random.Generator, *, config: SegmenterConfig = CONFIG, matrix: int = 256
) -> Sample:
    grid = acquisition_grid(rng, matrix=matrix)
    noise = float(rng.uniform(3.0, 14.0))
    for _ in range(5):
        hemorrhages = random_hemorrhages(rng)
        try:
            phantom = head_phantom(grid, hemorrhages, rng, noise_hu=noise)
            break
        except InvalidInputError:  # no room for this bleed in this head: draw again
            continue
    else:
        phantom = head_phantom(grid, [], rng, noise_hu=noise)
    return to_model_grid(phantom.hu, phantom.labels > 0, grid.spacing_zyx_mm, config)
