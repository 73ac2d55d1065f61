"""Rebuild tests/data/mnist-sample/: the first 1,000 MNIST test images and labels, as a 4-file set.

Usage: python tests/data/make_sample.py SOURCE_DIR [--count 1000] [--out DIR]

SOURCE_DIR holds the MNIST IDX files (t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz).
The same images are written under both the t10k-* and train-* names, so the directory works
with ``--data-dir``. Output is deterministic (gzip without a name or time stamp).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from training.idx import read_idx, write_idx  # noqa: E402

SAMPLE_SIZE = 1000
DEFAULT_OUT = Path(__file__).resolve().parent / "mnist-sample"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="directory with the MNIST t10k-* IDX files")
    parser.add_argument("--count", type=int, default=SAMPLE_SIZE)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    images = read_idx(args.source / "t10k-images-idx3-ubyte.gz")[: args.count]
    labels = read_idx(args.source / "t10k-labels-idx1-ubyte.gz")[: args.count]
    for split in ("t10k", "train"):
        write_idx(args.out / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(args.out / f"{split}-labels-idx1-ubyte.gz", labels)
    print(f"wrote {len(images)} images and labels to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
