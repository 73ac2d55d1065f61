"""Makes examples/digit-N.png: MNIST test digits drawn as a scan would show them.

Run once by a maintainer; the PNGs are committed, and nothing at run time or in the tests runs
this script. Each digit is a fixed image of the MNIST test set (``DIGITS``: digit -> index),
chosen because the shipped ``models/mnist.npz`` recognises it after the service's image
preprocessing (tests/integration/test_examples.py checks that). The 28x28 image is inverted to
dark ink on light paper, upscaled 4.5x with bicubic smoothing to 126x126, and given a slightly
grey paper and a little seeded noise, so the service's preprocessing has real work to do:
find the ink, invert, crop, fit into 20x20 and centre, as for a photo or scan.

    python examples/make_digits.py --data-dir /path/to/mnist   # the dir with t10k-*-ubyte.gz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from training.idx import read_idx

HERE = Path(__file__).resolve().parent
#: digit -> its image's index in the MNIST test set (t10k-images-idx3-ubyte).
DIGITS = {0: 3, 1: 2, 2: 1, 3: 30, 4: 4, 5: 23, 6: 11, 7: 0, 8: 84, 9: 16}
SIDE = 126  # pixels: 28 x 4.5, about the size of a digit scanned at 150 dpi
PAPER = 236.0  # 0-255: slightly grey paper, as a scanner sees white
INK = 28.0  # 0-255: dark pen, not pure black
NOISE = 3.0  # standard deviation of the sensor noise, 0-255
SEED = 12


def scan(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An MNIST digit (28, 28) uint8, white on black -> (SIDE, SIDE) uint8, dark ink on paper."""
    ink = Image.fromarray(digit).resize((SIDE, SIDE), Image.Resampling.BICUBIC)
    v = np.asarray(ink, dtype=np.float32) / 255  # (SIDE, SIDE): 1 where the pen was
    gray = PAPER - (PAPER - INK) * v + rng.normal(0, NOISE, v.shape)
    return np.clip(np.rint(gray), 0, 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="holds t10k-images-idx3-ubyte.gz")
    parser.add_argument("--out", type=Path, default=HERE, help="where the PNGs go (default: examples/)")
    args = parser.parse_args(argv)
    images = read_idx(args.data_dir / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(args.data_dir / "t10k-labels-idx1-ubyte.gz")
    rng = np.random.default_rng(SEED)
    for digit, index in DIGITS.items():
        if labels[index] != digit:
            print(f"error: test image {index} is a {labels[index]}, not a {digit}", file=sys.stderr)
            return 1
        path = args.out / f"digit-{digit}.png"
        Image.fromarray(scan(images[index], rng)).save(path, optimize=True)
        print(f"{path}: MNIST test image {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
