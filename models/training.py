"""Training loop shared by both models: patches from a pool of synthetic volumes on the
model grid, Dice + BCE loss, Adam, reproducible by seed on CPU.

A sample source renders one (HU volume, lesion mask) pair already on the model grid (the
same `Segmenter.prepare` resampling the inference path uses), so what the network sees in
training is what it sees on a real series.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceCELoss
from scipy import ndimage

from models.segmenter import (
    SegmenterConfig,
    build_network,
    model_grid_shape,
    resample,
    window_channels,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """One training volume on the model grid."""

    hu: np.ndarray  # float32 or int16 (compact pools) HU, (z, y, x)
    mask: np.ndarray  # bool (z, y, x)


SampleSource = Callable[[np.random.Generator], Sample]


def to_model_grid(
    hu: np.ndarray,
    mask: np.ndarray,
    spacing_zyx: tuple[float, float, float],
    config: SegmenterConfig,
    *,
    label_fraction: float = 0.5,
) -> Sample:
    """Resample an acquisition to the model grid; a model voxel is lesion when at least
    `label_fraction` of it was."""
    shape = model_grid_shape(tuple(hu.shape), spacing_zyx, config.spacing_zyx)  # type: ignore[arg-type]
    t = torch.from_numpy(np.ascontiguousarray(hu, dtype=np.float32))[None, None]
    m = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    return Sample(
        hu=resample(t, shape)[0, 0].numpy(),
        mask=(resample(m, shape)[0, 0] >= label_fraction).numpy(),
    )


@dataclass(frozen=True)
class TrainingPlan:
    steps: int
    patch_zyx: tuple[int, int, int]
    batch: int = 4
    learning_rate: float = 3e-3
    pool_size: int = 64
    refresh_every: int = 4  # replace one pool volume by a fresh one every n steps
    positive_fraction: float = 0.6  # patches centred on a lesion voxel when one exists
    hu_jitter: float = 4.0  # global HU shift per patch (scanner calibration)
    noise_jitter: float = 3.0  # extra Gaussian noise SD, drawn in [0, noise_jitter] HU
    hard_fraction: float = 0.25  # patches centred on a false positive of the current network
    mine_every: int = 10  # find false positives in one pool volume every n steps
    mine_box: tuple[int, int, int] | None = None  # search a random box, not the whole volume
    hard_bank: int = 0  # > 0: keep up to n false-positive patches beyond pool refreshes
    threads: int = 2


@dataclass(frozen=True)
class TrainingResult:
    weights: Path
    config: Path
    log: Path
    losses: list[float]
    seconds: float


def _crop(
    sample: Sample,
    patch: tuple[int, int, int],
    rng: np.random.Generator,
    around: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """A patch of `patch` size, centred (give or take a quarter patch) on one of the flat
    voxel indices `around` when given, else anywhere; padded with the volume's lowest
    value where the volume is smaller."""
    shape = sample.hu.shape
    if around is not None and around.size:
        centre = np.unravel_index(int(around[rng.integers(around.size)]), shape)
        start = [
            int(np.clip(c - p // 2 + rng.integers(-p // 4, p // 4 + 1), 0, max(0, n - p)))
            for c, p, n in zip(centre, patch, shape, strict=True)
        ]
    else:
        start = [int(rng.integers(0, max(0, n - p) + 1)) for p, n in zip(patch, shape, strict=True)]
    box = tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))
    hu, mask = sample.hu[box], sample.mask[box]
    if hu.shape != patch:
        pad = [(0, p - n) for p, n in zip(patch, hu.shape, strict=True)]
        hu = np.pad(hu, pad, constant_values=float(sample.hu.min()))
        mask = np.pad(mask, pad)
    return hu, mask


def _augment(
    hu: np.ndarray, mask: np.ndarray, plan: TrainingPlan, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    if rng.random() < 0.5:  # left-right mirror: both sides equally likely
        hu, mask = hu[..., ::-1], mask[..., ::-1]
    if rng.random() < 0.5:  # anterior-posterior mirror (local texture, not anatomy)
        hu, mask = hu[:, ::-1], mask[:, ::-1]
    hu = hu + np.float32(rng.uniform(-plan.hu_jitter, plan.hu_jitter))
    sd = rng.uniform(0.0, plan.noise_jitter)
    if sd > 0.2:
        hu = hu + rng.normal(0.0, sd, hu.shape).astype(np.float32)
    return np.ascontiguousarray(hu, dtype=np.float32), np.ascontiguousarray(mask)


@torch.no_grad()
def _false_positives(
    net: torch.nn.Module,
    sample: Sample,
    config: SegmenterConfig,
    box_shape: tuple[int, int, int] | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Flat indices (into the whole volume) where the network, as trained so far, sees
    a lesion that is not there, ignoring the two voxels around true lesions, where the
    edge is a matter of partial volume. With `box_shape`, only a random box of the
    volume is searched (large chest volumes)."""
    shape = sample.hu.shape
    box: tuple[slice, ...] = tuple(slice(0, n) for n in shape)
    if box_shape is not None and rng is not None:
        starts = [
            int(rng.integers(0, max(0, n - b) + 1)) for n, b in zip(shape, box_shape, strict=True)
        ]
        box = tuple(
            slice(s, min(n, s + b)) for s, b, n in zip(starts, box_shape, shape, strict=True)
        )
    hu = torch.from_numpy(np.asarray(sample.hu[box], dtype=np.float32))
    x = window_channels(hu, config.windows)[None]
    multiple = 2 ** len(config.strides)
    pads = [(-n) % multiple for n in x.shape[-3:]]
    padded = torch.nn.functional.pad(x, (0, pads[2], 0, pads[1], 0, pads[0]), mode="replicate")
    z, y, xx = x.shape[-3:]
    net.eval()  # running statistics, as at inference; and leave them untouched
    found = (net(padded)[0, 0, :z, :y, :xx] > 0).numpy()
    net.train()
    mask = sample.mask[box]
    if mask.any():
        found &= ~ndimage.binary_dilation(mask, iterations=2)
    local = np.nonzero(found)
    return np.ravel_multi_index(tuple(i + b.start for i, b in zip(local, box, strict=True)), shape)


def train_segmenter(
    config: SegmenterConfig,
    source: SampleSource,
    plan: TrainingPlan,
    out_dir: Path,
    *,
    name: str,
    seed: int,
    extra_log: dict[str, object] | None = None,
) -> TrainingResult:
    """Train a network for `config` on samples from `source`; write `<name>.pt`,
    `<name>.json` (config) and `<name>.train.json` (plan, seed, loss curve) to out_dir."""
    started = time.perf_counter()
    torch.set_num_threads(plan.threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = build_network(config)
    net.train()
    optimiser = torch.optim.Adam(net.parameters(), lr=plan.learning_rate)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=plan.learning_rate, total_steps=max(1, plan.steps), pct_start=0.15
    )
    # Dice over the whole batch: patches without lesion do not make the Dice term undefined.
    loss_fn = DiceCELoss(sigmoid=True, batch=True, smooth_nr=1e-3, smooth_dr=1e-3)

    pool = [source(rng) for _ in range(plan.pool_size)]
    log.info(
        "%s: pool of %d volumes ready in %.1f s", name, len(pool), time.perf_counter() - started
    )
    losses: list[float] = []
    hard: dict[int, np.ndarray] = {}  # pool index -> flat indices of false positives
    bank: list[tuple[np.ndarray, np.ndarray]] = []  # false-positive patches (hu, mask)
    for step in range(plan.steps):
        if plan.refresh_every and step and step % plan.refresh_every == 0:
            j = int(rng.integers(len(pool)))
            pool[j] = source(rng)
            hard.pop(j, None)
        if plan.hard_fraction and plan.mine_every and step >= plan.steps // 10:
            if step % plan.mine_every == 0:
                j = int(rng.integers(len(pool)))
                found = _false_positives(net, pool[j], config, plan.mine_box, rng)
                if found.size:
                    hard[j] = found
                else:
                    hard.pop(j, None)
                if plan.hard_bank and found.size:
                    for _ in range(2):
                        patch = _crop(pool[j], plan.patch_zyx, rng, found)
                        if len(bank) < plan.hard_bank:
                            bank.append(patch)
                        else:
                            bank[int(rng.integers(len(bank)))] = patch
        xs, ys = [], []
        for _ in range(plan.batch):
            draw = rng.random()
            if bank and draw < plan.hard_fraction:
                hu, mask = bank[int(rng.integers(len(bank)))]
            else:
                if hard and draw < plan.hard_fraction:
                    j = list(hard)[int(rng.integers(len(hard)))]
                    sample, around = pool[j], hard[j]
                else:
                    sample = pool[int(rng.integers(len(pool)))]
                    positive = rng.random() < plan.positive_fraction and sample.mask.any()
                    around = np.flatnonzero(sample.mask) if positive else None
                hu, mask = _crop(sample, plan.patch_zyx, rng, around)
            hu, mask = _augment(hu, mask, plan, rng)
            xs.append(window_channels(torch.from_numpy(hu), config.windows))
            ys.append(torch.from_numpy(mask)[None].float())
        x, y = torch.stack(xs), torch.stack(ys)
        optimiser.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        optimiser.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if step % 50 == 0 or step == plan.steps - 1:
            recent = float(np.mean(losses[-50:]))
            log.info("%s: step %d/%d loss %.4f", name, step + 1, plan.steps, recent)

    out_dir.mkdir(parents=True, exist_ok=True)
    weights, config_path = out_dir / f"{name}.pt", out_dir / f"{name}.json"
    log_path = out_dir / f"{name}.train.json"
    net.eval()
    torch.save(net.state_dict(), weights)
    log.info("%s: %d pool volumes had false positives at the end", name, len(hard))
    config_path.write_text(config.to_json() + "\n")
    seconds = time.perf_counter() - started
    log_path.write_text(
        json.dumps(
            {
                "seed": seed,
                "plan": asdict(plan),
                "parameters": sum(p.numel() for p in net.parameters()),
                "seconds": round(seconds, 1),
                "loss_first_50": float(np.mean(losses[:50])) if losses else None,
                "loss_last_50": float(np.mean(losses[-50:])) if losses else None,
                "losses_every_10": [round(v, 4) for v in losses[::10]],
                **(extra_log or {}),
            },
            indent=2,
        )
        + "\n"
    )
    return TrainingResult(weights, config_path, log_path, losses, seconds)
