"""Helpers for the service tests: shared limits and real image bytes made with Pillow."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from training.datasets import DATASETS

DIGITS = [str(d) for d in range(10)]
#: The Fashion-MNIST classes, as the dataset catalogue names them (the catalogue's own test
#: checks that list against the data set's documentation).
FASHION_CLASSES = list(DATASETS["fashion-mnist"].class_names)
#: Small limits so the over-the-limit cases stay cheap (the gunicorn tests use the same).
TEST_MAX_BATCH = 16
TEST_MAX_REQUEST_BYTES = 128 * 1024


# --- real image bytes ---------------------------------------------------------------------
def png_bytes(image: Image.Image, fmt: str = "PNG", **save_args: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_args)
    return buffer.getvalue()


def drawn_digit(
    digit: str,
    size: int = 200,
    ink: int = 0,
    paper: int = 255,
    mode: str = "L",
    offset: tuple[int, int] = (0, 0),
) -> Image.Image:
    """A thick hand-drawn-style digit (0, 1 or 7) on a canvas, like a drawing app produces."""
    image = Image.new(mode, (size, size), paper if mode == "L" else (paper, paper, paper))
    draw = ImageDraw.Draw(image)
    fill = ink if mode == "L" else (ink, ink, ink)
    s, (dx, dy) = size / 200, offset
    width = round(14 * s)

    def pt(x: float, y: float) -> tuple[float, float]:
        return x * s + dx, y * s + dy

    if digit == "1":
        draw.line([pt(95, 40), pt(105, 160)], fill=fill, width=width)
    elif digit == "0":
        draw.ellipse([pt(60, 35), pt(140, 165)], outline=fill, width=width)
    elif digit == "7":
        draw.line([pt(55, 45), pt(145, 45), pt(90, 165)], fill=fill, width=width, joint="curve")
    else:
        raise ValueError(digit)
    return image


def sample_as_photo(
    digit: NDArray[np.uint8], size: int = 140, offset: tuple[int, int] = (30, 50)
) -> Image.Image:
    """A real MNIST digit as a user would photograph it: black ink on white, larger, off-centre."""
    ink = Image.fromarray(255 - digit).resize((size, size), Image.Resampling.BICUBIC)
    canvas = Image.new("L", (size + 100, size + 100), 255)
    canvas.paste(ink, offset)
    return canvas


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + chunk(b"IEND", b"")
    )
