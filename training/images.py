"""Image files -> model inputs: safe decoding and MNIST-style preprocessing.

The one preprocessing of the project: the service applies it to every upload
(``service/images.py`` imports it from here) and ``train --images`` to every file it trains on,
so a model never sees its inputs prepared two ways (no train/serve skew). No Flask here.

Decoding accepts PNG, JPEG, GIF (first frame), BMP and WebP only, refuses an image whose header
claims more than ``max_pixels`` pixels before decoding it (decompression bombs), and maps every
decoder failure to ``InvalidImage``.

Preprocessing (``preprocess=True``) turns a photo or drawing of one digit into what the MNIST
models were trained on, following the procedure MNIST itself used:

1. grayscale; transparent pixels are flattened onto the background that contrasts with the ink
   (white under dark ink, black under light ink);
2. a light background (median of the border pixels above one half) is inverted, so the result is
   white ink on black, and the background level is subtracted;
3. the image is cropped to the bounding box of the ink;
4. scaled, keeping the aspect ratio, to fit a 20x20 box (area-averaged), contrast stretched;
5. pasted into the 28x28 field so that its centre of mass is at the centre, pixel (14, 14),
   where it lies in MNIST's own training images.

The ``fashion-mnist`` style differs in steps 4-5, as Fashion-MNIST was made: the longest side is
scaled to the full 28 and the item is centred by its bounding box. With ``preprocess=False`` the
image is only converted to grayscale and resized to the model's grid if it is another size.
The grid size comes from the model's ``input_shape`` (28x28 for MNIST), never a literal.
"""

from __future__ import annotations

import io

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps

#: Pillow decoders an upload may use; everything else is refused without being parsed further.
ALLOWED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
#: Request ``Content-Type`` values accepted for a raw image body.
IMAGE_MIMETYPES = frozenset(
    {"image/png", "image/jpeg", "image/gif", "image/bmp", "image/x-ms-bmp", "image/webp"}
)
#: MNIST fitted each digit into a 20x20 box of its 28x28 field; Fashion-MNIST used the full field.
MNIST_BOX_FRACTION = 20 / 28
FASHION_BOX_FRACTION = 1.0
#: A border median above this means a light background, which is inverted to MNIST's black.
LIGHT_BACKGROUND = 0.5
#: After background removal, pixels above this fraction of the brightest one are ink.
INK_FRACTION = 0.2
#: Large images are first shrunk so their longest side is at most this many grid sides.
WORKING_SCALE = 10
#: Formats whose files carry an EXIF orientation in practice (camera and phone photos).
EXIF_FORMATS = frozenset({"JPEG", "WEBP"})
_INDEX = np.arange(4096, dtype=np.float32)  # pixel indices for centres of mass


class InvalidImage(ValueError):
    """The bytes are not a decodable image of an accepted format."""


class ImageTooLarge(ValueError):
    """An image whose pixel count is over the limit (a decompression bomb, or just too big)."""


def load_image(
    data: bytes,
    size: tuple[int, int],
    style: str = "mnist",
    *,
    preprocess: bool = True,
    max_pixels: int = 4096 * 4096,
) -> NDArray[np.float32]:
    """Image file bytes -> (H, W) float32 in [0, 1], white ink on black, ``size`` = (H, W)."""
    image = decode(data, max_pixels, draft_side=WORKING_SCALE * max(size))
    gray = grayscale(image, max_side=WORKING_SCALE * max(size))
    if not preprocess:
        return resize(gray, size)
    if style == "fashion-mnist":
        return mnist_like(gray, size, box_fraction=FASHION_BOX_FRACTION, centre_of_mass=False)
    return mnist_like(gray, size, box_fraction=MNIST_BOX_FRACTION, centre_of_mass=True)


def decode(data: bytes, max_pixels: int, draft_side: int | None = None) -> Image.Image:
    """Open and fully decode ``data``; ``ImageTooLarge`` over ``max_pixels``, else ``InvalidImage``."""
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard (about 89 million pixels) fires inside open(); with warnings as
        # errors (the test suite) its warning is raised too.
        raise ImageTooLarge(f"image is too large to decode ({exc})") from None
    except Exception:  # whatever a decoder raises on these bytes, they are not an image
        raise InvalidImage("not a PNG, JPEG, GIF, BMP or WebP image") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"image is {width}x{height} = {width * height} pixels, over the {max_pixels} limit"
        )
    if draft_side and image.format == "JPEG":
        image.draft(None, (draft_side, draft_side))  # decode a JPEG at a reduced scale: cheap
    try:
        image.load()
        if image.format in EXIF_FORMATS:
            ImageOps.exif_transpose(image, in_place=True)  # phone photos: honour the orientation
    except Exception:
        raise InvalidImage("image data is truncated or corrupt") from None
    return image


def grayscale(image: Image.Image, max_side: int | None = None) -> NDArray[np.float32]:
    """(H, W) float32 in [0, 1]; transparency flattened onto the background contrasting with ink."""
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    mode = "LA" if has_alpha else "L"
    if image.mode != mode:
        image = image.convert(mode)
    if max_side and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.BOX)
    pixels = np.asarray(image).astype(np.float32)
    pixels /= np.float32(255)  # exactly as training scaled its pixels (x / 255)
    if not has_alpha:
        return pixels
    gray, alpha = pixels[..., 0], pixels[..., 1]
    if alpha.min() == 1:
        return np.ascontiguousarray(gray)
    weight = alpha.sum()
    ink = float((gray * alpha).sum() / weight) if weight > 0 else 0.0
    background = 1.0 if ink < 0.5 else 0.0  # dark ink on white, light ink on black
    return gray * alpha + np.float32(background) * (1 - alpha)


def resize(gray: NDArray[np.float32], size: tuple[int, int]) -> NDArray[np.float32]:
    """``gray`` resized (anti-aliased, aspect ratio not kept) to ``size`` = (H, W)."""
    if gray.shape == size:
        return gray
    scale = min(size[0] / gray.shape[0], size[1] / gray.shape[1])
    return np.array(Image.fromarray(gray).resize((size[1], size[0]), _resampling(scale)))


def _resampling(scale: float) -> Image.Resampling:
    """Area averaging to shrink (the anti-aliasing MNIST describes), bilinear to enlarge.

    Both stay within the input's range, unlike Lanczos, and are several times faster.
    """
    return Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR


def mnist_like(
    gray: NDArray[np.float32], size: tuple[int, int], box_fraction: float, centre_of_mass: bool
) -> NDArray[np.float32]:
    """One digit (or item) on any background -> white on black, cropped, fitted and centred."""
    border = np.concatenate((gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]))
    border.sort()
    background = float(border[border.size // 2])  # the median: robust to ink touching an edge
    if background > LIGHT_BACKGROUND:
        gray = 1 - gray
        background = 1 - background
    if background > 0:
        gray = (gray - np.float32(background)) * np.float32(1 / (1 - background))
        np.maximum(gray, 0, out=gray)

    field = np.zeros(size, dtype=np.float32)
    peak = float(gray.max())
    if peak <= 0:
        return field  # a blank image: nothing to crop, the model sees an empty field
    ink = gray > INK_FRACTION * peak
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    crop = gray[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]

    height, width = crop.shape
    scale = box_fraction * min(size) / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    if (new_h, new_w) == crop.shape:  # already the right size (an MNIST-like upload)
        fitted = crop * np.float32(1 / peak)  # contrast stretch to 1
    else:
        fitted = np.array(
            Image.fromarray(np.ascontiguousarray(crop)).resize((new_w, new_h), _resampling(scale))
        )
        fitted *= np.float32(1 / max(float(fitted.max()), 1e-6))

    if centre_of_mass:
        rows_mass = fitted.sum(axis=1)
        mass = float(rows_mass.sum())
        cy = float(rows_mass @ _INDEX[:new_h]) / mass
        cx = float(fitted.sum(axis=0) @ _INDEX[:new_w]) / mass
        # MNIST's training digits have their centre of mass at (14.0, 14.0) on average: the
        # field's size / 2 in pixel-index coordinates, which is where this puts it.
        top = round(size[0] / 2 - cy)
        left = round(size[1] / 2 - cx)
    else:
        top, left = (size[0] - new_h) // 2, (size[1] - new_w) // 2
    top = min(max(top, 0), size[0] - new_h)
    left = min(max(left, 0), size[1] - new_w)
    field[top : top + new_h, left : left + new_w] = fitted
    return field
