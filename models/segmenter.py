"""A 3D segmentation network with its pre-processing, shared by both pathways' models.

The configuration travels with the weights (config JSON beside the state dict), so a
registered version carries everything needed to run it: network shape, model spacing,
HU windows (one input channel each) and the decision threshold.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import UNet


@dataclass(frozen=True)
class SegmenterConfig:
    kind: str  # "ich" | "nodule"
    spacing_zyx: tuple[float, float, float]  # model grid, mm
    windows: tuple[tuple[float, float], ...]  # HU (low, high) per input channel
    channels: tuple[int, ...] = (8, 16, 32, 64)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 1
    # "batch" for networks trained on patches and run on whole volumes: instance norm
    # would normalise a 64x64 patch and a whole head with different statistics.
    norm: str = "instance"
    threshold: float = 0.5
    # Window on the source grid, then resample each channel (True), rather than resample
    # HU and window on the model grid. Averaging HU lets bone swamp a voxel: a 1 mm layer
    # of blood against the inner table averages to the same saturated value as brain
    # against bone. Windowed first, the blood still raises the averaged channel.
    window_first: bool = False
    # > 1: that many networks of this shape, trained alike from consecutive seeds
    # (models.training.train_members); the probability map is the mean of theirs.
    members: int = 1
    extra: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_json(cls, text: str) -> SegmenterConfig:
        raw = json.loads(text)
        raw["spacing_zyx"] = tuple(raw["spacing_zyx"])
        raw["windows"] = tuple(tuple(w) for w in raw["windows"])
        raw["channels"] = tuple(raw["channels"])
        raw["strides"] = tuple(raw["strides"])
        return cls(**raw)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def build_network(config: SegmenterConfig) -> torch.nn.Module:
    if config.members > 1:
        return MeanProbability([_unet(config) for _ in range(config.members)])
    return _unet(config)


class MeanProbability(torch.nn.Module):
    """Members' mean probability, given back as a logit so that every caller treats the
    ensemble as one network (Segmenter applies the sigmoid)."""

    def __init__(self, members: list[torch.nn.Module]) -> None:
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.stack([m(x).sigmoid() for m in self.members]).mean(dim=0)
        return torch.logit(mean, eps=1e-7)


def _unet(config: SegmenterConfig) -> torch.nn.Module:
    return UNet(
        spatial_dims=3,
        in_channels=len(config.windows),
        out_channels=1,
        channels=config.channels,
        strides=config.strides,
        num_res_units=config.num_res_units,
        norm=config.norm,
    )


def window_channels(hu: torch.Tensor, windows: tuple[tuple[float, float], ...]) -> torch.Tensor:
    """(z, y, x) HU -> (C, z, y, x), each channel one HU window scaled to [0, 1]."""
    return torch.stack([((hu - lo) / (hi - lo)).clamp_(0.0, 1.0) for lo, hi in windows])


def resample(x: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Resample a (N, C, z, y, x) tensor to a new grid: area averaging along every axis
    that shrinks (no aliasing, noise averaged as a thicker slice would), then trilinear
    along the axes that grow (e.g. 2.5 mm slices onto a 1.5 mm grid)."""
    current = tuple(x.shape[-3:])
    if current == shape:
        return x
    shrunk = tuple(min(t, s) for t, s in zip(shape, current, strict=True))
    if shrunk != current:
        x = F.interpolate(x, size=shrunk, mode="area")
    if shrunk != shape:
        x = F.interpolate(x, size=shape, mode="trilinear", align_corners=False)
    return x


def model_input(
    hu: torch.Tensor, spacing_zyx: tuple[float, float, float], config: SegmenterConfig
) -> torch.Tensor:
    """(z, y, x) HU on the source grid -> (1, C, z, y, x) windowed channels on the model
    grid, in the order `config.window_first` says (training and inference share it)."""
    shape = model_grid_shape(tuple(hu.shape), spacing_zyx, config.spacing_zyx)  # type: ignore[arg-type]
    if config.window_first:
        return resample(_windowed_in_plane(hu, config.windows, shape[1:])[None], shape)
    return window_channels(resample(hu[None, None], shape)[0, 0], config.windows)[None]


WINDOW_SLAB = 16  # slices windowed at once: keeps a 512x512x300 series to ~30 MB a slab


def _windowed_in_plane(
    hu: torch.Tensor, windows: tuple[tuple[float, float], ...], plane: tuple[int, ...]
) -> torch.Tensor:
    """(z, y, x) HU -> (C, z, y', x') windowed channels, area-averaged in-plane to the
    model grid where it is coarser, a slab of slices at a time, so that every channel of
    a thin series is never held at full resolution (C x 4 bytes per source voxel). The
    same as windowing it all and averaging once: a box average is the mean along z of
    the in-plane means, and resample's later pass along z takes that mean."""
    target = tuple(min(t, s) for t, s in zip(plane, hu.shape[1:], strict=True))
    slabs = []
    for z0 in range(0, hu.shape[0], WINDOW_SLAB):
        slab = window_channels(hu[z0 : z0 + WINDOW_SLAB], windows)  # (C, slab, y, x)
        if target != tuple(slab.shape[-2:]):
            slab = F.interpolate(slab, size=target, mode="area")  # 2D: slices as channels
        slabs.append(slab)
    return torch.cat(slabs, dim=1)


def model_grid_shape(
    shape_zyx: tuple[int, int, int],
    spacing_zyx: tuple[float, float, float],
    model_spacing: tuple[float, float, float],
) -> tuple[int, int, int]:
    return tuple(  # type: ignore[return-value]
        max(1, round(n * s / m))
        for n, s, m in zip(shape_zyx, spacing_zyx, model_spacing, strict=True)
    )


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int, int]]:
    z, y, xx = x.shape[-3:]
    pads = [(-n) % multiple for n in (z, y, xx)]
    if any(pads):
        x = F.pad(x, (0, pads[2], 0, pads[1], 0, pads[0]), mode="replicate")
    return x, (z, y, xx)


class Segmenter:
    """Network + config; `probability` maps a HU volume to a probability on its own grid."""

    def __init__(self, config: SegmenterConfig, network: torch.nn.Module) -> None:
        self.config = config
        self.network = network.eval()

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def to(self, device: str | torch.device) -> Segmenter:
        """Move the network to `device` (inputs follow it; outputs come back as numpy)."""
        self.network.to(device)
        return self

    @classmethod
    def from_files(cls, weights: Path, config: Path) -> Segmenter:
        cfg = SegmenterConfig.from_json(Path(config).read_text())
        net = build_network(cfg)
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        return cls(cfg, net)

    def prepare(self, hu: np.ndarray, spacing_zyx: tuple[float, float, float]) -> torch.Tensor:
        """HU volume on its own grid -> (1, C, z, y, x) network input on the model grid."""
        t = torch.from_numpy(np.ascontiguousarray(hu, dtype=np.float32)).to(self.device)
        return model_input(t, spacing_zyx, self.config)

    @torch.inference_mode()
    def probability_on_model_grid(self, x: torch.Tensor) -> torch.Tensor:
        multiple = 2 ** len(self.config.strides)
        padded, (z, y, xx) = _pad_to_multiple(x, multiple)
        logits = self.network(padded)[..., :z, :y, :xx]
        return torch.sigmoid(logits)

    @torch.inference_mode()
    def probability(self, hu: np.ndarray, spacing_zyx: tuple[float, float, float]) -> np.ndarray:
        """Probability of the target class for each voxel of the source grid (float32)."""
        prob = self.probability_on_model_grid(self.prepare(hu, spacing_zyx))
        back = F.interpolate(prob, size=tuple(hu.shape), mode="trilinear", align_corners=False)
        return back[0, 0].cpu().numpy()
