"""Decoding and MNIST-style preprocessing, on real image bytes made with Pillow."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image
from service_testkit import bomb_png, drawn_digit, png_bytes, sample_as_photo

from service.errors import ImageTooLarge
from service.images import InvalidImage, decode, grayscale, load_image, mnist_like

GRID = (28, 28)


def centre_of_mass(a: NDArray[np.floating]) -> tuple[float, float]:
    total = a.sum()
    return (
        float(a.sum(axis=1) @ np.arange(a.shape[0]) / total),
        float(a.sum(axis=0) @ np.arange(a.shape[1]) / total),
    )


def ink_box(a: NDArray[np.floating], level: float = 0.05) -> tuple[int, int]:
    rows = np.flatnonzero((a > level).any(axis=1))
    cols = np.flatnonzero((a > level).any(axis=0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


# --- preprocessing ------------------------------------------------------------------------
def test_a_black_one_on_white_becomes_a_centred_white_one_on_black() -> None:
    png = png_bytes(drawn_digit("1", size=200, offset=(-50, 20)))  # off-centre on purpose
    x = load_image(png, GRID)
    assert x.shape == GRID and x.dtype == np.float32
    assert x.min() >= 0 and x.max() == pytest.approx(1)
    assert x[0].max() == x[-1].max() == x[:, 0].max() == x[:, -1].max() == 0  # black border
    cy, cx = centre_of_mass(x)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5  # MNIST's centre of mass
    height, width = ink_box(x)
    assert height == 20 and width < 8  # tall and thin, fitted into the 20x20 box


@pytest.mark.parametrize("mode,ink,paper", [("L", 0, 255), ("L", 255, 0), ("RGB", 30, 220), ("L", 200, 40)])
def test_light_and_dark_backgrounds_give_the_same_digit(mode: str, ink: int, paper: int) -> None:
    reference = load_image(png_bytes(drawn_digit("7")), GRID)
    x = load_image(png_bytes(drawn_digit("7", ink=ink, paper=paper, mode=mode)), GRID)
    assert np.abs(x - reference).max() < 0.05


@pytest.mark.parametrize("ink", [0, 255], ids=["dark-ink", "light-ink"])
def test_transparent_background_is_flattened_onto_the_contrasting_colour(ink: int) -> None:
    digit = drawn_digit("7", ink=ink, paper=255 - ink)
    alpha = Image.eval(digit, lambda v: 255 if v == ink else 0)  # ink opaque, paper transparent
    rgba = Image.merge("RGBA", [digit, digit, digit, alpha])
    x = load_image(png_bytes(rgba), GRID)
    reference = load_image(png_bytes(drawn_digit("7")), GRID)
    assert np.abs(x - reference).max() < 0.05


def test_a_real_mnist_digit_survives_the_round_trip(mnist_sample) -> None:
    """Enlarged, inverted and moved, then preprocessed: close to the original digit."""
    images, _ = mnist_sample
    errors = [
        np.abs(load_image(png_bytes(sample_as_photo(im)), GRID) - im / 255).mean() for im in images[:20]
    ]
    assert np.median(errors) < 0.05


def test_jpeg_photo_with_noise_is_handled(mnist_sample) -> None:
    rng = np.random.default_rng(0)
    photo = np.asarray(sample_as_photo(mnist_sample[0][0])).astype(float)
    photo = np.clip(photo * 0.8 + 30 + rng.normal(0, 6, photo.shape), 0, 255).astype(np.uint8)
    x = load_image(png_bytes(Image.fromarray(photo), "JPEG", quality=70), GRID)
    original = mnist_sample[0][0] / 255
    assert np.abs(x - original).mean() < 0.08
    assert abs(centre_of_mass(x)[0] - 14) <= 0.5


def test_a_blank_image_gives_an_empty_field() -> None:
    assert not load_image(png_bytes(Image.new("L", (50, 50), 255)), GRID).any()


def test_fashion_style_fills_the_field_and_centres_the_box() -> None:
    png = png_bytes(drawn_digit("0", size=200, offset=(30, 0)))
    x = load_image(png, GRID, style="fashion-mnist")
    height, width = ink_box(x)
    assert height == 28
    rows = np.flatnonzero(x.any(axis=1))
    cols = np.flatnonzero(x.any(axis=0))
    assert abs((cols[0] + cols[-1]) / 2 - 13.5) <= 1 and (rows[0], rows[-1]) == (0, 27)


def test_preprocess_false_only_converts_and_resizes(mnist_sample) -> None:
    digit = mnist_sample[0][3]
    x = load_image(png_bytes(Image.fromarray(digit)), GRID, preprocess=False)
    np.testing.assert_array_equal(x, digit / np.float32(255))
    big = png_bytes(Image.fromarray(digit).resize((56, 56), Image.Resampling.NEAREST))
    x_big = load_image(big, GRID, preprocess=False)
    assert x_big.shape == GRID
    np.testing.assert_allclose(x_big, digit / 255, atol=1e-6)  # 2x2 blocks average back


def test_the_grid_follows_the_requested_size() -> None:
    x = load_image(png_bytes(drawn_digit("1")), (14, 14))
    assert x.shape == (14, 14)
    assert ink_box(x)[0] == 10  # 20/28 of the field


def test_very_large_images_are_shrunk_before_processing() -> None:
    png = png_bytes(drawn_digit("1", size=2000))
    x = load_image(png, GRID)
    reference = load_image(png_bytes(drawn_digit("1")), GRID)
    assert np.abs(x - reference).max() < 0.1


def test_grayscale_of_a_palette_image_with_transparency() -> None:
    image = drawn_digit("1").convert("P")
    image.info["transparency"] = 255  # white is transparent
    gray = grayscale(image)
    assert gray.min() == 0 and gray.max() == 1


def test_mnist_like_keeps_an_already_fitted_digit_unchanged(mnist_sample) -> None:
    """An MNIST digit already fills 20 rows and is centred: preprocessing barely moves it."""
    images, _ = mnist_sample
    same = [
        np.abs(mnist_like(im / np.float32(255), GRID, 20 / 28, True) - im / 255).mean() for im in images[:20]
    ]
    assert np.median(same) < 0.01


# --- decoding -----------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "WEBP"])
def test_accepted_formats_decode(fmt: str) -> None:
    image = decode(png_bytes(drawn_digit("1", mode="RGB"), fmt), max_pixels=10**6)
    assert image.size == (200, 200)


def test_other_formats_are_refused_even_if_pillow_reads_them() -> None:
    with pytest.raises(InvalidImage):
        decode(png_bytes(drawn_digit("1"), "TIFF"), max_pixels=10**6)


@pytest.mark.parametrize(
    "data",
    [b"", b"hello", b"\x89PNG\r\n\x1a\n", b"GIF89a" + b"\0" * 20],
    ids=["empty", "text", "png-signature-only", "gif-header-only"],
)
def test_undecodable_bytes(data: bytes) -> None:
    with pytest.raises(InvalidImage):
        decode(data, max_pixels=10**6)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_files(fmt: str) -> None:
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8))
    data = png_bytes(noise, fmt)
    with pytest.raises(InvalidImage, match="truncated or corrupt"):
        decode(data[: len(data) // 2], max_pixels=10**6)


@pytest.mark.parametrize(
    "width,height",
    [(50_000, 50_000), (10_000, 10_000), (2_000, 1_000)],
    ids=["over-pillow-error-limit", "over-pillow-warning-limit", "over-our-limit"],
)
def test_decompression_bombs_are_refused_before_decoding(width: int, height: int) -> None:
    """A tiny file whose header claims a huge image: 413, whichever guard catches it first
    (pytest turns Pillow's DecompressionBombWarning into an error, as is configured)."""
    with pytest.raises(ImageTooLarge):
        decode(bomb_png(width, height), max_pixels=1_000_000)


def test_a_real_image_over_the_pixel_limit() -> None:
    png = png_bytes(Image.new("1", (3000, 3000)))
    assert len(png) < 10_000  # compresses to almost nothing: the header is what counts
    with pytest.raises(ImageTooLarge, match="3000x3000"):
        load_image(png, GRID, max_pixels=4_000_000)


def test_exif_orientation_is_honoured() -> None:
    wide = Image.new("L", (60, 20), 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: the picture is 20 wide and 60 tall
    data = png_bytes(wide, "JPEG", exif=exif.tobytes())
    assert decode(data, max_pixels=10**6).size == (20, 60)
