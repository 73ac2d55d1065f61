"""Whole-process training time: ``python -m training train`` against the plain-numpy reference.

Both processes train from a cold start: start Python, read the four MNIST IDX files, train
784-100-10 (float32, batch 100, learning rate 0.1 constant, a fresh permutation every epoch,
Xavier-scaled initial weights, seed 0) for ``--epochs`` epochs and write the model. The
reference, ``bench/train_reference.py``, does only that and one final evaluation on the test set
(issue 18's baseline: "a plain numpy loop doing the same SGD with one final evaluation"). The
package does what ``train`` always does besides: training loss and accuracy as running means of
every step, the test set evaluated after every epoch, a checkpoint after every epoch but the
last, and the history file. The package's command is printed in the report. Neither draws a
progress bar or a plot.

    python bench/train_process.py --data-dir DIR [--epochs 5] [--rounds 5] [--baseline DIR] [--check]

Rounds are interleaved: each round starts every contestant once, one after the other, in an
order that rotates every round, so load from other processes hits all of them alike; the report
gives each one's median wall-clock and CPU seconds and the ratio of the medians (and the median
of the per-round ratios). ``--baseline DIR`` adds a third contestant: ``python -m training train``
run from another checkout (``DIR`` holds its ``training/`` package, e.g. a ``git archive`` of an
older commit), which gives a before-and-after in the same run. ``--check`` exits 1 when the
package misses the target (without it the script always exits 0: it is a report).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
#: Target from the tracker issues (13, then 18 against the SGD-only reference): the package's
#: whole process at most this many times the reference's.
TARGET_VS_REFERENCE = 1.1
#: The settings both sides train with.
SETTINGS = {"hidden-size": "100", "batch-size": "100", "learning-rate": "0.1", "seed": "0"}
PACKAGE_OPTIONS = ["--lr-schedule", "constant", "--dtype", "float32", "--sampling", "shuffle"]
PACKAGE_OPTIONS += ["--weight-init", "xavier", "--loss", "cross_entropy", "--no-progress"]
#: The package's last epoch line and the reference's final line both give the test loss and accuracy.
LAST_EPOCH = re.compile(r"epoch +(\d+)\b.* test loss ([\d.]+) acc ([\d.]+)")


@dataclass
class Contestant:
    name: str
    argv: list[str]
    cwd: Path
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    last_epoch: str = ""

    def run(self) -> None:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(self.argv, cwd=self.cwd, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise SystemExit(
                f"train_process: {self.name} failed (exit {done.returncode}):\n{done.stdout}{done.stderr}"
            )
        self.wall.append(wall)
        self.cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        lines = [m for line in done.stdout.splitlines() if (m := LAST_EPOCH.search(line))]
        if lines:
            e, vl, va = lines[-1].groups()
            self.last_epoch = f"after epoch {e}: test loss {vl} acc {va}"


def contestants(args: argparse.Namespace, out: Path) -> list[Contestant]:
    python = sys.executable
    common = ["--data-dir", str(Path(args.data_dir).resolve()), "--epochs", str(args.epochs)]
    common += [a for k, v in SETTINGS.items() for a in (f"--{k}", v)]
    result = [
        Contestant(
            "package",
            [python, "-m", "training", "train", *common, *PACKAGE_OPTIONS, "--output", str(out / "p.npz")],
            REPO,
        ),
        Contestant(
            "reference",
            [python, str(HERE / "train_reference.py"), *common, "--output", str(out / "r.npz")],
            REPO,
        ),
    ]
    if args.baseline is not None:
        base = Path(args.baseline).resolve()
        argv = [python, "-m", "training", "train", *common, *PACKAGE_OPTIONS, "--output", str(out / "b.npz")]
        result.append(Contestant("baseline", argv, base))  # python -m puts the cwd first on sys.path
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench/train_process.py", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="directory with the four MNIST IDX files")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5, help="runs of each contestant (default 5)")
    parser.add_argument(
        "--baseline", default=None, metavar="DIR", help="also run `python -m training train` from DIR"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if the target is missed")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.epochs < 1 or args.rounds < 1:
        print("train_process: --epochs and --rounds must be at least 1", file=sys.stderr)
        return 2
    if not Path(args.data_dir).is_dir():
        print(f"train_process: --data-dir {args.data_dir} is not a directory", file=sys.stderr)
        return 2
    if args.baseline is not None and not (Path(args.baseline) / "training" / "cli.py").is_file():
        print(f"train_process: --baseline {args.baseline} has no training/cli.py", file=sys.stderr)
        return 2

    # Byte-compile the package first (an installed package has its .pyc files; with
    # PYTHONDONTWRITEBYTECODE set, as in some shells and CI, every run would compile its 12
    # modules from source, 20-40 ms). Python reads .pyc files whatever that variable says.
    # The reference is one script, compiled on every run as any script run as __main__ is.
    packages = [REPO / "training"] + ([Path(args.baseline) / "training"] if args.baseline else [])
    for package in packages:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True)

    with tempfile.TemporaryDirectory(prefix="train-process-") as tmp:
        runners = contestants(args, Path(tmp))
        for r in range(args.rounds):
            k = r % len(runners)
            order = runners[k:] + runners[:k]
            for c in order:
                c.run()
            print(
                f"round {r + 1}/{args.rounds}: "
                + "  ".join(f"{c.name} {c.wall[-1]:.3f}s ({c.cpu[-1]:.3f}s CPU)" for c in order),
                flush=True,
            )
    lines, passed = report(runners)
    package = runners[0]
    print()
    print(f"command: {shlex.join(['python', 'bench/train_process.py', *argv])}")
    print(f"package: {shlex.join(['python', *package.argv[1:]])}")
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load average {_load()}")
    print(
        "env: "
        + "  ".join(
            f"{k}={os.environ.get(k, '(unset)')}" for k in ("PYTHONDONTWRITEBYTECODE", "OPENBLAS_NUM_THREADS")
        )
        + "  (training/ byte-compiled before the rounds)"
    )
    print("\n".join(lines))
    return 1 if args.check and not passed else 0


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def report(runners: list[Contestant]) -> tuple[list[str], bool]:
    rounds = len(runners[0].wall)
    lines = [
        f"median of {rounds} run(s) each, whole process (start-up, data, training, evaluation, files)",
        f"{'':10s} {'wall s':>7s} {'min':>7s} {'max':>7s} {'CPU s':>7s}  last epoch",
    ]
    for c in runners:
        lines.append(
            f"{c.name:10s} {statistics.median(c.wall):7.3f} {min(c.wall):7.3f} {max(c.wall):7.3f} "
            f"{statistics.median(c.cpu):7.3f}  {c.last_epoch}"
        )
    package, reference = runners[0], runners[1]

    def ratio(a: Contestant, b: Contestant) -> tuple[float, float, float]:
        paired = statistics.median(x / y for x, y in zip(a.wall, b.wall, strict=True))
        return (
            statistics.median(a.wall) / statistics.median(b.wall),
            paired,
            statistics.median(a.cpu) / statistics.median(b.cpu),
        )

    vs, paired, cpu = ratio(package, reference)
    ok = vs <= TARGET_VS_REFERENCE
    lines += [
        "",
        f"package / reference   {vs:5.2f}   target <= {TARGET_VS_REFERENCE:.2f}  {'PASS' if ok else 'FAIL'}"
        f"   (median of per-round ratios {paired:.2f}; CPU time {cpu:.2f})",
    ]
    if len(runners) > 2:
        vs_b, paired_b, cpu_b = ratio(runners[2], reference)
        lines.append(
            f"baseline / reference  {vs_b:5.2f}   "
            f"(median of per-round ratios {paired_b:.2f}; CPU time {cpu_b:.2f})"
        )
    return lines, ok


if __name__ == "__main__":
    raise SystemExit(main())
