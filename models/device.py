"""Where a model runs: the CUDA device when the process asks for it and one is present,
else the CPU (the default everywhere, and the fallback of a GPU runner without a GPU)."""

from __future__ import annotations

import torch


def inference_device(prefer_cuda: bool) -> str:
    """The device name: "cuda" when `prefer_cuda` and torch sees a CUDA device, else "cpu"."""
    return "cuda" if prefer_cuda and torch.cuda.is_available() else "cpu"
