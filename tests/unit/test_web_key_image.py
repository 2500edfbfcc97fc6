"""The key image: brain window, red outline of the mask, enlarged without smoothing."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pacsflow.web.key_image import OUTLINE_RGB, outline, render_key_image, window
from pacsflow.web.sample import synthetic_head_slice


def decode(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.mode == "RGB"
    return np.asarray(image)


def test_brain_window_maps_0_to_black_and_80_to_white() -> None:
    grey = window(np.array([[-1000.0, 0.0, 40.0, 80.0, 1500.0]]), 40.0, 80.0)
    assert grey.tolist() == [[0, 0, 128, 255, 255]]


def test_outline_is_the_edge_of_the_mask() -> None:
    mask = np.zeros((7, 7), dtype=bool)
    mask[2:5, 2:5] = True
    edge = outline(mask)
    assert edge.sum() == 8 and not edge[3, 3] and edge[2, 2]


def test_render_draws_red_only_on_the_outline() -> None:
    hu, mask = synthetic_head_slice(96)
    rgb = decode(render_key_image(hu, mask))
    assert rgb.shape == (576, 576, 3)  # 96 x 6: at least 512 pixels, whole multiples
    red = np.all(rgb == OUTLINE_RGB, axis=2)
    big_mask = np.kron(mask, np.ones((6, 6), dtype=bool))
    assert red.any()
    assert not red[~big_mask].any()  # drawn on the lesion's edge, not beside it
    rows, cols = np.nonzero(big_mask)
    assert not red[int(rows.mean()), int(cols.mean())]  # an outline, not a filled blob
    assert red.sum() < 0.5 * big_mask.sum()
    grey = rgb[~red]
    assert np.all(grey[:, 0] == grey[:, 1]) and np.all(grey[:, 1] == grey[:, 2])


def test_render_without_mask_is_plain_grey() -> None:
    hu, _ = synthetic_head_slice(64)
    rgb = decode(render_key_image(hu, None))
    assert np.all(rgb[..., 0] == rgb[..., 2])


def test_shapes_are_checked() -> None:
    with pytest.raises(ValueError, match="2-D"):
        render_key_image(np.zeros((2, 3, 4)), None)
    with pytest.raises(ValueError, match="differs"):
        render_key_image(np.zeros((4, 4)), np.zeros((5, 4), dtype=bool))
