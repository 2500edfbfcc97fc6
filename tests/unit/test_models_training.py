"""Training smoke tests: tiny networks on tiny volumes, end to end in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.ich.train import train as train_ich
from models.nodule.train import train as train_nodule
from models.segmenter import Segmenter, SegmenterConfig
from models.training import Sample, TrainingPlan, train_segmenter

TINY_ICH = SegmenterConfig(
    kind="ich",
    spacing_zyx=(5.0, 6.0, 6.0),
    windows=((0.0, 100.0), (-100.0, 300.0)),
    channels=(4, 8),
    strides=(2,),
    num_res_units=0,
)
TINY_NODULE = SegmenterConfig(
    kind="nodule",
    spacing_zyx=(8.0, 8.0, 8.0),
    windows=((-1000.0, -400.0), (-1000.0, 200.0)),
    channels=(4, 8),
    strides=(2,),
    num_res_units=0,
)


def _bright_cubes(rng: np.random.Generator) -> Sample:
    """An easy task: a 60 HU cube in 30 HU noise is the lesion."""
    hu = rng.normal(30.0, 5.0, (8, 24, 24)).astype(np.float32)
    mask = np.zeros(hu.shape, bool)
    z, y, x = (int(rng.integers(1, n - 5)) for n in hu.shape)
    mask[z : z + 4, y : y + 5, x : x + 5] = True
    hu[mask] += 30.0
    return Sample(hu=hu, mask=mask)


def test_loss_decreases_on_an_easy_task(tmp_path: Path) -> None:
    plan = TrainingPlan(
        steps=60,
        patch_zyx=(8, 16, 16),
        batch=4,
        learning_rate=1e-2,
        pool_size=8,
        refresh_every=0,
        noise_jitter=0.0,
    )
    result = train_segmenter(TINY_ICH, _bright_cubes, plan, tmp_path, name="easy", seed=3)
    assert all(np.isfinite(result.losses))
    assert np.mean(result.losses[-10:]) < 0.8 * np.mean(result.losses[:10])


def test_ich_training_writes_loadable_weights(tmp_path: Path) -> None:
    paths = train_ich(
        tmp_path,
        seed=1,
        steps=3,
        pool_size=2,
        patch_zyx=(8, 16, 16),
        batch=2,
        matrix=48,
        config=TINY_ICH,
    )
    assert set(paths) == {"weights", "config", "log"}
    segmenter = Segmenter.from_files(paths["weights"], paths["config"])
    assert segmenter.config == TINY_ICH
    hu = np.full((6, 40, 40), 35.0, dtype=np.float32)
    prob = segmenter.probability(hu, (5.0, 5.0, 5.0))
    assert prob.shape == hu.shape and np.all((prob >= 0) & (prob <= 1))


def test_training_is_reproducible_by_seed(tmp_path: Path) -> None:
    kwargs = dict(steps=2, pool_size=1, patch_zyx=(8, 16, 16), batch=1, matrix=48, config=TINY_ICH)
    a = train_ich(tmp_path / "a", seed=5, **kwargs)  # type: ignore[arg-type]
    b = train_ich(tmp_path / "b", seed=5, **kwargs)  # type: ignore[arg-type]
    wa = torch.load(a["weights"], weights_only=True)
    wb = torch.load(b["weights"], weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("seed", [2])
def test_nodule_training_runs_end_to_end(tmp_path: Path, seed: int) -> None:
    paths = train_nodule(
        tmp_path,
        seed=seed,
        steps=2,
        pool_size=1,
        patch_zyx=(8, 16, 16),
        batch=1,
        matrix=48,
        config=TINY_NODULE,
    )
    segmenter = Segmenter.from_files(paths["weights"], paths["config"])
    assert segmenter.config.kind == "nodule"
