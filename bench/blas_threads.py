"""One BLAS thread or two for a training epoch: speed, and whether the weights stay the same.

``training.trainer.train_epoch`` runs BLAS on one thread for steps as small as batch 100 on
784-100 (``SINGLE_THREAD_STEP_MACS``). This script shows what that costs and why it stays:
in one process, epochs alternate between one thread (the package's policy) and two (the policy
lifted), each from the same weights, and it reports

* the median, min and max seconds of an epoch on each;
* the largest difference between the weights each ends with: the products of two threads
  differ from one thread's in the last bits, so a thread count chosen by the machine's load would
  make the same seed give different weights.

    python bench/blas_threads.py --data-dir DIR [--rounds 6]

784-100-10, float32, batch 100, learning rate 0.1, a fresh permutation every epoch, seed 0.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from training import trainer  # noqa: E402
from training.datasets import as_training_arrays, load_dataset  # noqa: E402
from training.idx import DataError  # noqa: E402

ONE_THREAD = trainer.SINGLE_THREAD_STEP_MACS


def epoch(threads: int, config: trainer.TrainConfig, x: np.ndarray, t: np.ndarray) -> tuple[float, dict]:
    """Seconds of one epoch from the seed's initial weights, and the weights it ends with."""
    trainer.SINGLE_THREAD_STEP_MACS = ONE_THREAD if threads == 1 else 0  # 0: no step is small
    state = trainer.init_state(config, x.shape[1], 10)
    started = time.perf_counter()
    trainer.train_epoch(state, config, x, t)
    seconds = time.perf_counter() - started
    trainer.SINGLE_THREAD_STEP_MACS = ONE_THREAD
    return seconds, {name: value.copy() for name, value in state.net.params.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="directory with the four MNIST IDX files")
    parser.add_argument("--rounds", type=int, default=6, help="epochs on each thread count")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        print("blas_threads: --rounds must be at least 1", file=sys.stderr)
        return 2
    try:
        data = load_dataset("mnist", args.data_dir, download=False, progress=False)
    except DataError as exc:
        print(f"blas_threads: {exc}", file=sys.stderr)
        return 2
    x = as_training_arrays(data.x_train.reshape(len(data.x_train), -1))
    t = data.t_train.astype(np.intp)
    config = trainer.TrainConfig(
        hidden_size=100, learning_rate=0.1, batch_size=100, epochs=1, lr_schedule="constant", seed=0
    )
    seconds: dict[int, list[float]] = {1: [], 2: []}
    weights: dict[int, dict] = {}
    for _ in range(args.rounds):
        for threads in (1, 2):
            took, weights[threads] = epoch(threads, config, x, t)
            seconds[threads].append(took)
    print(f"command: python bench/blas_threads.py --data-dir {args.data_dir} --rounds {args.rounds}")
    print(
        f"{'BLAS threads':<14}{'median s':>10}{'min':>8}{'max':>8}   ({args.rounds} alternating epochs each)"
    )
    for threads, runs in seconds.items():
        print(f"{threads:<14}{statistics.median(runs):>10.3f}{min(runs):>8.3f}{max(runs):>8.3f}")
    print("largest |weight difference| after one epoch from the same weights, two threads vs one:")
    for name, value in weights[1].items():
        print(f"  {name}: {float(np.abs(weights[2][name] - value).max()):.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
