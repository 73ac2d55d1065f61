"""Attributions as a picture: a PNG heatmap over the input the network saw.

The input (white ink on black, as the model sees it) is drawn in grey; each pixel's attribution
is laid over it in red where it raised the target class's probability and in blue where it
lowered it, the opacity proportional to its size relative to the largest one. Each of the
28x28 cells becomes a ``scale`` x ``scale`` block of pixels (nearest neighbour: the cells stay
visible, no smoothing invents detail the model did not see).
"""

from __future__ import annotations

import io

import numpy as np
from numpy.typing import NDArray
from PIL import Image

PNG_MIMETYPE = "image/png"
#: 28x28 cells -> 280x280 pixels.
DEFAULT_SCALE = 10
#: RGB of the attributions that raise the target's probability, and of those that lower it.
POSITIVE = np.array([220, 30, 30], dtype=np.float32)
NEGATIVE = np.array([30, 90, 230], dtype=np.float32)
#: How bright the input's ink is under the colours (0-255): dim enough for the colours to read.
INK = 110.0


def heatmap(attributions: NDArray[np.floating], image: NDArray[np.floating]) -> NDArray[np.uint8]:
    """attributions (H, W) and the input (H, W) in [0, 1] -> RGB pixels (H, W, 3)."""
    grey = np.clip(image, 0, 1).astype(np.float32)[..., None] * INK  # (H, W, 1)
    largest = float(np.abs(attributions).max())
    strength = np.abs(attributions) / largest if largest > 0 else np.zeros_like(attributions)
    alpha = strength.astype(np.float32)[..., None]  # (H, W, 1) in [0, 1]
    colour = np.where(attributions[..., None] >= 0, POSITIVE, NEGATIVE)  # (H, W, 3)
    rgb = grey * (1 - alpha) + colour * alpha
    return np.rint(rgb).astype(np.uint8)


def heatmap_png(
    attributions: NDArray[np.floating], image: NDArray[np.floating], scale: int = DEFAULT_SCALE
) -> bytes:
    """The heatmap as PNG bytes, each cell ``scale`` pixels wide."""
    pixels = heatmap(attributions, image).repeat(scale, axis=0).repeat(scale, axis=1)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG", optimize=False)
    return out.getvalue()
