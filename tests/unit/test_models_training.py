"""Training smoke tests: tiny networks on tiny volumes, end to end in seconds."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from models.ich.data import ich_sample
from models.ich.sweep import SINGLE as SWEEP_SINGLE
from models.ich.train import train as train_ich
from models.nodule.data import compact
from models.nodule.train import train as train_nodule
from models.segmenter import Segmenter, SegmenterConfig
from models.training import (
    PoolEntry,
    Sample,
    SampleFeed,
    SampleSource,
    TrainingPlan,
    TrainingResult,
    _crop,
    _patch_inputs,
    set_one_cycle,
    to_model_grid,
    train_members,
    train_segmenter,
    write_members,
)
from pacsflow.errors import InvalidInputError

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


def test_a_window_first_network_trains_and_loads_with_its_order(tmp_path: Path) -> None:
    config = replace(TINY_ICH, window_first=True)
    # 12 steps: past a tenth of the run, so false-positive mining reads the windowed inputs.
    paths = train_ich(
        tmp_path,
        seed=2,
        steps=12,
        pool_size=2,
        patch_zyx=(8, 16, 16),
        batch=2,
        matrix=48,
        config=config,
    )
    segmenter = Segmenter.from_files(paths["weights"], paths["config"])
    assert segmenter.config.window_first
    hu = np.full((6, 40, 40), 35.0, dtype=np.float32)
    prob = segmenter.probability(hu, (5.0, 5.0, 5.0))
    assert prob.shape == hu.shape and np.all((prob >= 0) & (prob <= 1))


def test_windowed_samples_give_windowed_patches_jittered_within_the_windows() -> None:
    config = replace(TINY_ICH, window_first=True)
    rng = np.random.default_rng(0)
    hu = rng.normal(40.0, 5.0, (4, 12, 12)).astype(np.float32)
    mask = hu > 45.0
    sample = to_model_grid(hu, mask, (5.0, 6.0, 6.0), config)
    assert sample.inputs is not None and sample.inputs.shape == (2, *sample.hu.shape)
    patch = (4, 16, 16)  # larger than the volume in-plane: padded
    x, m = _crop(sample, patch, rng, None)
    assert x.shape == (2, *patch) and m.shape == patch
    assert np.all(x[:, :, 12:, :] == 0.0)  # padding is the bottom of every window
    plan = TrainingPlan(steps=1, patch_zyx=patch, hu_jitter=4.0, noise_jitter=3.0)
    gen = torch.Generator().manual_seed(0)
    batch = torch.from_numpy(np.stack([x, x]).astype(np.float32))
    inputs = _patch_inputs(batch, config, plan, gen)
    assert inputs.shape == (2, 2, *patch)
    assert float(inputs.min()) >= 0.0 and float(inputs.max()) <= 1.0
    # The same HU offset moves the narrow brain window 4x as far as the wide one.
    inside = (slice(None), slice(None), slice(0, 4), slice(0, 12), slice(0, 12))
    moved = (inputs - batch)[inside].abs().mean(dim=(2, 3, 4))
    assert torch.all(moved[:, 0] > 2.0 * moved[:, 1])


def test_compact_chest_samples_keep_their_windowed_inputs() -> None:
    config = replace(TINY_NODULE, window_first=True)
    hu = np.full((4, 20, 20), -1000.0, np.float32)
    hu[:, 5:15, 4:12] = 40.0  # the body
    sample = compact(to_model_grid(hu, hu > 0, (8.0, 8.0, 8.0), config))
    assert sample.inputs is not None
    assert sample.inputs.shape == (2, *sample.hu.shape)
    body = sample.hu > 0  # the crop kept inputs and HU voxel for voxel
    assert body.any() and np.all(sample.inputs[1][body] > 0)
    assert np.all(sample.inputs[:, ~body] == 0)


def test_training_is_reproducible_by_seed(tmp_path: Path) -> None:
    kwargs = dict(steps=2, pool_size=1, patch_zyx=(8, 16, 16), batch=1, matrix=48, config=TINY_ICH)
    a = train_ich(tmp_path / "a", seed=5, **kwargs)  # type: ignore[arg-type]
    b = train_ich(tmp_path / "b", seed=5, **kwargs)  # type: ignore[arg-type]
    wa = torch.load(a["weights"], weights_only=True)
    wb = torch.load(b["weights"], weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_members_train_from_consecutive_seeds_and_serve_their_mean(tmp_path: Path) -> None:
    kwargs = dict(steps=2, pool_size=1, patch_zyx=(8, 16, 16), batch=1, matrix=48)
    pair = train_ich(tmp_path / "pair", seed=5, config=replace(TINY_ICH, members=2), **kwargs)  # type: ignore[arg-type]
    singles = [train_ich(tmp_path / f"s{s}", seed=s, config=TINY_ICH, **kwargs) for s in (5, 6)]  # type: ignore[arg-type]
    state = torch.load(pair["weights"], weights_only=True)
    for k, single in enumerate(singles):
        own = torch.load(single["weights"], weights_only=True)
        assert all(torch.equal(state[f"members.{k}.{key}"], own[key]) for key in own)
    log = json.loads(pair["log"].read_text())
    assert log["member_seeds"] == [5, 6] and len(log["members"]) == 2

    hu = np.random.default_rng(0).normal(60.0, 60.0, (6, 40, 40)).astype(np.float32)
    ensemble = Segmenter.from_files(pair["weights"], pair["config"])
    assert ensemble.config.members == 2
    each = [Segmenter.from_files(s["weights"], s["config"]) for s in singles]
    x = ensemble.prepare(hu, (5.0, 5.0, 5.0))
    mean = sum(s.probability_on_model_grid(x) for s in each) / 2
    assert torch.allclose(ensemble.probability_on_model_grid(x), mean, atol=1e-5)


def test_members_of_another_shape_are_refused(tmp_path: Path) -> None:
    kwargs = dict(steps=1, pool_size=1, patch_zyx=(8, 16, 16), batch=1, matrix=48)
    small = train_ich(tmp_path / "a", seed=1, config=TINY_ICH, **kwargs)  # type: ignore[arg-type]
    wide = train_ich(tmp_path / "b", seed=1, config=replace(TINY_ICH, channels=(4, 16)), **kwargs)  # type: ignore[arg-type]
    pairs = [(r["weights"], r["log"]) for r in (small, wide)]
    with pytest.raises(RuntimeError, match="size mismatch"):
        write_members(replace(TINY_ICH, members=2), pairs, tmp_path / "out", name="ich")
    with pytest.raises(ValueError, match="wants 3 members"):
        write_members(replace(TINY_ICH, members=3), pairs, tmp_path / "out", name="ich")


def test_an_ensemble_config_is_not_trained_as_one_network(tmp_path: Path) -> None:
    plan = TrainingPlan(steps=1, patch_zyx=(8, 16, 16), batch=1, pool_size=1)
    with pytest.raises(InvalidInputError, match="train_members"):
        train_segmenter(
            replace(TINY_ICH, members=2), _bright_cubes, plan, tmp_path, name="pair", seed=1
        )
    assert SWEEP_SINGLE.members == 1  # the GPU sweep compares single networks


def _failing_after(calls: int, source: SampleSource) -> SampleSource:
    """`source`, until it has given `calls` samples; then it fails like a crash would."""
    given = [0]

    def sample(rng: np.random.Generator) -> Sample:
        given[0] += 1
        if given[0] > calls:
            raise RuntimeError("crashed part-way")
        return source(rng)

    return sample


PAIR_PLAN = TrainingPlan(steps=2, patch_zyx=(8, 16, 16), batch=1, pool_size=1, refresh_every=0)


def _crash_part_way(tmp_path: Path) -> Path:
    """Train a pair from seed 5 until member 1's first sample fails; mark member 0's
    finished weights (every tensor zero) so that reusing them shows; return their path."""
    with pytest.raises(RuntimeError, match="crashed part-way"):
        train_members(
            replace(TINY_ICH, members=2),
            _failing_after(1, _bright_cubes),  # member 0 takes one sample: its pool
            PAIR_PLAN,
            tmp_path,
            name="m",
            seed=5,
        )
    finished = tmp_path / "m.members" / "m-seed5.pt"
    assert finished.is_file() and not (tmp_path / "m.pt").exists()
    state = torch.load(finished, weights_only=True)
    torch.save({k: torch.zeros_like(v) for k, v in state.items()}, finished)
    return finished


def _member_zero_reused(result: TrainingResult) -> bool:
    state = torch.load(result.weights, weights_only=True)
    assert any(v.any() for k, v in state.items() if k.startswith("members.1."))
    return all(not v.any() for k, v in state.items() if k.startswith("members.0."))


def test_members_resume_after_a_crash(tmp_path: Path) -> None:
    _crash_part_way(tmp_path)
    result = train_members(
        replace(TINY_ICH, members=2), _bright_cubes, PAIR_PLAN, tmp_path, name="m", seed=5
    )
    assert _member_zero_reused(result)
    assert json.loads(result.log.read_text())["member_seeds"] == [5, 6]
    assert not (tmp_path / "m.members").exists()


@pytest.mark.parametrize(
    "change",
    [
        {"plan": replace(PAIR_PLAN, learning_rate=PAIR_PLAN.learning_rate / 2)},
        {"extra_log": {"acquisition_matrix": 64}},
        {"config": replace(TINY_ICH, members=2, windows=((0.0, 80.0), (-100.0, 300.0)))},
    ],
    ids=["plan", "extra_log", "config"],
)
def test_a_member_trained_otherwise_is_trained_again(
    tmp_path: Path, change: dict[str, Any]
) -> None:
    _crash_part_way(tmp_path)
    kwargs: dict[str, Any] = {"config": replace(TINY_ICH, members=2), "plan": PAIR_PLAN}
    kwargs.update(change)
    result = train_members(
        kwargs.pop("config"),
        _bright_cubes,
        kwargs.pop("plan"),
        tmp_path,
        name="m",
        seed=5,
        **kwargs,
    )
    assert not _member_zero_reused(result)


def test_a_cut_off_member_log_is_trained_again_not_an_error(tmp_path: Path) -> None:
    finished = _crash_part_way(tmp_path)
    log_path = finished.with_suffix(".train.json")
    log_path.write_text(log_path.read_text()[:40])
    result = train_members(
        replace(TINY_ICH, members=2), _bright_cubes, PAIR_PLAN, tmp_path, name="m", seed=5
    )
    assert not _member_zero_reused(result)


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


def test_worker_processes_render_the_same_samples_as_one_process() -> None:
    source = partial(ich_sample, config=TINY_ICH, matrix=48)
    alone = SampleFeed(source, seed=7)
    workers = SampleFeed(source, seed=7, workers=2)
    try:
        for _ in range(3):
            a, b = alone.take(), workers.take()
            assert np.array_equal(a.hu, b.hu) and np.array_equal(a.mask, b.mask)
    finally:
        workers.close()


@pytest.mark.parametrize("done", [0.0, 0.05, 0.15, 0.4, 0.8, 0.99])
def test_time_based_one_cycle_follows_torch_one_cycle(done: float) -> None:
    """A budgeted run sets the rate from the fraction of its time spent; at the same
    fraction it must match OneCycleLR's rate and Adam momentum."""
    plan = TrainingPlan(steps=1000, patch_zyx=(4, 4, 4), learning_rate=5e-3)
    reference = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=plan.learning_rate)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        reference, max_lr=plan.learning_rate, total_steps=plan.steps + 1, pct_start=0.15
    )
    for _ in range(round(done * plan.steps)):
        reference.step()
        schedule.step()
    ours = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    set_one_cycle(ours, plan, done)
    want, got = reference.param_groups[0], ours.param_groups[0]
    assert got["lr"] == pytest.approx(want["lr"], rel=0.02, abs=1e-7)
    assert got["betas"][0] == pytest.approx(want["betas"][0], abs=2e-3)


def test_mimic_voxels_are_lesion_density_tissue_away_from_lesions() -> None:
    hu = np.full((6, 40, 40), 30.0, np.float32)  # parenchyma
    hu[2:4, 5:9, 5:9] = 70.0  # a dural fold: lesion density, not lesion
    hu[2:4, 25:30, 25:30] = 70.0  # the lesion
    mask = np.zeros(hu.shape, bool)
    mask[2:4, 25:30, 25:30] = True
    plan = TrainingPlan(steps=1, patch_zyx=(4, 8, 8), mimic_fraction=0.2)
    entry = PoolEntry.of(Sample(hu=hu, mask=mask), plan)
    z, y, x = np.unravel_index(entry.mimic, hu.shape)
    assert entry.mimic.size > 0
    assert set(np.unique(z)) <= {2, 3}
    assert y.max() < 12 and x.max() < 12  # around the fold, nowhere near the lesion
    assert np.array_equal(entry.lesion, np.flatnonzero(mask))
    without = PoolEntry.of(Sample(hu=hu, mask=mask), TrainingPlan(steps=1, patch_zyx=(4, 8, 8)))
    assert without.mimic.size == 0  # not computed when the plan draws no mimic patches


def test_a_budgeted_run_ends_when_its_time_is_spent(tmp_path: Path) -> None:
    cap = 1_000_000
    plan = TrainingPlan(
        steps=cap,
        patch_zyx=(8, 16, 16),
        batch=2,
        pool_size=4,
        refresh_every=0,
        mimic_fraction=0.3,
        time_budget_s=1.0,
    )
    result = train_segmenter(TINY_ICH, _bright_cubes, plan, tmp_path, name="budget", seed=1)
    assert 0 < len(result.losses) < cap
    assert all(np.isfinite(result.losses))
    logged = json.loads(result.log.read_text())
    assert logged["plan"]["time_budget_s"] == 1.0
