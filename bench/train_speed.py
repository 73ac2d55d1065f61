"""Training speed: this package, PyTorch (CPU) and scikit-learn on one net, in one run.

All three train 784-100-10 (sigmoid hidden layer, softmax + cross-entropy output) with plain SGD,
learning rate 0.1, batch 100, float32, a fresh permutation every epoch. Each framework lives in its
own worker process, so no framework's BLAS or OpenMP threads share a process with another's loop;
the parent drives them in rounds (one epoch of each, in an order that rotates every round) so
that whatever else the machine is doing hits all of them alike. Each round also times the
epoch's matrix products alone, in this package's process: FLOPs per epoch / sustained GEMM FLOP/s
is the bound no implementation of this training loop on this machine can beat.

    python bench/train_speed.py --data-dir DIR [--epochs 3] [--rounds 6] [--baseline DIR] [--check]

``--baseline DIR`` adds a fourth worker: this package's loop imported from another checkout
(``DIR/training``), timed in the same rounds, for a before and after of a change.
Prints the median seconds per epoch, the ratios, and PASS/FAIL against the targets (this
package's epoch at most 0.7x PyTorch's and at most 1.5x the bound). Exits 0 regardless, unless
``--check`` is given: then 1 on any FAIL. The machine's environment is used as it is: nothing
here sets environment variables or the frameworks' thread counts (only the one-thread timing of
the GEMMs limits BLAS threads, around that timing alone).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import multiprocessing as mp
import os
import platform
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

# Run as a script from anywhere: the package lives one directory up.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HIDDEN = 100
BATCH = 100
LEARNING_RATE = 0.1
DTYPE = "float32"
#: Rows for the untimed warm-up epoch each worker runs before the first round.
WARM_UP_ROWS = 5_000
#: Side of the square float32 matmul that measures the machine's large-GEMM rate.
SQUARE_N = 1536
SQUARE_REPEATS = 5
#: Targets from the tracker issues: 0.7x PyTorch (the first pass), 1.5x the bound (issue 13; was 1.6).
TARGET_VS_TORCH = 0.7
TARGET_VS_BOUND = 1.5
FRAMEWORKS = ("numpy", "torch", "sklearn")
LABELS = {"numpy": "this package", "torch": "PyTorch", "sklearn": "scikit-learn", "before": "before"}


# --- the three trainers (each runs inside its own worker process) ----------------------------
Arrays = tuple[NDArray[np.float32], NDArray[np.intp], NDArray[np.float32], NDArray[np.intp]]


def load_arrays(data_dir: str) -> Arrays:
    """MNIST from DIR -> x_train (N, 784) float32 in [0, 1], t_train (N,), x_test, t_test."""
    from training.datasets import as_training_arrays, load_dataset

    ds = load_dataset("mnist", data_dir, download=False, progress=False)
    return (
        as_training_arrays(ds.x_train, DTYPE),
        ds.t_train.astype(np.intp),
        as_training_arrays(ds.x_test, DTYPE),
        ds.t_test.astype(np.intp),
    )


class NumpyTrainer:
    """This package: ``train_epoch`` on a ``TrainState``, as ``trainer.run`` does for ``train``."""

    def __init__(self, seed: int) -> None:
        from training.trainer import TrainConfig, init_state, train_epoch

        self._init_state, self._train_epoch = init_state, train_epoch
        self.config = TrainConfig(
            hidden_size=HIDDEN, learning_rate=LEARNING_RATE, batch_size=BATCH, dtype=DTYPE, seed=seed
        )
        self.state: Any = None

    def reset(self, d: int, c: int) -> None:
        self.state = self._init_state(self.config, d, c)

    def epoch(self, x: NDArray, t: NDArray) -> None:
        self._train_epoch(self.state, self.config, x, t)

    def predict_proba(self, x: NDArray) -> NDArray:
        return self.state.net.predict(x)

    def describe(self, x: NDArray, t: NDArray) -> dict[str, str]:
        """Also asks threadpoolctl, from inside a throwaway epoch, what BLAS runs on there."""
        seen: list[str] = []

        def on_step(step: int, loss: float) -> None:
            if not seen:
                seen.append(_numpy_blas_threads())

        state = self._init_state(self.config, x.shape[1], int(t.max()) + 1)
        self._train_epoch(state, self.config, x[: 2 * BATCH], t[: 2 * BATCH], on_step=on_step)
        return {
            "threads": f"{seen[0]} in train_epoch",
            "dtype": str(state.net.params["W1"].dtype),
            "version": f"numpy {np.__version__}",
        }


class TorchTrainer:
    """nn.Linear -> sigmoid -> nn.Linear, CrossEntropyLoss, optim.SGD; a manual loop over a
    per-epoch randperm with index_select into batches (no DataLoader)."""

    def __init__(self, seed: int) -> None:
        import torch

        self.torch = torch
        self.seed = seed
        self.model: Any = None

    def reset(self, d: int, c: int) -> None:
        torch = self.torch
        torch.manual_seed(self.seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.model = torch.nn.Sequential(
            torch.nn.Linear(d, HIDDEN), torch.nn.Sigmoid(), torch.nn.Linear(HIDDEN, c)
        )
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LEARNING_RATE)
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self._data: tuple[Any, Any] | None = None

    def epoch(self, x: NDArray, t: NDArray) -> None:
        torch = self.torch
        if self._data is None or self._data[0].shape[0] != x.shape[0]:
            self._data = (torch.from_numpy(x), torch.from_numpy(t.astype(np.int64)))
        xs, ts = self._data
        model, optimizer, loss_fn = self.model, self.optimizer, self.loss_fn
        order = torch.randperm(xs.shape[0], generator=self.generator)
        for start in range(0, xs.shape[0], BATCH):
            idx = order[start : start + BATCH]
            x_batch, t_batch = xs.index_select(0, idx), ts.index_select(0, idx)
            optimizer.zero_grad()
            loss = loss_fn(model(x_batch), t_batch)
            loss.backward()
            optimizer.step()

    def predict_proba(self, x: NDArray) -> NDArray:
        torch = self.torch
        with torch.no_grad():
            return torch.softmax(self.model(torch.from_numpy(x)), dim=1).numpy()

    def describe(self, x: NDArray, t: NDArray) -> dict[str, str]:
        torch = self.torch
        blas = "mkl" if torch.backends.mkl.is_available() else "?"
        dtype = str(next(self.model.parameters()).dtype).replace("torch.", "")
        return {
            "threads": f"{torch.get_num_threads()} (torch, {blas})",
            "dtype": dtype,
            "version": f"torch {torch.__version__}",
        }


class SklearnTrainer:
    """MLPClassifier(solver="sgd"), one ``partial_fit`` (one shuffled epoch) per epoch."""

    def __init__(self, seed: int) -> None:
        from sklearn.neural_network import MLPClassifier

        self.make = MLPClassifier
        self.seed = seed
        self.model: Any = None

    def reset(self, d: int, c: int) -> None:
        self.model = self.make(
            hidden_layer_sizes=(HIDDEN,),
            activation="logistic",
            solver="sgd",
            batch_size=BATCH,
            learning_rate="constant",
            learning_rate_init=LEARNING_RATE,
            momentum=0.0,
            nesterovs_momentum=False,
            alpha=0.0,
            max_iter=1,
            warm_start=True,
            shuffle=True,
            random_state=self.seed,
        )
        self.classes = np.arange(c)

    def epoch(self, x: NDArray, t: NDArray) -> None:
        self.model.partial_fit(x, t, classes=self.classes)

    def predict_proba(self, x: NDArray) -> NDArray:
        return self.model.predict_proba(x)

    def describe(self, x: NDArray, t: NDArray) -> dict[str, str]:
        import sklearn

        return {
            "threads": _numpy_blas_threads(),
            "dtype": str(self.model.coefs_[0].dtype),
            "version": f"scikit-learn {sklearn.__version__}",
        }


TRAINERS: dict[str, Callable[[int], Any]] = {
    "numpy": NumpyTrainer,
    "before": NumpyTrainer,  # --baseline DIR: this package as another checkout has it
    "torch": TorchTrainer,
    "sklearn": SklearnTrainer,
}


def _numpy_blas_threads() -> str:
    """Threads of numpy's BLAS as threadpoolctl sees them (sklearn's MLP multiplies with numpy)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "? (no threadpoolctl)"
    for lib in threadpool_info():
        if lib.get("user_api") == "blas" and "numpy" in lib.get("filepath", ""):
            return f"{lib['num_threads']} (numpy, {lib['internal_api']})"
    return "?"


# --- the matrix-multiply bound -------------------------------------------------------------
def epoch_gemms(n_rows: int, d: int, c: int) -> list[tuple[int, int, int]]:
    """(m, k, n) of every matrix product one epoch needs, forward and backward, no dL/dx."""
    shapes = []
    for start in range(0, n_rows, BATCH):
        b = min(BATCH, n_rows - start)
        shapes += [
            (b, d, HIDDEN),  # a1 = x @ W1
            (b, HIDDEN, c),  # a2 = z1 @ W2
            (HIDDEN, b, c),  # dW2 = z1.T @ da2
            (b, c, HIDDEN),  # dz1 = da2 @ W2.T
            (d, b, HIDDEN),  # dW1 = x.T @ da1
        ]
    return shapes


def epoch_flops(n_rows: int, d: int, c: int) -> int:
    return sum(2 * m * k * n for m, k, n in epoch_gemms(n_rows, d, c))


def time_epoch_gemms(n_rows: int, d: int, c: int, rng: np.random.Generator) -> tuple[float, float]:
    """Wall and CPU seconds for one epoch's matrix products alone: same shapes, layouts and
    ``out=`` buffers."""
    f32 = np.float32
    x = rng.random((BATCH, d), dtype=f32)
    w1 = rng.standard_normal((d, HIDDEN), dtype=f32)
    w2 = rng.standard_normal((HIDDEN, c), dtype=f32)
    a1, z1, da1 = (rng.random((BATCH, HIDDEN), dtype=f32) for _ in range(3))
    a2 = np.empty((BATCH, c), f32)
    dw1, dw2 = np.empty_like(w1), np.empty_like(w2)
    steps = -(-n_rows // BATCH)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        np.matmul(x, w1, out=a1)
        np.matmul(z1, w2, out=a2)
        np.matmul(z1.T, a2, out=dw2)
        np.matmul(a2, w2.T, out=a1)
        np.matmul(x.T, da1, out=dw1)
    return time.perf_counter() - start, time.process_time() - cpu


def square_gemm_flops_per_s(rng: np.random.Generator) -> float:
    """Median float32 FLOP/s of an SQUARE_N x SQUARE_N matmul."""
    a = rng.random((SQUARE_N, SQUARE_N), dtype=np.float32)
    b = rng.random((SQUARE_N, SQUARE_N), dtype=np.float32)
    out = np.empty_like(a)
    np.matmul(a, b, out=out)
    rates = []
    for _ in range(SQUARE_REPEATS):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        rates.append(2 * SQUARE_N**3 / (time.perf_counter() - start))
    return statistics.median(rates)


def measure_bound(n_rows: int, d: int, c: int, rng: np.random.Generator) -> dict[str, float]:
    """The epoch's GEMMs at numpy's default BLAS threads and at one thread (if threadpoolctl can
    set it), and a large square matmul; the bound is the fastest way found to do the products."""
    result = {"gemm_default": time_epoch_gemms(n_rows, d, c, rng)[0]}
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        pass
    else:
        with threadpool_limits(limits=1, user_api="blas"):
            result["gemm_1thread"], result["cpu_gemm_1thread"] = time_epoch_gemms(n_rows, d, c, rng)
    result["square_flops"] = square_gemm_flops_per_s(rng)
    return result


# --- workers and the parent that drives them ---------------------------------------------------
def worker(name: str, conn: Connection, data_dir: str, seed: int, baseline: str | None = None) -> None:
    """Serve one framework: 'epoch', 'bound', 'evaluate', 'describe', 'reset', 'stop'.

    With ``baseline`` (a directory holding another checkout's ``training/``), this package is
    imported from there instead (nothing has imported it yet in a spawned worker)."""
    if baseline is not None:
        sys.path.insert(0, baseline)
    from training.functions import cross_entropy_error

    warnings.filterwarnings("ignore")  # e.g. sklearn's ConvergenceWarning for one-epoch fits
    x, t, x_test, t_test = load_arrays(data_dir)
    d, c = x.shape[1], int(t.max()) + 1
    trainer = TRAINERS[name](seed)
    trainer.reset(d, c)
    trainer.epoch(x[:WARM_UP_ROWS], t[:WARM_UP_ROWS])  # untimed: first-call costs
    rng = np.random.default_rng(seed)
    if name == "numpy":
        measure_bound(WARM_UP_ROWS, d, c, rng)
    conn.send(("ready", (x.shape[0], d, c)))
    while True:
        command = conn.recv()
        if command == "stop":
            break
        if command == "reset":
            trainer.reset(d, c)
            reply: Any = None
        elif command == "epoch":  # wall and CPU seconds (CPU: steadier when other work shares the cores)
            start, cpu = time.perf_counter(), time.process_time()
            trainer.epoch(x, t)
            reply = (time.perf_counter() - start, time.process_time() - cpu)
        elif command == "bound":
            reply = measure_bound(x.shape[0], d, c, rng)
        elif command == "evaluate":
            reply = {
                "train_loss": cross_entropy_error(trainer.predict_proba(x), t),
                "test_accuracy": float(np.mean(np.argmax(trainer.predict_proba(x_test), axis=1) == t_test)),
            }
        elif command == "describe":
            reply = trainer.describe(x, t)
        else:
            raise ValueError(f"unknown command {command!r}")
        conn.send(("ok", reply))
    conn.close()


@dataclass
class Worker:
    name: str
    process: Any
    conn: Connection

    def ask(self, command: str) -> Any:
        self.conn.send(command)
        status, reply = self.conn.recv()
        if status != "ok":
            raise RuntimeError(f"{self.name} worker: {status}")
        return reply


def start_workers(
    data_dir: str, seed: int, names: Sequence[str], baseline: str | None
) -> tuple[dict[str, Worker], tuple[int, int, int]]:
    """One process per framework, started and warmed up one after another; and the data shape."""
    ctx = mp.get_context("spawn")
    workers = {}
    shape = (0, 0, 0)
    for name in names:
        parent, child = ctx.Pipe()
        base = baseline if name == "before" else None
        process = ctx.Process(target=worker, args=(name, child, data_dir, seed, base), daemon=True)
        process.start()
        child.close()
        try:
            _, shape = parent.recv()
        except EOFError:
            process.join(5)
            raise SystemExit(
                f"train_speed: the {name} worker died during setup (exit code {process.exitcode})"
            ) from None
        workers[name] = Worker(name, process, parent)
    return workers, shape


def environment_lines(argv: Sequence[str], described: dict[str, dict[str, str]]) -> list[str]:
    command = shlex.join(["python", "bench/train_speed.py", *argv])
    cpu = next(
        (line.split(":", 1)[1].strip() for line in _cpuinfo() if "model name" in line),
        platform.processor() or "?",
    )
    env = "  ".join(
        f"{k}={os.environ.get(k, '(unset)')}"
        for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS")
    )
    return [
        f"command: {command}",
        f"Python {platform.python_version()}  "
        + "  ".join(described[name]["version"] for name in FRAMEWORKS),
        f"machine: {os.cpu_count()} CPUs ({cpu}), {platform.machine()}",
        f"BLAS: {_blas_summary()}",
        f"env: {env}",
    ]


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def _blas_summary() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    for lib in threadpool_info():
        if lib.get("user_api") == "blas" and "numpy" in lib.get("filepath", ""):
            return (
                f"numpy -> {lib['internal_api']} {lib['version']} "
                f"({lib.get('architecture', '?')} kernels, {lib['num_threads']} threads)"
            )
    return "numpy's BLAS not found by threadpoolctl"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench/train_speed.py", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", required=True, help="directory with the four MNIST IDX files (.gz or not)"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=3,
        help="epochs of one training run; models restart from fresh weights after this many (default 3)",
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="rounds of one epoch per framework (default: 2 x epochs)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="DIR",
        help="also time this package's epoch from another checkout in DIR (e.g. a git archive of "
        "the commit before a change): a before and after in the same rounds",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    rounds = args.rounds if args.rounds is not None else 2 * args.epochs
    if args.epochs < 1 or rounds < 1:
        print("train_speed: --epochs and --rounds must be at least 1", file=sys.stderr)
        return 2
    if not Path(args.data_dir).is_dir():
        print(f"train_speed: --data-dir {args.data_dir} is not a directory", file=sys.stderr)
        return 2

    if args.baseline is not None and not (Path(args.baseline) / "training" / "trainer.py").is_file():
        print(f"train_speed: --baseline {args.baseline} has no training/trainer.py", file=sys.stderr)
        return 2
    missing = [module for module in ("torch", "sklearn") if importlib.util.find_spec(module) is None]
    if missing:
        print(
            f"train_speed: {' and '.join(missing)} not installed; install the bench extra: "
            "pip install -e '.[bench]' (torch==2.13.0 is the CPU wheel)",
            file=sys.stderr,
        )
        return 2
    names = FRAMEWORKS + (("before",) if args.baseline is not None else ())
    print(f"starting one worker each for {', '.join(names)} ...", flush=True)
    workers, (n_rows, d, c) = start_workers(args.data_dir, args.seed, names, args.baseline)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    cpu_seconds: dict[str, list[float]] = {name: [] for name in names}
    bounds: list[dict[str, float]] = []
    try:
        for r in range(rounds):
            if r > 0 and r % args.epochs == 0:
                for w in workers.values():
                    w.ask("reset")
            k = r % len(names)
            order = names[k:] + names[:k]
            for name in order:
                wall, cpu = workers[name].ask("epoch")
                seconds[name].append(wall)
                cpu_seconds[name].append(cpu)
            bounds.append(workers["numpy"].ask("bound"))
            print(
                f"round {r + 1}/{rounds}: "
                + "  ".join(f"{name} {seconds[name][-1]:.3f}s" for name in order)
                + f"  GEMMs alone {_bound_seconds(bounds[-1]):.3f}s",
                flush=True,
            )
        quality = {name: w.ask("evaluate") for name, w in workers.items()}
        described = {name: w.ask("describe") for name, w in workers.items()}
    finally:
        for w in workers.values():
            with contextlib.suppress(OSError):
                w.conn.send("stop")
            w.process.join(10)

    epochs_trained = (rounds - 1) % args.epochs + 1
    lines, passed = report(seconds, bounds, quality, described, epochs_trained, n_rows, d, c)
    lines += cpu_report(cpu_seconds, bounds)
    print()
    print(
        "\n".join(
            [
                f"Training speed: {d}-{HIDDEN}-{c} (sigmoid; softmax + cross-entropy), SGD lr "
                f"{LEARNING_RATE}, batch {BATCH}, {DTYPE}",
                *environment_lines(argv, described),
                f"data: {n_rows} x {d}, {-(-n_rows // BATCH)} steps per epoch; rounds: {rounds} (one epoch "
                f"of each framework, order rotating); fresh weights every {args.epochs} epoch(s)",
                "",
                *lines,
            ]
        )
    )
    return 1 if args.check and not passed else 0


def _bound_seconds(bound: dict[str, float]) -> float:
    return min(v for k, v in bound.items() if k.startswith("gemm_"))


def cpu_report(cpu_seconds: dict[str, list[float]], bounds: list[dict[str, float]]) -> list[str]:
    """The package's epoch against the one-thread GEMMs in CPU seconds: both run BLAS on one
    thread, so their CPU time is their work, whatever else the machine runs (reference only;
    the target is on wall-clock time)."""
    cpu_bound = [b["cpu_gemm_1thread"] for b in bounds if "cpu_gemm_1thread" in b]
    if not cpu_bound:
        return []
    bound = statistics.median(cpu_bound)
    lines = [f"CPU seconds: one-thread GEMMs alone {bound:.3f}"]
    for name in ("numpy", "before"):
        if name in cpu_seconds:
            epoch = statistics.median(cpu_seconds[name])
            lines.append(f"CPU seconds: {LABELS[name]} {epoch:.3f}, / one-thread bound {epoch / bound:.2f}")
    return lines


def report(
    seconds: dict[str, list[float]],
    bounds: list[dict[str, float]],
    quality: dict[str, dict[str, float]],
    described: dict[str, dict[str, str]],
    epochs_trained: int,
    n_rows: int,
    d: int,
    c: int,
) -> tuple[list[str], bool]:
    """The table of medians and ratios, and whether both targets pass."""
    median = {name: statistics.median(s) for name, s in seconds.items()}
    flops = epoch_flops(n_rows, d, c)
    bound = statistics.median(_bound_seconds(b) for b in bounds)
    gemm_default = statistics.median(b["gemm_default"] for b in bounds)
    gemm_1thread = [b["gemm_1thread"] for b in bounds if "gemm_1thread" in b]
    square = statistics.median(b["square_flops"] for b in bounds)

    head = (
        f"{'':14s} {'s/epoch':>8s} {'min':>7s} {'max':>7s}  {'BLAS threads':34s} "
        f"{'dtype':8s} {'train loss':>10s} {'test acc':>8s}"
    )
    lines = [
        f"median of {len(bounds)} epoch(s) each; loss and accuracy after {epochs_trained} epoch(s)",
        head,
    ]
    for name in seconds:
        s, q, info = seconds[name], quality[name], described[name]
        lines.append(
            f"{LABELS[name]:14s} {median[name]:8.3f} {min(s):7.3f} {max(s):7.3f}  "
            f"{info['threads']:34s} {info['dtype']:8s} {q['train_loss']:10.4f} "
            f"{q['test_accuracy']:8.4f}"
        )
    lines.append(
        f"{'GEMMs alone':14s} {bound:8.3f} "
        f"{min(_bound_seconds(b) for b in bounds):7.3f} "
        f"{max(_bound_seconds(b) for b in bounds):7.3f}  the bound (see below)"
    )
    lines += [
        "",
        f"FLOPs per epoch: {flops / 1e9:.2f} GFLOP (per step: x@W1, z1@W2, z1.T@da2, da2@W2.T, "
        f"x.T@da1; 2*m*k*n each)",
        f"GEMM rate at the epoch's shapes: {flops / gemm_default / 1e9:.1f} GFLOP/s at numpy's "
        f"default threads"
        + (f", {flops / statistics.median(gemm_1thread) / 1e9:.1f} at 1 thread" if gemm_1thread else "")
        + f" -> bound {bound:.3f} s/epoch (the faster, median over rounds)",
        f"GEMM rate, {SQUARE_N}x{SQUARE_N} square: {square / 1e9:.1f} GFLOP/s -> "
        f"{flops / square:.3f} s/epoch (reference only: these shapes cannot reach it)",
        "",
    ]
    paired = statistics.median(a / b for a, b in zip(seconds["numpy"], seconds["torch"], strict=True))
    vs_torch = median["numpy"] / median["torch"]
    vs_bound = median["numpy"] / bound
    vs_sklearn = median["numpy"] / median["sklearn"]
    ok_torch, ok_bound = vs_torch <= TARGET_VS_TORCH, vs_bound <= TARGET_VS_BOUND
    lines += [
        f"this package / PyTorch      {vs_torch:5.2f}   target <= {TARGET_VS_TORCH:.2f}  "
        f"{verdict(ok_torch)}   (median of per-round ratios {paired:.2f})",
        f"this package / bound        {vs_bound:5.2f}   target <= {TARGET_VS_BOUND:.2f}  {verdict(ok_bound)}",
        f"this package / scikit-learn {vs_sklearn:5.2f}",
        f"this package / square bound {median['numpy'] / (flops / square):5.2f}   (reference)",
    ]
    if "before" in seconds:
        before = median["before"] / bound
        paired_before = statistics.median(
            a / b for a, b in zip(seconds["numpy"], seconds["before"], strict=True)
        )
        lines += [
            f"before / bound              {before:5.2f}   (--baseline: the same loop from that checkout)",
            f"this package / before       {median['numpy'] / median['before']:5.2f}   "
            f"(median of per-round ratios {paired_before:.2f})",
        ]
    return lines, ok_torch and ok_bound


if __name__ == "__main__":
    raise SystemExit(main())
