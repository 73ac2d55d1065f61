"""Property tests for upload decoding and preprocessing: any bytes give a valid input or our error.

``service.images.load_image`` on any bytes returns an (H, W) float32 array in [0, 1], or raises
``InvalidImage`` (a 422 through the schemas) or ``ImageTooLarge`` (413). Hypothesis feeds it
arbitrary bytes behind each format's magic number, and real PNG/JPEG/GIF/BMP/WebP files made
by Pillow in every mode each format can hold, of random sizes and content, with transparency
and EXIF orientations, whole or truncated. Warnings are errors here, so a Pillow warning that
reaches the caller fails the test as an exception would.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis_profiles import examples
from PIL import Image

from service.errors import ImageTooLarge
from service.images import InvalidImage, load_image

MAGIC = [
    b"",
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"GIF89a",
    b"GIF87a",
    b"BM",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    b"RIFF\x00\x00\x00\x00WEBPVP8L",
]
GRIDS = [(28, 28), (7, 5)]  # the MNIST grid, and a model whose input_shape is another grid
#: Modes each format can hold (Pillow converts the rest on save, or refuses them).
MODES = {
    "PNG": ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"],
    "JPEG": ["L", "RGB", "CMYK"],
    "GIF": ["1", "L", "P", "RGB", "RGBA"],
    "BMP": ["1", "L", "P", "RGB"],
    "WEBP": ["L", "LA", "RGB", "RGBA"],
}


def outcome(
    data: bytes, grid: tuple[int, int], style: str, preprocess: bool, max_pixels: int = 4096 * 4096
) -> np.ndarray | None:
    """The array ``load_image`` returns, checked, or None if it raised one of our errors."""
    try:
        x = load_image(data, grid, style, preprocess=preprocess, max_pixels=max_pixels)
    except (InvalidImage, ImageTooLarge) as exc:
        assert str(exc) and "\n" not in str(exc)
        return None
    assert x.shape == grid and x.dtype == np.float32
    assert np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1
    return x


_options = dict(
    grid=st.sampled_from(GRIDS), style=st.sampled_from(["mnist", "fashion-mnist"]), preprocess=st.booleans()
)


@settings(max_examples=examples(200))
@given(magic=st.sampled_from(MAGIC), rest=st.binary(max_size=300), **_options)
def test_arbitrary_bytes(
    magic: bytes, rest: bytes, grid: tuple[int, int], style: str, preprocess: bool
) -> None:
    outcome(magic + rest, grid, style, preprocess)


# --- real images made by Pillow ---------------------------------------------------------------
@dataclass(frozen=True)
class Recipe:
    fmt: str
    mode: str
    width: int
    height: int
    content: str  # noise, blank, solid, stroke
    seed: int
    transparency: str  # none, index, bytes (PNG/GIF palette or colour key)
    orientation: int | None  # EXIF orientation tag, JPEG/WebP only

    def pixels(self) -> np.ndarray:
        """uint8 (H, W) content in 0..255 (scaled to the mode's range by ``image``)."""
        rng = np.random.default_rng(self.seed)
        shape = (self.height, self.width)
        if self.content == "noise":
            return rng.integers(0, 256, shape, dtype=np.uint8)
        if self.content == "blank":
            return np.zeros(shape, np.uint8)
        if self.content == "solid":
            return np.full(shape, rng.integers(0, 256), np.uint8)
        canvas = np.full(shape, 255, np.uint8)  # a dark stroke on white paper
        r0, c0 = rng.integers(0, self.height), rng.integers(0, self.width)
        canvas[r0 : r0 + max(1, self.height // 3), c0 : c0 + max(1, self.width // 8)] = 0
        return canvas

    def image(self) -> Image.Image:
        gray = self.pixels()
        base = Image.fromarray(gray, "L")
        if self.mode == "1":
            return base.convert("1")
        if self.mode == "L":
            return base
        if self.mode == "I;16":
            return Image.fromarray(gray.astype("<u2") * 257)  # mode I;16
        rgb = Image.merge("RGB", [base, base.transpose(Image.Transpose.FLIP_LEFT_RIGHT), base])
        if self.mode in ("LA", "RGBA"):
            alpha = Image.fromarray(
                np.random.default_rng(self.seed + 1).integers(0, 256, gray.shape, dtype=np.uint8), "L"
            )
            if self.content != "noise":  # opaque ink, transparent paper: a typical canvas export
                alpha = Image.fromarray(255 - gray, "L")
            return (
                Image.merge("LA", [base, alpha])
                if self.mode == "LA"
                else Image.merge("RGBA", [*rgb.split(), alpha])
            )
        if self.mode == "P":
            return rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        return rgb.convert(self.mode)  # RGB, CMYK

    def encode(self) -> bytes:
        image = self.image()
        args: dict[str, object] = {}
        if self.transparency != "none" and self.fmt in ("PNG", "GIF") and image.mode in ("P", "L"):
            if self.transparency == "index" or self.fmt == "GIF":
                args["transparency"] = 0
            elif image.mode == "P":  # one alpha byte per palette entry (PNG tRNS)
                args["transparency"] = bytes(range(0, 256, 16))
        elif self.transparency != "none" and self.fmt == "PNG" and image.mode == "RGB":
            args["transparency"] = (255, 255, 255)  # a colour key: white is transparent
        if self.orientation is not None and self.fmt in ("JPEG", "WEBP"):
            exif = Image.Exif()
            exif[0x0112] = self.orientation
            args["exif"] = exif.tobytes()
        buffer = io.BytesIO()
        image.save(buffer, format=self.fmt, **args)
        return buffer.getvalue()


_dims = st.integers(1, 80) | st.sampled_from([1, 2, 3, 28, 300])


@st.composite
def recipes(draw: st.DrawFn) -> Recipe:
    fmt = draw(st.sampled_from(sorted(MODES)))
    return Recipe(
        fmt=fmt,
        mode=draw(st.sampled_from(MODES[fmt])),
        width=draw(_dims),
        height=draw(_dims),
        content=draw(st.sampled_from(["noise", "blank", "solid", "stroke", "stroke"])),
        seed=draw(st.integers(0, 2**16)),
        transparency=draw(st.sampled_from(["none", "none", "index", "bytes"])),
        orientation=draw(st.none() | st.integers(0, 9) | st.just(65535)),
    )


def pillow_decodes(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception:
        return False
    return True


@settings(max_examples=examples(250))
@given(recipe=recipes(), cut=st.none() | st.floats(0, 1, exclude_max=True), **_options)
def test_real_images_whole_or_truncated(
    recipe: Recipe, cut: float | None, grid: tuple[int, int], style: str, preprocess: bool
) -> None:
    """A whole image that Pillow itself decodes always gives an input; a cut one, either."""
    data = recipe.encode()
    if cut is not None:
        data = data[: int(len(data) * cut)]
    x = outcome(data, grid, style, preprocess)
    if cut is None and pillow_decodes(data):
        assert x is not None


@settings(max_examples=examples(30))
@given(recipe=recipes(), **_options)
def test_over_the_pixel_limit_is_image_too_large(
    recipe: Recipe, grid: tuple[int, int], style: str, preprocess: bool
) -> None:
    """The pixel limit is checked on the header's size, whatever the format."""
    assume(recipe.width * recipe.height > 1)
    data = recipe.encode()
    with pytest.raises(ImageTooLarge):
        load_image(data, grid, style, preprocess=preprocess, max_pixels=recipe.width * recipe.height - 1)
