"""Pre-processing of the segmenter: resampling to the model grid and HU windows."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from models.segmenter import (
    SegmenterConfig,
    build_network,
    model_grid_shape,
    model_input,
    resample,
    window_channels,
)


def test_model_grid_shape_follows_physical_size() -> None:
    assert model_grid_shape((36, 512, 512), (5.0, 0.49, 0.49), (5.0, 1.5, 1.5)) == (36, 167, 167)
    assert model_grid_shape((160, 512, 512), (1.25, 0.49, 0.49), (5.0, 1.5, 1.5)) == (40, 167, 167)


def test_mixed_resampling_averages_shrinking_axes_and_interpolates_growing_ones() -> None:
    # 2.5 mm slices, 0.5 mm pixels onto a 1.5 mm grid: z grows, y and x shrink.
    rng = np.random.default_rng(0)
    noise = torch.from_numpy(rng.normal(0.0, 10.0, (20, 66, 66)).astype(np.float32))
    out = resample(noise[None, None], (33, 22, 22))[0, 0]
    assert tuple(out.shape) == (33, 22, 22)
    # 3 x 3 in-plane averaging divides the noise SD by 3 (interpolating between slices
    # lowers it a little more); plain trilinear picks every third pixel and keeps it.
    assert 2.0 < float(out.std()) < 3.6
    picked = torch.nn.functional.interpolate(
        noise[None, None], size=(33, 22, 22), mode="trilinear", align_corners=False
    )
    assert float(picked.std()) > 7.0
    flat = torch.full((1, 1, 20, 66, 66), 40.0)
    assert torch.allclose(resample(flat, (33, 22, 22)), torch.tensor(40.0))


def test_windows_scale_to_unit_range_per_channel() -> None:
    config = SegmenterConfig(kind="ich", spacing_zyx=(5, 1, 1), windows=((0, 100), (-100, 300)))
    hu = torch.tensor([[[-50.0, 50.0, 500.0]]])
    ch = window_channels(hu, config.windows)
    assert ch.shape == (2, 1, 1, 3)
    assert ch[0].flatten().tolist() == [0.0, 0.5, 1.0]
    assert ch[1].flatten().tolist() == pytest.approx([0.125, 0.375, 1.0])


def test_windowing_first_keeps_a_thin_layer_of_blood_against_bone() -> None:
    """1 mm pixels onto a 2 mm grid: a model voxel half inner table (1200 HU), half
    brain (35) or half blood (70). Averaged as HU both saturate the brain window; windowed
    first, the blood half still reads brighter than the brain half."""
    hu = torch.full((1, 4, 4), 35.0)
    hu[:, :, 0] = 1200.0  # bone in the first pixel column of both model voxels
    hu[:, 2:, 1] = 70.0  # blood against it in the lower model voxel only
    config = SegmenterConfig(kind="ich", spacing_zyx=(1, 2, 2), windows=((0, 100), (-100, 300)))
    spacing = (1.0, 1.0, 1.0)
    hu_first = model_input(hu, spacing, config)
    brain, blood = hu_first[0, 0, 0, 0, 0], hu_first[0, 0, 0, 1, 0]
    assert float(brain) == float(blood) == 1.0
    windowed = model_input(hu, spacing, replace(config, window_first=True))
    assert windowed.shape == hu_first.shape == (1, 2, 1, 2, 2)
    brain, blood = windowed[0, 0, 0, 0, 0], windowed[0, 0, 0, 1, 0]
    assert float(brain) == pytest.approx((1.0 + 0.35) / 2)
    assert float(blood) == pytest.approx((1.0 + 0.7) / 2)


def test_configs_without_the_window_order_read_as_hu_first() -> None:
    """Weights shipped before `window_first` existed keep their pre-processing."""
    config = SegmenterConfig(kind="ich", spacing_zyx=(5, 1, 1), windows=((0, 100),))
    raw = config.to_json().replace('"window_first": false,', "")
    assert "window_first" not in raw
    assert SegmenterConfig.from_json(raw).window_first is False


@pytest.mark.parametrize(
    ("shape", "spacing"),
    [((40, 48, 60), (0.625, 0.5, 0.7)), ((37, 20, 20), (1.0, 2.0, 2.0))],
    ids=["thin, shrinking in-plane", "growing in-plane"],
)
def test_window_first_a_slab_at_a_time_equals_windowing_the_whole_series(
    shape: tuple[int, int, int], spacing: tuple[float, float, float]
) -> None:
    """More slices than one slab (models.segmenter.WINDOW_SLAB), a ragged last slab."""
    rng = np.random.default_rng(1)
    hu = torch.from_numpy(rng.normal(60.0, 400.0, shape).astype(np.float32))
    config = SegmenterConfig(
        kind="ich", spacing_zyx=(5, 1.5, 1.5), windows=((0, 100), (-100, 300)), window_first=True
    )
    whole = resample(
        window_channels(hu, config.windows)[None],
        model_grid_shape(shape, spacing, config.spacing_zyx),
    )
    assert torch.allclose(model_input(hu, spacing, config), whole, atol=1e-6)


def test_configs_without_members_are_one_network_with_unprefixed_weights() -> None:
    """Weights shipped before ensembles (a plain UNet state dict) still load."""
    config = SegmenterConfig(kind="ich", spacing_zyx=(5, 1, 1), windows=((0, 100),))
    raw = config.to_json().replace('"members": 1,', "")
    assert "members" not in raw
    old = SegmenterConfig.from_json(raw)
    assert old.members == 1
    state = build_network(old).state_dict()
    assert not any(key.startswith("members.") for key in state)
    pair = build_network(replace(old, members=2)).state_dict()
    assert {key.split(".", 2)[2] for key in pair} == set(state)
