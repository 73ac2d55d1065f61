"""Command line: ``python -m training train|evaluate|gradcheck`` (console script ``digits-train``).

Every failure the user can fix ends with one line on stderr saying what is wrong and how to fix
it, and a non-zero exit status: 2 for bad input, 1 for a failed gradient check, 130/143 when
training is interrupted by Ctrl-C/SIGTERM (a checkpoint is left for ``--resume``).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from training.datasets import (
    DATASETS,
    PIXEL_PREPROCESSING,
    DataError,
    Dataset,
    as_training_arrays,
    load_dataset,
)
from training.export import (
    ModelFormatError,
    check_publish_target,
    load_model,
    publish_model,
    save_model,
)
from training.fileio import atomic_write_bytes
from training.nets import LOSSES, WEIGHT_INITS, TwoLayerNet, gradient_relative_errors
from training.trainer import (
    DTYPES,
    SAMPLINGS,
    SCHEDULES,
    Callbacks,
    EpochRecord,
    TrainConfig,
    TrainData,
    TrainState,
    evaluate,
    run,
    steps_per_epoch,
)

#: Relative error (||a - n|| / (||a|| + ||n||)) below which analytic and numerical gradients agree.
GRADCHECK_TOLERANCE = 1e-6
#: Refresh the progress bar's loss every this many steps (keeps the loop's overhead negligible).
PROGRESS_EVERY = 25
#: The history's name beside ``model.npz`` in a version directory written by ``--publish``.
PUBLISHED_HISTORY = "history.json"


class UsageError(Exception):
    """A problem the user fixes by changing the command; printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,evaluate,gradcheck}")
    defaults = TrainConfig()

    train = sub.add_parser("train", help="train a TwoLayerNet with mini-batch SGD and export .npz")
    _add_data_args(train)
    train.add_argument("--epochs", type=int, default=defaults.epochs)
    train.add_argument("--hidden-size", type=int, default=defaults.hidden_size)
    train.add_argument("--batch-size", type=int, default=defaults.batch_size)
    train.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    train.add_argument(
        "--lr-schedule",
        choices=SCHEDULES,
        default=defaults.lr_schedule,
        help="constant, or linear/cosine decay to 0 over the run",
    )
    train.add_argument("--loss", choices=LOSSES, default=defaults.loss)
    train.add_argument(
        "--weight-init",
        default=defaults.weight_init,
        help=f"standard deviation of the initial weights, or one of {', '.join(WEIGHT_INITS)}",
    )
    train.add_argument("--dtype", choices=DTYPES, default=defaults.dtype)
    train.add_argument(
        "--sampling",
        choices=SAMPLINGS,
        default=defaults.sampling,
        help="shuffle: a new permutation each epoch (default); random: the "
        "textbook's mini-batches drawn with replacement",
    )
    train.add_argument("--seed", type=int, default=defaults.seed)
    train.add_argument(
        "--output",
        type=Path,
        default=None,
        help="model file to write (default: DATASET.npz in the current directory)",
    )
    train.add_argument(
        "--publish",
        type=Path,
        default=None,
        metavar="MODEL_DIR/NAME",
        help="instead of --output: write the model as the next version MODEL_DIR/NAME/<N>/model.npz "
        "(with history.json beside it), all at once, for the service to pick up",
    )
    train.add_argument(
        "--history",
        type=Path,
        default=None,
        help="per-epoch metrics as JSON (default: beside --output, .history.json; "
        "with --publish, history.json in the version directory)",
    )
    train.add_argument("--plot", type=Path, default=None, help="also write a learning-curve PNG")
    train.add_argument(
        "--resume",
        nargs="?",
        type=Path,
        const=True,
        default=None,
        metavar="CHECKPOINT",
        help="continue an interrupted run (default checkpoint: OUTPUT with suffix .ckpt)",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")

    ev = sub.add_parser("evaluate", help="loss and accuracy of a model file on a dataset")
    ev.add_argument("--model", type=Path, required=True)
    _add_data_args(ev, dataset_default=None)
    ev.add_argument("--split", choices=("test", "train"), default="test")
    ev.add_argument("--json", action="store_true", help="print the result as JSON")

    gc = sub.add_parser("gradcheck", help="compare backprop with numerical gradients")
    gc.add_argument("--loss", choices=(*LOSSES, "all"), default="all")
    gc.add_argument("--input-size", type=int, default=20)
    gc.add_argument("--hidden-size", type=int, default=10)
    gc.add_argument("--output-size", type=int, default=10)
    gc.add_argument("--batch-size", type=int, default=5)
    gc.add_argument("--seed", type=int, default=0)
    return parser


def _add_data_args(p: argparse.ArgumentParser, dataset_default: str | None = "mnist") -> None:
    p.add_argument(
        "--dataset",
        choices=sorted(DATASETS),
        default=dataset_default,
        help="which data set" + ("" if dataset_default else " (default: the model's)"),
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="directory holding the four IDX files (otherwise: installed package, "
        "cache, or download from the official mirrors)",
    )
    p.add_argument("--no-download", action="store_true", help="never download")


def _load_dataset(name: str, args: argparse.Namespace, *, progress: bool) -> Dataset:
    """The dataset from ``--data-dir``, the package, the cache or a download (``--no-download``)."""
    # bandit's B615 takes every `datasets.load_dataset` for Hugging Face's, which can fetch an
    # unpinned revision; ours reads named files and checks every download against a fixed SHA-256
    return load_dataset(name, args.data_dir, download=not args.no_download, progress=progress)  # nosec B615


#: Imported lazily by the commands, installed by the train extra (not by the serving install)
TRAIN_EXTRA_MODULES = frozenset({"tqdm", "pooch", "requests", "platformdirs"})


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "evaluate":
            return _evaluate(args)
        return _gradcheck(args)
    except (UsageError, ValueError, DataError, ModelFormatError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if exc.name not in TRAIN_EXTRA_MODULES:
            raise
        print(
            f"error: {exc.name} is not installed: the training CLI needs the train extra: "
            "pip install 'digits-serving[train]' (`make test` installs it; `make serve` does not)",
            file=sys.stderr,
        )
        return 2
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2


def main_entry() -> None:
    """Console-script entry point."""
    raise SystemExit(main())


# --- train ---------------------------------------------------------------------------------
class _StopFlag:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum

    def __call__(self) -> bool:
        return self.signum is not None


def _train(args: argparse.Namespace) -> int:
    """Options -> config -> data -> ``run`` with the hooks below -> model, history and plot."""
    config = _train_config(args)
    if args.publish is not None:
        if args.output is not None:
            raise UsageError("--output and --publish both say where the model goes; give one")
        # checked now, not after an hour of training; publish_model checks again when it writes
        publish: Path | None = check_publish_target(args.publish)
        output = args.publish.parent / (args.publish.name + ".npz")  # names the checkpoint only
    else:
        publish = None
        output = args.output or Path(f"{args.dataset}.npz")
    history_path: Path | None = args.history or (None if publish else output.with_suffix(".history.json"))
    checkpoint_path = args.resume if isinstance(args.resume, Path) else output.with_suffix(".ckpt")
    if args.plot is not None:
        _require_matplotlib()

    ds = _load_dataset(args.dataset, args, progress=not args.no_progress)
    data = _train_data(ds, np.dtype(config.dtype))
    data_id = {"name": ds.name, "sha256": {name: f["sha256"] for name, f in sorted(ds.files.items())}}
    resume_from = None
    if args.resume is not None:
        resume_from = load_checkpoint(checkpoint_path, config, data_id)
        print(f"resuming {checkpoint_path} at epoch {resume_from.epoch + 1}, step {resume_from.step}")
    per_epoch = steps_per_epoch(data.x_train.shape[0], config)
    print(
        f"training {ds.name}: {data.x_train.shape[0]} train / {data.x_test.shape[0]} test images, "
        f"784-{config.hidden_size}-{data.num_classes}, {per_epoch} steps per epoch"
    )

    progress = _EpochProgress(config.epochs, per_epoch, enabled=not args.no_progress)

    def print_epoch(record: EpochRecord) -> None:
        print(
            f"epoch {record['epoch']:>3}/{config.epochs}  "
            f"train loss {record['train_loss']:.4f} acc {record['train_accuracy']:.4f}  "
            f"test loss {record['test_loss']:.4f} acc {record['test_accuracy']:.4f}  "
            f"({record['seconds']:.1f}s)",
            flush=True,
        )

    def save_state(state: TrainState) -> None:
        save_checkpoint(checkpoint_path, state, config, data_id)

    with _StopFlag() as stop:
        callbacks = Callbacks(
            on_epoch_start=progress.start,
            on_step=progress.step if progress.shown else None,  # the loss only for the bar
            should_stop=stop,
            on_epoch_end=progress.close,
            on_epoch=print_epoch,
            on_checkpoint=save_state,
        )
        result = run(config, data, callbacks, resume_from=resume_from)
    state = result.state
    if result.stopped:
        print(
            f"interrupted at epoch {state.epoch + 1}, step {state.step}/{per_epoch}; "
            f"checkpoint saved to {checkpoint_path}; continue with the same command plus --resume",
            file=sys.stderr,
        )
        return 128 + (stop.signum or signal.SIGINT)

    written = _export(output, publish, history_path, ds, config, state)
    checkpoint_path.unlink(missing_ok=True)
    print(f"wrote {written[0]} (test accuracy {state.history[-1]['test_accuracy']:.4f}) and {written[1]}")
    if args.plot is not None:
        from training.plots import plot_learning_curve

        plot_learning_curve(state.history, args.plot, title=f"{ds.name}: {config.hidden_size} hidden")
        print(f"wrote {args.plot}")
    return 0


def _train_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        hidden_size=args.hidden_size,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        epochs=args.epochs,
        loss=args.loss,
        weight_init=args.weight_init,
        dtype=args.dtype,
        seed=args.seed,
        sampling=args.sampling,
        lr_schedule=args.lr_schedule,
    )


def _train_data(ds: Dataset, dtype: np.dtype) -> TrainData:
    """Pixels (N, 28, 28) uint8 -> (N, 784) floats in [0, 1]; labels -> intp, for indexing."""
    return TrainData(
        x_train=as_training_arrays(ds.x_train, dtype),
        t_train=ds.t_train.astype(np.intp),
        x_test=as_training_arrays(ds.x_test, dtype),
        t_test=ds.t_test.astype(np.intp),
        num_classes=len(ds.class_names),
    )


class _EpochProgress:
    """A progress bar per epoch on stderr, showing the mean loss of the last PROGRESS_EVERY steps."""

    def __init__(self, epochs: int, per_epoch: int, *, enabled: bool) -> None:
        self.epochs = epochs
        self.per_epoch = per_epoch
        #: shown on a terminal only; without one, tqdm is not even imported (a tenth of a second)
        self.shown = enabled and sys.stderr.isatty()
        self._bar: Any = None
        self._losses: list[float] = []

    def start(self, epoch: int, step: int) -> None:
        self._losses.clear()
        if not self.shown:
            return
        from tqdm import tqdm

        self._bar = tqdm(
            total=self.per_epoch,
            initial=step,
            desc=f"epoch {epoch}/{self.epochs}",
            unit="batch",
            leave=False,
            file=sys.stderr,
        )

    def step(self, step: int, loss: float) -> None:
        if self._bar is None:
            return
        self._losses.append(loss)
        if step % PROGRESS_EVERY == 0 or step == self.per_epoch:
            self._bar.set_postfix(loss=f"{sum(self._losses) / len(self._losses):.4f}", refresh=False)
            self._bar.update(len(self._losses))
            self._losses.clear()

    def close(self, epoch: int) -> None:
        if self._bar is not None:
            self._bar.close()


def _export(
    output: Path,
    publish: Path | None,
    history_path: Path | None,
    ds: Dataset,
    config: TrainConfig,
    state: TrainState,
) -> tuple[Path, Path]:
    """The model (weights + metadata) and its per-epoch history, each written atomically, at
    ``output``, or with ``publish`` as the next version in that directory (the history in the
    version directory unless ``history_path`` says otherwise). Returns the two paths."""
    final = state.history[-1]
    metadata = {
        "input_shape": list(ds.x_train.shape[1:]),
        "class_names": list(ds.class_names),
        "pixel_preprocessing": PIXEL_PREPROCESSING,
        "dataset": {"name": ds.name, "files": {n: f["sha256"] for n, f in sorted(ds.files.items())}},
        "training": {
            "config": config.to_dict(),
            "seed": config.seed,
            "epochs_completed": state.epoch,
            "training_seconds": round(state.seconds, 2),
        },
        "metrics": {k: final[k] for k in ("train_loss", "train_accuracy", "test_loss", "test_accuracy")},
    }
    history = json.dumps(
        {"config": config.to_dict(), "dataset": ds.name, "epochs": state.history}, indent=2
    ).encode()
    if publish is None:
        assert history_path is not None  # noqa: S101 - _train sets it whenever it writes a file
        save_model(output, state.net, metadata)
        atomic_write_bytes(history_path, history)
        return output, history_path
    if history_path is None:  # in the version directory, published with the model
        model_path = publish_model(state.net, metadata, publish, {PUBLISHED_HISTORY: history})
        return model_path, model_path.with_name(PUBLISHED_HISTORY)
    model_path = publish_model(state.net, metadata, publish)
    atomic_write_bytes(history_path, history)
    return model_path, history_path


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'digits-serving[plots]'") from None


# --- evaluate ------------------------------------------------------------------------------
def _evaluate(args: argparse.Namespace) -> int:
    model = load_model(args.model)
    name = args.dataset or model.metadata.get("dataset", {}).get("name")
    if name not in DATASETS:
        raise UsageError(
            f"{args.model}: the model names no known dataset; pass --dataset ({', '.join(sorted(DATASETS))})"
        )
    ds = _load_dataset(name, args, progress=False)
    images, labels = (ds.x_test, ds.t_test) if args.split == "test" else (ds.x_train, ds.t_train)
    net = model.network()
    x = as_training_arrays(images, net.dtype)
    if x.shape[1] != net.input_size:
        raise UsageError(
            f"{args.model}: expects {net.input_size} inputs but {name} images have {x.shape[1]} pixels"
        )
    if int(labels.max()) >= net.output_size:
        raise UsageError(f"{args.model}: has {net.output_size} classes but {name} has more")
    result = evaluate(net, x, labels.astype(np.intp))
    summary = {
        "model": str(args.model),
        "version": model.version,
        "dataset": name,
        "split": args.split,
        "count": int(x.shape[0]),
        **result,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{args.model} on {name} {args.split} ({x.shape[0]} images): "
            f"loss {result['loss']:.4f}, accuracy {result['accuracy']:.4f}"
        )
    return 0


# --- gradcheck -----------------------------------------------------------------------------
def _gradcheck(args: argparse.Namespace) -> int:
    for name in ("input_size", "hidden_size", "output_size", "batch_size"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1")
    rng = np.random.default_rng(args.seed)
    x = rng.random((args.batch_size, args.input_size))
    t = rng.integers(0, args.output_size, args.batch_size)
    worst = 0.0
    for loss_name in LOSSES if args.loss == "all" else (args.loss,):
        net = TwoLayerNet(
            args.input_size,
            args.hidden_size,
            args.output_size,
            weight_init_std=1.0,
            rng=rng,
            dtype=np.float64,
            loss_name=loss_name,
        )
        errors = gradient_relative_errors(net, x, t)
        worst = max(worst, *errors.values())
        print(f"{loss_name:<20} " + "  ".join(f"{k} {v:.2e}" for k, v in errors.items()))
    ok = worst < GRADCHECK_TOLERANCE
    print(
        f"{'ok' if ok else 'FAILED'}: largest relative error {worst:.2e} "
        f"(tolerance {GRADCHECK_TOLERANCE:.0e})"
    )
    return 0 if ok else 1
