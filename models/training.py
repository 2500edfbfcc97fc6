"""Training loop shared by both models: patches from a pool of synthetic volumes on the
model grid, Dice + BCE loss, Adam, reproducible by seed.

A sample source renders one (HU volume, lesion mask) pair already on the model grid (the
same `Segmenter.prepare` resampling the inference path uses), so what the network sees in
training is what it sees on a real series. Sample i is drawn from its own seed
([seed, i]), so the data are the same whether it is rendered here or in `workers` worker
processes; the network runs on `device` (the CPU by default; a CUDA device when there is
one makes long plans practical, where rendering becomes the bound).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceCELoss
from scipy import ndimage

from models.segmenter import (
    SegmenterConfig,
    build_network,
    model_grid_shape,
    model_input,
    resample,
    window_channels,
)
from pacsflow.errors import InvalidInputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """One training volume on the model grid."""

    hu: np.ndarray  # float32 or int16 (compact pools) HU, (z, y, x)
    mask: np.ndarray  # bool (z, y, x)
    # (C, z, y, x) float16 network input, for configs that window before resampling
    # (`SegmenterConfig.window_first`); None: the input is windowed from `hu`.
    inputs: np.ndarray | None = None


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
    inputs = None
    if config.window_first:
        inputs = model_input(t[0, 0], spacing_zyx, config)[0].numpy().astype(np.float16)
    return Sample(
        hu=resample(t, shape)[0, 0].numpy(),
        mask=(resample(m, shape)[0, 0] >= label_fraction).numpy(),
        inputs=inputs,
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
    workers: int = 0  # > 0: render samples in that many processes, ahead of need
    device: str = "cpu"  # where the network trains ("cuda" on a GPU machine)
    # Negative patches centred on lesion-density tissue that is not lesion (dura, venous
    # sinuses, skull-base soft tissue, bone edges in partial volume): the mimics that
    # hard-negative mining alone finds too rarely.
    mimic_fraction: float = 0.0
    mimic_hu: tuple[float, float] = (50.0, 90.0)  # smoothed HU range of a mimic voxel
    # > 0: train for this long instead of a fixed number of steps (at most `steps`). The
    # one-cycle schedule then runs on elapsed time rather than steps, and pool volumes are
    # replaced as fast as the workers render them, so the data depend on timing: a
    # budgeted run is not reproducible by seed.
    time_budget_s: float = 0.0
    bf16: bool = False  # autocast to bfloat16 on a CUDA device


@dataclass(frozen=True)
class TrainingResult:
    weights: Path
    config: Path
    log: Path
    losses: list[float]
    seconds: float


def _render(source: SampleSource, seed: int, index: int) -> Sample:
    return source(np.random.default_rng([seed, index]))


def _one_thread() -> None:
    torch.set_num_threads(1)  # a worker per core: no oversubscription


class SampleFeed:
    """Samples 0, 1, 2, ... of a source, sample i from seed [seed, i]: rendered in this
    process, or by `workers` processes kept `ahead` samples in front of the trainer."""

    def __init__(self, source: SampleSource, seed: int, workers: int = 0, ahead: int = 0) -> None:
        self._source, self._seed, self._next = source, seed, 0
        self._ahead = max(ahead, 2 * workers)
        self._pending: deque[Future[Sample]] = deque()
        self._pool = (
            ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_one_thread)
            if workers > 0
            else None
        )

    def take(self) -> Sample:
        if self._pool is None:
            self._next += 1
            return _render(self._source, self._seed, self._next - 1)
        self._submit_ahead()
        return self._pending.popleft().result()

    def ready(self) -> Sample | None:
        """The next sample if a worker has already rendered it, else None (without
        waiting; always None without workers, where nothing is rendered ahead)."""
        if self._pending and self._pending[0].done():
            return self.take()
        self._submit_ahead()
        return None

    def _submit_ahead(self) -> None:
        while self._pool is not None and len(self._pending) < self._ahead:
            self._pending.append(self._pool.submit(_render, self._source, self._seed, self._next))
            self._next += 1

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True)
class PoolEntry:
    sample: Sample
    lesion: np.ndarray  # flat indices of its lesion voxels (centres of positive patches)
    mimic: np.ndarray  # flat indices of lesion-density voxels away from any lesion

    @classmethod
    def of(cls, sample: Sample, plan: TrainingPlan) -> PoolEntry:
        lesion = np.flatnonzero(sample.mask)
        if not plan.mimic_fraction:
            return cls(sample, lesion, np.empty(0, dtype=np.int64))
        # Smoothed in-plane so that noise in parenchyma does not count as a mimic.
        smooth = ndimage.uniform_filter(np.asarray(sample.hu, dtype=np.float32), size=(1, 3, 3))
        lo, hi = plan.mimic_hu
        mimic = (smooth >= lo) & (smooth <= hi)
        if sample.mask.any():
            mimic &= ~ndimage.binary_dilation(sample.mask, iterations=2)
        return cls(sample, lesion, np.flatnonzero(mimic))


def _crop(
    sample: Sample,
    patch: tuple[int, int, int],
    rng: np.random.Generator,
    around: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """A patch of `patch` size, centred (give or take a quarter patch) on one of the flat
    voxel indices `around` when given, else anywhere; padded with the volume's lowest
    value where the volume is smaller. The patch is of HU (z, y, x), or of the sample's
    windowed inputs (C, z, y, x) where it has them."""
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
    mask = sample.mask[box]
    if sample.inputs is not None:
        x, lowest = sample.inputs[(slice(None), *box)], 0.0  # every window starts at 0
    else:
        x, lowest = sample.hu[box], float(sample.hu.min())
    if mask.shape != patch:
        pad = [(0, p - n) for p, n in zip(patch, mask.shape, strict=True)]
        x = np.pad(x, [(0, 0)] * (x.ndim - 3) + pad, constant_values=lowest)
        mask = np.pad(mask, pad)
    return x, mask


def _mirror(
    hu: np.ndarray, mask: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    if rng.random() < 0.5:  # left-right mirror: both sides equally likely
        hu, mask = hu[..., ::-1], mask[..., ::-1]
    if rng.random() < 0.5:  # anterior-posterior mirror (local texture, not anatomy)
        hu, mask = hu[..., ::-1, :], mask[..., ::-1, :]
    return np.ascontiguousarray(hu, dtype=np.float32), np.ascontiguousarray(mask)


def _jitter(hu: torch.Tensor, plan: TrainingPlan, gen: torch.Generator) -> torch.Tensor:
    """(B, z, y, x) HU patches: a global HU shift per patch (scanner calibration) and extra
    Gaussian noise of an SD drawn per patch in [0, noise_jitter] HU (none under 0.2 HU);
    drawn where the patches are, so a GPU trainer does not wait on the CPU for noise."""
    n = hu.shape[0]
    shape = (n, 1, 1, 1)
    shift = (torch.rand(shape, generator=gen, device=hu.device) * 2 - 1) * plan.hu_jitter
    sd = torch.rand(shape, generator=gen, device=hu.device) * plan.noise_jitter
    sd = torch.where(sd > 0.2, sd, torch.zeros_like(sd))
    noise = torch.randn(hu.shape, generator=gen, device=hu.device)
    return hu + shift + noise * sd


def _patch_inputs(
    x: torch.Tensor, config: SegmenterConfig, plan: TrainingPlan, gen: torch.Generator
) -> torch.Tensor:
    """A batch of patches -> (B, C, z, y, x) network input with the HU jitter applied:
    HU patches (B, z, y, x) are jittered, then windowed; windowed patches (B, C, z, y, x)
    get the same jitter in each window's units (one noise field for all channels, as a
    noisy scan has one image) and are clamped to the window again."""
    if x.ndim == 4:
        return window_channels(_jitter(x, plan, gen), config.windows).transpose(0, 1)
    zero = torch.zeros((x.shape[0], *x.shape[2:]), device=x.device)
    delta = _jitter(zero, plan, gen)[:, None]  # (B, 1, z, y, x) HU
    width = torch.tensor([hi - lo for lo, hi in config.windows], device=x.device)
    return (x.float() + delta / width.view(1, -1, 1, 1, 1)).clamp_(0.0, 1.0)


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
    device = next(net.parameters()).device
    if sample.inputs is not None:
        x = torch.from_numpy(np.asarray(sample.inputs[(slice(None), *box)], dtype=np.float32))
        x = x.to(device)[None]
    else:
        hu = torch.from_numpy(np.asarray(sample.hu[box], dtype=np.float32)).to(device)
        x = window_channels(hu, config.windows)[None]
    multiple = 2 ** len(config.strides)
    pads = [(-n) % multiple for n in x.shape[-3:]]
    padded = torch.nn.functional.pad(x, (0, pads[2], 0, pads[1], 0, pads[0]), mode="replicate")
    z, y, xx = x.shape[-3:]
    net.eval()  # running statistics, as at inference; and leave them untouched
    found = (net(padded)[0, 0, :z, :y, :xx] > 0).cpu().numpy()
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
    `<name>.json` (config) and `<name>.train.json` (plan, seed, loss curve) to out_dir.
    One network: an ensemble's members are trained one by one (`train_members`)."""
    if config.members != 1:
        raise InvalidInputError(
            f"{name}: train_segmenter trains one network, the config has {config.members} "
            "members (use train_members)"
        )
    started = time.perf_counter()
    torch.set_num_threads(plan.threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    device = torch.device(plan.device)
    gen = torch.Generator(device=device).manual_seed(seed)
    net = build_network(config).to(device)
    net.train()
    optimiser = torch.optim.Adam(net.parameters(), lr=plan.learning_rate)
    # Dice over the whole batch: patches without lesion do not make the Dice term undefined.
    loss_fn = DiceCELoss(sigmoid=True, batch=True, smooth_nr=1e-3, smooth_dr=1e-3)

    feed = SampleFeed(source, seed, plan.workers, ahead=plan.pool_size)
    try:
        pool = [PoolEntry.of(feed.take(), plan) for _ in range(plan.pool_size)]
        log.info(
            "%s: pool of %d volumes ready in %.1f s on %s",
            name,
            len(pool),
            time.perf_counter() - started,
            device,
        )
        losses, hard = _train_steps(
            net, pool, feed, config, plan, rng, gen, optimiser, loss_fn, name
        )
    finally:
        feed.close()

    out_dir.mkdir(parents=True, exist_ok=True)
    weights, config_path = out_dir / f"{name}.pt", out_dir / f"{name}.json"
    log_path = out_dir / f"{name}.train.json"
    net.eval()
    torch.save(net.to("cpu").state_dict(), weights)
    log.info("%s: %d pool volumes had false positives at the end", name, hard)
    config_path.write_text(config.to_json() + "\n")
    seconds = time.perf_counter() - started
    log_path.write_text(
        json.dumps(
            {
                "seed": seed,
                "plan": asdict(plan),
                "parameters": sum(p.numel() for p in net.parameters()),
                "device_name": _device_name(device),
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


def train_members(
    config: SegmenterConfig,
    source: SampleSource,
    plan: TrainingPlan,
    out_dir: Path,
    *,
    name: str,
    seed: int,
    extra_log: dict[str, object] | None = None,
) -> TrainingResult:
    """`train_segmenter`, for each of `config.members` networks in turn (seeds `seed`,
    `seed + 1`, ...), written as one model (`write_members`). One member is plain
    `train_segmenter`.

    Finished members wait in `<out_dir>/<name>.members/` until all are done: a run that
    stops part-way (a crash, a reboot) resumes with the next member instead of
    retraining the finished ones. A member is reused only when its seed, plan, config and
    extra log entries are those asked for now. The code and the sample source are not
    compared: after changing them, delete the folder. It is removed once the model is
    written."""
    if config.members == 1:
        return train_segmenter(
            config, source, plan, out_dir, name=name, seed=seed, extra_log=extra_log
        )
    single = replace(config, members=1)
    parts = out_dir / f"{name}.members"
    results = []
    for k in range(config.members):
        member = f"{name}-seed{seed + k}"
        files = [parts / f"{member}{suffix}" for suffix in (".pt", ".json", ".train.json")]
        if _finished_member(files, single, plan, seed + k, extra_log):
            log.warning("%s: reusing the finished member in %s", member, parts)
            results.append((files[0], files[2]))
            continue
        for stale in files:  # a log left from another plan must not vouch for new weights
            stale.unlink(missing_ok=True)
        r = train_segmenter(
            single, source, plan, parts, name=member, seed=seed + k, extra_log=extra_log
        )
        results.append((r.weights, r.log))
    result = write_members(config, results, out_dir, name=name)
    shutil.rmtree(parts, ignore_errors=True)
    return result


def _finished_member(
    files: list[Path],
    config: SegmenterConfig,
    plan: TrainingPlan,
    seed: int,
    extra_log: dict[str, object] | None,
) -> bool:
    """Whether a member's (weights, config, log) were trained exactly as asked.
    `train_segmenter` writes the log after the weights, and stale files are removed
    before a member is trained, so a log means the weights are complete."""
    _, config_path, log_path = files
    if not all(f.is_file() for f in files):
        return False
    try:
        logged = json.loads(log_path.read_text())
        same_config = SegmenterConfig.from_json(config_path.read_text()) == config
    except (ValueError, TypeError, KeyError) as exc:  # cut off or from older code
        log.warning("%s: unreadable (%s); training it again", log_path, exc)
        return False
    wanted = {"seed": seed, "plan": asdict(plan), **(extra_log or {})}
    as_logged = json.loads(json.dumps(wanted))  # tuples read back as lists
    return same_config and all(logged.get(k) == v for k, v in as_logged.items())


def write_members(
    config: SegmenterConfig, members: list[tuple[Path, Path]], out_dir: Path, *, name: str
) -> TrainingResult:
    """Single networks' (weights, training log) -> one model of `len(members)` members:
    `<name>.pt` (member k's tensors under `members.<k>.`), `<name>.json` and a
    `<name>.train.json` that keeps every member's log."""
    if len(members) != config.members:
        raise ValueError(f"{name}: the config wants {config.members} members, got {len(members)}")
    state: dict[str, torch.Tensor] = {}
    logs = []
    for k, (weights, log_path) in enumerate(members):
        for key, tensor in torch.load(weights, map_location="cpu", weights_only=True).items():
            state[f"members.{k}.{key}"] = tensor
        logs.append(json.loads(log_path.read_text()))
    build_network(config).load_state_dict(state)  # refuse members of another shape
    out_dir.mkdir(parents=True, exist_ok=True)
    weights, config_path = out_dir / f"{name}.pt", out_dir / f"{name}.json"
    log_path = out_dir / f"{name}.train.json"
    torch.save(state, weights)
    config_path.write_text(config.to_json() + "\n")
    seconds = sum(float(m["seconds"]) for m in logs)
    summary = {
        "seed": logs[0]["seed"],
        "member_seeds": [m["seed"] for m in logs],
        "plan": logs[0]["plan"],
        "parameters": sum(int(m["parameters"]) for m in logs),
        "device_name": logs[0].get("device_name"),
        "seconds": round(seconds, 1),
        "loss_first_50": float(np.mean([m["loss_first_50"] for m in logs])),
        "loss_last_50": float(np.mean([m["loss_last_50"] for m in logs])),
        "members": logs,
    }
    log_path.write_text(json.dumps(summary, indent=2) + "\n")
    losses = [v for m in logs for v in m["losses_every_10"]]  # what the logs kept, in turn
    return TrainingResult(weights, config_path, log_path, losses, seconds)


def _train_steps(
    net: torch.nn.Module,
    pool: list[PoolEntry],
    feed: SampleFeed,
    config: SegmenterConfig,
    plan: TrainingPlan,
    rng: np.random.Generator,
    gen: torch.Generator,
    optimiser: torch.optim.Optimizer,
    loss_fn: torch.nn.Module,
    name: str,
) -> tuple[list[float], int]:
    """The optimisation steps; returns the losses and how many pool volumes still had
    false positives at the end."""
    device = next(net.parameters()).device
    losses: list[float] = []
    unread: list[torch.Tensor] = []
    hard: dict[int, np.ndarray] = {}  # pool index -> flat indices of false positives
    bank: list[tuple[np.ndarray, np.ndarray]] = []  # false-positive patches (hu, mask)
    budgeted = plan.time_budget_s > 0
    total = plan.steps
    scheduler = None if budgeted else _one_cycle(optimiser, plan, total)
    autocast = plan.bf16 and device.type == "cuda"
    started = time.perf_counter()
    step = 0
    while step < total:
        done = step / total
        if budgeted:
            done = max(done, (time.perf_counter() - started) / plan.time_budget_s)
            if done >= 1.0:
                break
            set_one_cycle(optimiser, plan, done)
        if budgeted and plan.workers:  # as fast as the workers render, never waiting
            fresh = feed.ready()
            if fresh is not None:
                j = int(rng.integers(len(pool)))
                pool[j] = PoolEntry.of(fresh, plan)
                hard.pop(j, None)
        elif plan.refresh_every and step and step % plan.refresh_every == 0:
            j = int(rng.integers(len(pool)))
            pool[j] = PoolEntry.of(feed.take(), plan)
            hard.pop(j, None)
        if plan.hard_fraction and plan.mine_every and done >= 0.1:
            if step % plan.mine_every == 0:
                j = int(rng.integers(len(pool)))
                found = _false_positives(net, pool[j].sample, config, plan.mine_box, rng)
                if found.size:
                    hard[j] = found
                else:
                    hard.pop(j, None)
                if plan.hard_bank and found.size:
                    for _ in range(2):
                        patch = _crop(pool[j].sample, plan.patch_zyx, rng, found)
                        if len(bank) < plan.hard_bank:
                            bank.append(patch)
                        else:
                            bank[int(rng.integers(len(bank)))] = patch
        hus, masks = [], []
        for _ in range(plan.batch):
            draw = rng.random()
            if bank and draw < plan.hard_fraction:
                hu, mask = bank[int(rng.integers(len(bank)))]
            else:
                if hard and draw < plan.hard_fraction:
                    j = list(hard)[int(rng.integers(len(hard)))]
                    sample, around = pool[j].sample, hard[j]
                else:
                    entry = pool[int(rng.integers(len(pool)))]
                    sample = entry.sample
                    mimic = draw < plan.hard_fraction + plan.mimic_fraction
                    positive = rng.random() < plan.positive_fraction and entry.lesion.size > 0
                    if mimic and entry.mimic.size:
                        around = entry.mimic
                    else:
                        around = entry.lesion if positive else None
                hu, mask = _crop(sample, plan.patch_zyx, rng, around)
            hu, mask = _mirror(hu, mask, rng)
            hus.append(hu)
            masks.append(mask)
        x = _patch_inputs(torch.from_numpy(np.stack(hus)).to(device), config, plan, gen)
        y = torch.from_numpy(np.stack(masks)).to(device)[:, None].float()
        optimiser.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = loss_fn(net(x), y)
        loss.backward()
        optimiser.step()
        if scheduler is not None:
            scheduler.step()
        unread.append(loss.detach())
        if step % 50 == 0 or step == total - 1 or (budgeted and step % 500 == 0):
            # Read back in groups: a read per step would make a GPU wait for the CPU.
            losses.extend(torch.stack(unread).float().tolist())
            unread.clear()
            recent = float(np.mean(losses[-50:]))
            log.info("%s: step %d/%d loss %.4f", name, step + 1, total, recent)
        step += 1
    if budgeted:
        log.info("%s: %d steps in %.0f s", name, step, time.perf_counter() - started)
    losses.extend(torch.stack(unread).float().tolist() if unread else [])
    return losses, len(hard)


def set_one_cycle(optimiser: torch.optim.Optimizer, plan: TrainingPlan, done: float) -> None:
    """OneCycleLR's schedule (cosine, 15% warm-up, Adam's beta1 cycled 0.95 -> 0.85 -> 0.95)
    at the fraction `done` of training, for runs whose length is a time, not a step count."""
    peak, warm = plan.learning_rate, 0.15
    start, end = peak / 25.0, peak / 25.0 / 1e4
    if done < warm:
        t, lo, hi = done / warm, start, peak
    else:
        t, lo, hi = (done - warm) / (1.0 - warm), peak, end
    cos = (1.0 + math.cos(math.pi * t)) / 2.0  # 1 -> 0
    lr = hi + (lo - hi) * cos
    beta1 = (0.85 + (0.95 - 0.85) * cos) if done < warm else (0.95 + (0.85 - 0.95) * cos)
    for group in optimiser.param_groups:
        group["lr"] = lr
        group["betas"] = (beta1, group["betas"][1])


def _one_cycle(
    optimiser: torch.optim.Optimizer, plan: TrainingPlan, steps: int
) -> torch.optim.lr_scheduler.OneCycleLR:
    return torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=plan.learning_rate, total_steps=max(1, steps), pct_start=0.15
    )


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return "cpu"


def add_plan_arguments(parser: argparse.ArgumentParser, plan: TrainingPlan) -> None:
    """The options of a training plan that a retrain may change from the command line."""
    parser.add_argument("--steps", type=int, default=plan.steps)
    parser.add_argument("--batch", type=int, default=plan.batch)
    parser.add_argument("--pool-size", type=int, default=plan.pool_size)
    parser.add_argument(
        "--refresh-every",
        type=int,
        default=plan.refresh_every,
        help="replace one pool volume by a fresh one every n steps",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=plan.workers,
        help="render volumes in that many processes (0: in this one)",
    )
    parser.add_argument(
        "--device", default=plan.device, help="where the network trains: cpu (default) or cuda"
    )


def plan_from_arguments(args: argparse.Namespace, plan: TrainingPlan) -> TrainingPlan:
    return replace(
        plan,
        steps=args.steps,
        batch=args.batch,
        pool_size=args.pool_size,
        refresh_every=args.refresh_every,
        workers=args.workers,
        device=args.device,
    )


def training_main(
    argv: list[str] | None,
    *,
    description: str | None,
    plan: TrainingPlan,
    train: Callable[..., dict[str, Path]],
) -> int:
    """The command line of a model's training module (`python -m models.<key>.train`):
    output folder, seed, acquisition matrix and the plan's options; `train` is the
    module's own, with its data source and config."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=Path("models/weights"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--matrix", type=int, default=256, help="acquisition matrix")
    add_plan_arguments(parser, plan)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    chosen = plan_from_arguments(args, plan)
    paths = train(
        args.out,
        seed=args.seed,
        steps=chosen.steps,
        pool_size=chosen.pool_size,
        batch=chosen.batch,
        matrix=args.matrix,
        plan=chosen,
    )
    for key, path in paths.items():
        print(f"{key}: {path}")
    return 0
