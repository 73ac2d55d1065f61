"""Write the UCI handwritten digits (scikit-learn's ``load_digits``) as an image folder.

A real source of handwriting MNIST never showed: 1,797 digits written by 43 people (UCI "Optical
Recognition of Handwritten Digits", CC BY 4.0, bundled with scikit-learn), each an 8x8 grid of
ink counts 0..16. Each becomes a PNG, dark ink on white paper as a scan would be, upscaled 4x
(nearest neighbour: the pixels as the data has them), in ``OUT/<split>/<digit>/uci-<index>.png``:
``train`` gets the first ``--per-class`` of each digit (in the data set's order), ``held-out``
the next ``--held-out`` (all the rest with 0).

    pip install scikit-learn      # (in the bench extra: pip install -e '.[bench]')
    python examples/make_uci_digits.py OUT [--per-class 30] [--held-out 0]

tests/data/uci-digits/ was made with ``--per-class 30 --held-out 30``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

#: load_digits' pixels count ink in 0..16.
INK_MAX = 16
#: Each 8x8 digit is written at 32x32.
UPSCALE = 4


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--held-out", type=int, default=0, help="per class; 0: all the rest")
    args = parser.parse_args(argv)
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        print("error: needs scikit-learn: pip install scikit-learn", file=sys.stderr)
        return 2
    digits = load_digits()
    pixels = 255 - np.round(digits.images * (255 / INK_MAX)).astype(np.uint8)  # dark ink on white
    taken = {c: 0 for c in range(10)}
    for index, (image, label) in enumerate(zip(pixels, digits.target, strict=True)):
        n = taken[int(label)]
        taken[int(label)] += 1
        if n < args.per_class:
            split = "train"
        elif args.held_out == 0 or n < args.per_class + args.held_out:
            split = "held-out"
        else:
            continue
        folder = args.out / split / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        big = Image.fromarray(image).resize((8 * UPSCALE, 8 * UPSCALE), Image.Resampling.NEAREST)
        big.save(folder / f"uci-{index:04d}.png", optimize=True)
    print(f"wrote {args.out}/train and {args.out}/held-out")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
