"""Uploaded images -> model inputs: ``training.images`` with the service's error for a large image.

The decoding and preprocessing are ``training/images.py``'s, the same function ``train --images``
reads its files with (one preprocessing, no train/serve skew); here an image over the pixel limit
becomes ``service.errors.ImageTooLarge``, which the API answers with 413.
"""

from __future__ import annotations

from numpy.typing import NDArray
from PIL import Image

from service.errors import ImageTooLarge
from training import images as core
from training.images import (
    ALLOWED_FORMATS,
    IMAGE_MIMETYPES,
    InvalidImage,
    grayscale,
    mnist_like,
    resize,
)

__all__ = [
    "ALLOWED_FORMATS",
    "IMAGE_MIMETYPES",
    "InvalidImage",
    "decode",
    "grayscale",
    "load_image",
    "mnist_like",
    "resize",
]


def load_image(
    data: bytes,
    size: tuple[int, int],
    style: str = "mnist",
    *,
    preprocess: bool = True,
    max_pixels: int = 4096 * 4096,
) -> NDArray:
    """``training.images.load_image``; over ``max_pixels``: ``ImageTooLarge`` (413)."""
    try:
        return core.load_image(data, size, style, preprocess=preprocess, max_pixels=max_pixels)
    except core.ImageTooLarge as exc:
        raise ImageTooLarge(str(exc)) from None


def decode(data: bytes, max_pixels: int, draft_side: int | None = None) -> Image.Image:
    """``training.images.decode``; over ``max_pixels``: ``ImageTooLarge`` (413)."""
    try:
        return core.decode(data, max_pixels, draft_side)
    except core.ImageTooLarge as exc:
        raise ImageTooLarge(str(exc)) from None
