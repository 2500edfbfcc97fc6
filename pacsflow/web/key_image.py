"""The case page's key image: one CT slice in a brain window with the finding outlined in red."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# Brain window (level 40 HU, width 80 HU): grey and white matter and fresh blood separate.
BRAIN_WINDOW = (40.0, 80.0)
OUTLINE_RGB = (255, 32, 32)
MIN_DISPLAY_SIZE = 512  # small matrices are enlarged (nearest neighbour, no smoothing)


def window(hu: np.ndarray, level: float, width: float) -> np.ndarray:
    """HU to 8-bit grey: level - width/2 is black, level + width/2 is white."""
    low = level - width / 2.0
    scaled = (hu.astype(np.float32) - low) / width
    return (np.clip(scaled, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of the mask with a 4-neighbour outside it (the edge, one pixel thick)."""
    inside = mask.astype(bool)
    padded = np.pad(inside, 1, constant_values=False)
    all_neighbours_inside = (
        padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    )
    return inside & ~all_neighbours_inside


def render_key_image(
    hu_slice: np.ndarray,
    mask_slice: np.ndarray | None,
    *,
    level: float = BRAIN_WINDOW[0],
    width: float = BRAIN_WINDOW[1],
) -> bytes:
    """A PNG of the slice (rows x columns, HU) with the mask's outline drawn in red."""
    if hu_slice.ndim != 2:
        raise ValueError(f"hu_slice must be 2-D (rows, columns), got shape {hu_slice.shape}")
    if mask_slice is not None and mask_slice.shape != hu_slice.shape:
        raise ValueError(
            f"mask_slice shape {mask_slice.shape} differs from hu_slice shape {hu_slice.shape}"
        )
    grey = window(hu_slice, level, width)
    scale = max(1, -(-MIN_DISPLAY_SIZE // max(grey.shape)))  # ceil division
    if scale > 1:
        grey = np.kron(grey, np.ones((scale, scale), dtype=np.uint8))
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    if mask_slice is not None and mask_slice.any():
        mask = mask_slice.astype(bool)
        if scale > 1:
            mask = np.kron(mask, np.ones((scale, scale), dtype=bool))
        edge = outline(mask)
        # Thicken to about two display pixels so the outline reads at any zoom.
        thick = edge | np.roll(edge, 1, axis=0) | np.roll(edge, 1, axis=1)
        rgb[thick & mask] = OUTLINE_RGB
    buffer = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
