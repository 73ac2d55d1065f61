"""training/augment.py: stroke width and the per-batch changes, seeded."""

from __future__ import annotations

import numpy as np

from training.augment import _thicken, augment_batch


def a_stroke() -> np.ndarray:
    """One 28x28 image with a vertical 2-pixel stroke, (1, 28, 28)."""
    image = np.zeros((1, 28, 28), np.float32)
    image[0, 4:24, 13:15] = 1.0
    return image


def test_thickening_grows_strokes_by_the_amount_asked():
    image = a_stroke()
    widths = [
        float(_thicken(image, np.array([amount]))[0, 14].sum())  # ink across one row
        for amount in (0.0, 0.5, 1.0, 2.0, 3.0)
    ]
    assert widths[0] == 2.0  # no change
    assert widths[1] == 3.0  # half of one pixel each side
    assert widths[2:] == [4.0, 6.0, 8.0]  # whole pixels each side
    assert _thicken(image, np.array([3.0])).max() == 1.0  # ink never exceeds full


def test_augment_batch_is_reproducible_and_keeps_pixels_in_range():
    rng_data = np.random.default_rng(0)
    x = (rng_data.random((64, 784)) > 0.8).astype(np.float32)
    a, b = x.copy(), x.copy()
    augment_batch(a, np.random.default_rng(5))
    augment_batch(b, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, x)
    assert a.min() >= 0.0 and a.max() <= 1.0 + 1e-6
