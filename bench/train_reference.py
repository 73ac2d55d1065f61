"""The reference training run: a careful plain-numpy loop doing the SGD of ``python -m training train``.

Self-contained on purpose (numpy and the standard library; threadpoolctl if installed, for the
same BLAS thread policy as the package): it imports nothing from ``training/``, so it shows what
plain numpy reaches on this machine, and ``bench/train_process.py`` times the whole process of
this script against the whole process of ``python -m training train`` doing the same work:

- read the four gzip IDX files of ``--data-dir``, pixels to float32 in [0, 1];
- 784-H-10, sigmoid hidden layer, softmax + cross-entropy, Xavier-scaled initial weights,
  plain SGD at a constant learning rate, batch B, ``--epochs`` epochs, a fresh permutation
  every epoch (the last batch of an epoch may be smaller);
- one evaluation at the end: loss and accuracy over the test set, printed;
- the final weights into ``--output``, written as the package writes files (temp file, fsync,
  rename, fsync of the directory).

Nothing else: no per-epoch metrics, checkpoints or history (issue 18 made this the baseline, "a
plain numpy loop doing the same SGD with one final evaluation"; the package's per-epoch test
evaluation, running training metrics, checkpoints and history are what it is measured on).

What makes it careful: every buffer is allocated once and every numpy call writes into one
(``out=``); one ``rng.permutation`` per epoch, each batch gathered with ``np.take(..., out=)``
into the same buffer (a whole-epoch ``np.take`` into one big buffer was slower here: 188 MB
written and read back from memory, where a 313 KB batch stays in cache); the softmax and
cross-entropy fused into one gradient, ``(y - t) * lr / B``, with the learning rate and the
batch size folded into the softmax's normaliser, so the weight gradients come out as the updates;
one-hot targets as rows of a scaled identity, gathered like the pixels; no loss computed during
training; BLAS on one thread inside the step loop
(the package's policy, measured in bench/README.md), its default outside it.

    python bench/train_reference.py --data-dir DIR [--epochs 5] [--output reference.npz]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import os
import struct
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
EVAL_CHUNK = 10_000
EPS = 1e-7


def read_idx(directory: Path, stem: str) -> np.ndarray:
    """One IDX file (``stem.gz`` or ``stem``) -> uint8 array, a view of the decompressed bytes."""
    path = directory / f"{stem}.gz"
    data = gzip.decompress(path.read_bytes()) if path.exists() else (directory / stem).read_bytes()
    magic = struct.unpack_from(">I", data)[0]
    ndim = magic & 0xFF
    if magic >> 8 != 0x08 or ndim not in (1, 3):
        raise SystemExit(f"{stem}: not a ubyte IDX file of labels or images")
    dims = struct.unpack_from(f">{ndim}I", data, 4)
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def pixels(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28) uint8 -> (N, 784) float32 in [0, 1], in one pass (no float temporary)."""
    out = np.empty((images.shape[0], images.shape[1] * images.shape[2]), np.float32)
    np.divide(images.reshape(out.shape), np.float32(255), out=out)
    return out


def blas_one_thread() -> contextlib.AbstractContextManager[Any]:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--hidden-size", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("reference.npz"))
    args = parser.parse_args(argv)

    f32 = np.float32
    x_train, x_test = (pixels(read_idx(args.data_dir, s)) for s in (FILES[0], FILES[2]))
    t_train, t_test = (read_idx(args.data_dir, s).astype(np.intp) for s in (FILES[1], FILES[3]))
    n, d = x_train.shape
    h, c, b, lr = args.hidden_size, int(t_train.max()) + 1, args.batch_size, args.learning_rate

    rng = np.random.default_rng(args.seed)
    w1 = (np.sqrt(1.0 / d) * rng.standard_normal((d, h))).astype(f32)
    b1 = np.zeros(h, f32)
    w2 = (np.sqrt(1.0 / h) * rng.standard_normal((h, c))).astype(f32)
    b2 = np.zeros(c, f32)

    # step buffers (full batch; the last batch of an epoch uses their leading rows)
    xb, tb = np.empty((b, d), f32), np.empty((b, c), f32)
    a1, z1, dz1 = np.empty((b, h), f32), np.empty((b, h), f32), np.empty((b, h), f32)
    y, row, log_y = np.empty((b, c), f32), np.empty((b, 1), f32), np.empty((b, c), f32)
    dw1, db1, dw2, db2 = np.empty_like(w1), np.empty_like(b1), np.empty_like(w2), np.empty_like(b2)
    ones = np.ones(b, f32)
    full = (xb, tb, a1, z1, dz1, y, row, log_y, ones)  # the last, smaller batch uses leading rows
    # evaluation buffers
    e1, e2, erow = (
        np.empty((EVAL_CHUNK, h), f32),
        np.empty((EVAL_CHUNK, c), f32),
        np.empty((EVAL_CHUNK, 1), f32),
    )

    def evaluate(x: np.ndarray, t: np.ndarray) -> tuple[float, float]:
        loss, correct = 0.0, 0
        for start in range(0, x.shape[0], EVAL_CHUNK):
            xs, ts = x[start : start + EVAL_CHUNK], t[start : start + EVAL_CHUNK]
            m = xs.shape[0]
            p1, p2, pr = e1[:m], e2[:m], erow[:m]
            np.matmul(xs, w1, out=p1)
            p1 += b1
            p1 *= 0.5
            np.tanh(p1, out=p1)  # sigmoid(a) = 0.5 + 0.5 tanh(a / 2)
            p1 *= 0.5
            p1 += 0.5
            np.matmul(p1, w2, out=p2)
            p2 += b2
            correct += int(np.count_nonzero(p2.argmax(axis=1) == ts))
            p2.max(axis=1, keepdims=True, out=pr)
            p2 -= pr
            np.exp(p2, out=p2)
            p2.sum(axis=1, keepdims=True, out=pr)
            p2 /= pr
            picked = np.take_along_axis(p2, ts[:, None], axis=1)
            loss -= float(np.log(np.maximum(picked, EPS, out=picked), out=picked).sum())
        return loss / x.shape[0], correct / x.shape[0]

    # one-hot targets scaled by lr / B: the fused gradient (y - t) * lr / B is y * lr / B - these rows
    targets = (np.eye(c, dtype=f32) * f32(lr / b))[t_train]
    seconds = 0.0
    for _ in range(args.epochs):
        started = time.perf_counter()
        order = rng.permutation(n)
        with blas_one_thread():
            for start in range(0, n, b):
                idx = order[start : start + b]
                m = idx.shape[0]
                x, t, p1, p2, p3, py, pr, ly, o = full if m == b else tuple(a[:m] for a in full)
                np.take(x_train, idx, axis=0, out=x, mode="clip")
                np.take(targets, idx, axis=0, out=t, mode="clip")
                # forward
                np.matmul(x, w1, out=p1)
                p1 += b1
                np.multiply(p1, 0.5, out=p2)
                np.tanh(p2, out=p2)
                p2 *= 0.5
                p2 += 0.5  # z1
                np.matmul(p2, w2, out=py)
                py += b2
                py.max(axis=1, keepdims=True, out=pr)
                py -= pr
                np.exp(py, out=py)
                py.sum(axis=1, keepdims=True, out=pr)
                if m != b:
                    t *= b / m  # the rows hold lr / B; a smaller batch needs lr / m
                pr *= m / lr  # fold lr / m into the normaliser: py becomes y * lr / m
                py /= pr
                py -= t  # da2 = (y - t) * lr / m
                # backward: the gradients come out scaled by lr, i.e. as the updates
                np.matmul(p2.T, py, out=dw2)
                np.matmul(o, py, out=db2)
                np.matmul(py, w2.T, out=p3)  # dz1
                np.subtract(1, p2, out=p1)
                p1 *= p2
                p1 *= p3  # da1 = dz1 * z1 * (1 - z1)
                np.matmul(x.T, p1, out=dw1)
                np.matmul(o, p1, out=db1)
                w1 -= dw1
                b1 -= db1
                w2 -= dw2
                b2 -= db2
        seconds += time.perf_counter() - started
    test_loss, test_acc = evaluate(x_test, t_test)
    print(
        f"after epoch {args.epochs}: test loss {test_loss:.4f} acc {test_acc:.4f}  ({seconds:.1f}s)",
        flush=True,
    )
    save(args.output, {"W1": w1, "b1": b1, "W2": w2, "b2": b2})
    print(f"wrote {args.output}")
    return 0


def save(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Weights to ``path`` as the package writes its files: a temp file, fsync, rename, fsync the
    directory (so a crash leaves the old file or the new one, on disk)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_durably(path, buffer.getvalue())


def write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


if __name__ == "__main__":
    sys.exit(main())
