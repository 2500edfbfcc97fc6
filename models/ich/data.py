"""Training volumes for the ICH model: head phantoms rendered near the model grid.

A phantom is rendered on a small acquisition grid (about 1 mm pixels, 5 mm "thick" or
2.5 mm "thin" slices, varied noise) and resampled to the model grid with the same
`resample` the inference path applies to a real series, so partial volume and noise
reduction match what the network sees at inference.
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
    # 1 mm in-plane: a thin subdural crescent beside the inner table must keep voxels of
    # its own instead of merging with the bone's partial volume.
    spacing_zyx=(5.0, 1.0, 1.0),
    # Brain window (blood against parenchyma) and a wide one (blood against calcification,
    # dura and bone, which all saturate the first).
    windows=((0.0, 100.0), (-100.0, 300.0)),
    channels=(8, 16, 32, 64),
    strides=(2, 2, 2),
    num_res_units=1,
    norm="batch",
    threshold=0.5,
    # Post-processing (not training): min volume and probability are chosen on validation
    # studies by models.evaluate.calibrate; 100 HU is the top of acute blood's range.
    extra={"min_volume_ml": 0.1, "max_median_hu": 100.0},
)

VOLUME_RANGE_ML = (0.3, 60.0)
# Extra-axial collections are thin and hug the skull: the hardest to see, drawn most often.
SUBTYPE_WEIGHTS = {
    "intraparenchymal": 0.2,
    "subdural": 0.3,
    "epidural": 0.2,
    "subarachnoid": 0.15,
    "intraventricular": 0.15,
}
# A model voxel is labelled blood when 40% of it is: thin collections keep a label.
LABEL_FRACTION = 0.4
_WEIGHTS = [SUBTYPE_WEIGHTS[s] for s in HEMORRHAGE_SUBTYPES]


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
            subtype=str(rng.choice(HEMORRHAGE_SUBTYPES, p=_WEIGHTS)),
            volume_ml=round(math.exp(rng.uniform(lo, hi)), 2),
            side=str(rng.choice(SIDES)),
        )
        for _ in range(count)
    ]


def acquisition_grid(rng: np.random.Generator, *, matrix: int = 384) -> Grid:
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
    rng: np.random.Generator, *, config: SegmenterConfig = CONFIG, matrix: int = 384
) -> Sample:
    grid = acquisition_grid(rng, matrix=matrix)
    noise = float(rng.uniform(3.0, 16.0))
    for _ in range(5):
        hemorrhages = random_hemorrhages(rng)
        try:
            phantom = head_phantom(grid, hemorrhages, rng, noise_hu=noise)
            break
        except InvalidInputError:  # no room for this bleed in this head: draw again
            continue
    else:
        phantom = head_phantom(grid, [], rng, noise_hu=noise)
    return to_model_grid(
        phantom.hu, phantom.labels > 0, grid.spacing_zyx_mm, config, label_fraction=LABEL_FRACTION
    )
