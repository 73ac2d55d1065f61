"""Command line: ``python -m training train|evaluate|gradcheck`` (console script ``digits-train``).

Every failure the user can fix ends with one line on stderr saying what is wrong and how to fix
it, and a non-zero exit status: 2 for bad input, 1 for a failed gradient check, 130/143 when
training is interrupted by Ctrl-C/SIGTERM (a checkpoint is left for ``--resume``). 3 is no
failure: ``--publish-if-better`` kept the served model (``NOT_PUBLISHED``).
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

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
    VERSION_FILE,
    ModelFile,
    ModelFormatError,
    check_publish_target,
    is_version_name,
    load_model,
    publish_model,
    save_model,
)
from training.fileio import atomic_write_bytes
from training.gate import OWN_TOLERANCE, REPLAY_TOLERANCE, HeldOut, compare
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

# training.imagefolder is imported where a folder is read: it brings in Pillow (training/images.py),
# 0.1-0.2 s of start-up that training on a built-in set does not need (bench/train_process.py)
if TYPE_CHECKING:
    from training.imagefolder import ImageFolder

#: Relative error (||a - n|| / (||a|| + ||n||)) below which analytic and numerical gradients agree.
GRADCHECK_TOLERANCE = 1e-6
#: Refresh the progress bar's loss every this many steps (keeps the loop's overhead negligible).
PROGRESS_EVERY = 25
#: The history's name beside ``model.npz`` in a version directory written by ``--publish``.
PUBLISHED_HISTORY = "history.json"
#: Exit status when ``--publish-if-better`` keeps the served model: the run worked and decided not
#: to publish, which is neither success (0: published) nor an error (1, 2). Distinct, so a script
#: can tell; the CronJob maps it to 0 (``tini -e 3``), so a night that keeps the model is no
#: failed Job (deploy/finetune/).
NOT_PUBLISHED = 3


class UsageError(Exception):
    """A problem the user fixes by changing the command; printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,evaluate,gradcheck}")
    defaults = TrainConfig()

    train = sub.add_parser("train", help="train a TwoLayerNet with mini-batch SGD and export .npz")
    _add_data_args(train, dataset_default=None, dataset_help="built-in data set to train on (default: mnist)")
    images = train.add_argument_group("your own images (see README: Train on your own images)")
    images.add_argument(
        "--images",
        type=Path,
        default=None,
        metavar="DIR",
        help="train on DIR/<class name>/<image> (PNG, JPEG, GIF, BMP, WebP), each read as the "
        "service reads an upload",
    )
    images.add_argument(
        "--init-from",
        type=Path,
        default=None,
        metavar="PATH",
        help="start from this model's weights and classes: a .npz, MODEL_DIR/NAME (its newest "
        "version) or MODEL_DIR/NAME.npz",
    )
    images.add_argument(
        "--replay",
        choices=sorted(DATASETS),
        default=None,
        metavar="DATASET",
        help="mix this built-in training set into every epoch (found as --dataset finds it), so "
        "that fine-tuning does not forget it",
    )
    images.add_argument(
        "--replay-ratio",
        type=float,
        default=DEFAULT_REPLAY_RATIO,
        help=f"replay examples per own example in each epoch (default {DEFAULT_REPLAY_RATIO:g})",
    )
    images.add_argument(
        "--validation-split",
        type=float,
        default=None,
        metavar="F",
        help="hold out this fraction of each class (seeded) to report on every epoch "
        f"(default with --images: {DEFAULT_VALIDATION_SPLIT:g} when every class has "
        f"{MIN_CLASS_SIZE_TO_HOLD_OUT} or more images, else 0)",
    )
    images.add_argument(
        "--validation-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="held-out images, laid out like --images",
    )
    images.add_argument(
        "--early-stopping",
        type=int,
        default=0,
        metavar="N",
        help="stop after N epochs without a lower held-out loss, keeping the best epoch's weights",
    )
    images.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="small random shifts, rotations, scalings, shears and stroke widths per batch "
        "(default: on with --images, off for the built-in sets)",
    )
    train.add_argument(
        "--full-metrics",
        action="store_true",
        help="recompute the training loss and accuracy over the whole training set after every "
        "epoch (default: running means over the epoch's steps, which cost nothing)",
    )
    train.add_argument(
        "--epochs", type=int, default=None, help=f"default {defaults.epochs}; {FINETUNE.epochs} with --images"
    )
    train.add_argument("--hidden-size", type=int, default=None, help=f"default {defaults.hidden_size}")
    train.add_argument("--batch-size", type=int, default=defaults.batch_size)
    train.add_argument(
        "--learning-rate",
        type=float,
        default=None,
        help=f"default {defaults.learning_rate:g}; {FINETUNE.learning_rate:g} with --init-from",
    )
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
        "--publish-if-better",
        action="store_true",
        help="with --publish: publish only if the new model is at least as good on held-out data as "
        "the newest version of NAME (or the --init-from model); else exit 3, publishing nothing",
    )
    train.add_argument(
        "--force",
        action="store_true",
        help="with --publish-if-better: publish even if the gate says no (its figures are recorded)",
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
    ev.add_argument(
        "--images", type=Path, default=None, metavar="DIR", help="evaluate on an image folder instead"
    )
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


def _add_data_args(
    p: argparse.ArgumentParser, dataset_default: str | None = "mnist", dataset_help: str | None = None
) -> None:
    p.add_argument(
        "--dataset",
        choices=sorted(DATASETS),
        default=dataset_default,
        help=dataset_help or "which data set" + ("" if dataset_default else " (default: the model's)"),
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


@dataclass
class _Prepared:
    """What ``_train`` trains on, and what the exported model says about it."""

    data: TrainData
    data_id: dict[str, Any]  # identifies the data for a checkpoint
    class_names: list[str]
    description: dict[str, Any]  # the metadata's "dataset"
    summary: str  # the "training ..." line
    initial: TwoLayerNet | None = None
    image_style: str | None = None


def _train(args: argparse.Namespace) -> int:
    """Options -> config -> data -> ``run`` with the hooks below -> model, history and plot."""
    if args.images is None:
        for flag in ("init_from", "replay", "validation_dir"):
            if getattr(args, flag) is not None:
                raise UsageError(f"--{flag.replace('_', '-')} goes with --images DIR; add it")
    elif args.dataset is not None:
        raise UsageError(
            "--dataset and --images both say what to train on; give one (--replay mixes in a dataset)"
        )
    init = _load_init_model(args.init_from) if args.init_from is not None else None
    config = _train_config(args, init)
    if args.publish is not None:
        if args.output is not None:
            raise UsageError("--output and --publish both say where the model goes; give one")
        # checked now, not after an hour of training; publish_model checks again when it writes
        publish: Path | None = check_publish_target(args.publish)
        output = args.publish.parent / (args.publish.name + ".npz")  # names the checkpoint only
    else:
        if args.publish_if_better:
            raise UsageError("--publish-if-better gates --publish MODEL_DIR/NAME; add it")
        publish = None
        default_name = args.dataset or "mnist" if args.images is None else args.images.resolve().name
        output = args.output or Path(f"{default_name}.npz")
    if args.force and not args.publish_if_better:
        raise UsageError(
            "--force overrides --publish-if-better; without that flag --publish always publishes"
        )
    baseline = _gate_baseline(publish, init) if args.publish_if_better else None
    history_path: Path | None = args.history or (None if publish else output.with_suffix(".history.json"))
    checkpoint_path = args.resume if isinstance(args.resume, Path) else output.with_suffix(".ckpt")
    if args.plot is not None:
        _require_matplotlib()

    prepared = _builtin_data(args, config) if args.images is None else _image_data(args, config, init)
    data = prepared.data
    held_out = _gate_sets(args, data, baseline, prepared.class_names) if args.publish_if_better else []
    resume_from = None
    if args.resume is not None:
        resume_from = load_checkpoint(checkpoint_path, config, prepared.data_id)
        print(f"resuming {checkpoint_path} at epoch {resume_from.epoch + 1}, step {resume_from.step}")
    per_epoch = steps_per_epoch(data.epoch_size(config), config)
    print(
        f"training {prepared.summary}, 784-{config.hidden_size}-{data.num_classes}, "
        f"{per_epoch} steps per epoch"
    )

    progress = _EpochProgress(config.epochs, per_epoch, enabled=not args.no_progress)
    sets = [name for name, _, _ in data.splits()]

    def print_epoch(record: EpochRecord) -> None:
        shown = "  ".join(
            f"{name} loss {record[f'{name}_loss']:.4f} acc {record[f'{name}_accuracy']:.4f}"
            for name in ("train", *sets)
        )
        print(f"epoch {record['epoch']:>3}/{config.epochs}  {shown}  ({record['seconds']:.1f}s)", flush=True)

    def save_state(state: TrainState) -> None:
        save_checkpoint(checkpoint_path, state, config, prepared.data_id)

    with _StopFlag() as stop:
        callbacks = Callbacks(
            on_epoch_start=progress.start,
            on_step=progress.step if progress.shown else None,  # the loss only for the bar
            should_stop=stop,
            on_epoch_end=progress.close,
            on_epoch=print_epoch,
            on_checkpoint=save_state,
        )
        result = run(
            config,
            data,
            callbacks,
            resume_from=resume_from,
            initial=prepared.initial,
            full_train_metrics=args.full_metrics,
        )
    state = result.state
    if result.stopped:
        print(
            f"interrupted at epoch {state.epoch + 1}, step {state.step}/{per_epoch}; "
            f"checkpoint saved to {checkpoint_path}; continue with the same command plus --resume",
            file=sys.stderr,
        )
        return 128 + (stop.signum or signal.SIGINT)
    if result.stopped_early or (config.early_stopping and state.best_epoch):
        print(f"early stopping: kept epoch {state.best_epoch} (lowest held-out loss {state.best_loss:.4f})")

    gate = None
    if args.publish_if_better:
        gate = _gate(state, baseline, held_out, forced=args.force)
        if not gate["passed"] and not args.force:
            checkpoint_path.unlink(missing_ok=True)
            print(f"not published: {gate['reason']}; the served model stays (--force publishes anyway)")
            return NOT_PUBLISHED
    written = _export(output, publish, history_path, prepared, config, state, gate)
    checkpoint_path.unlink(missing_ok=True)
    final = _final_record(state)
    scores = ", ".join(f"{name} accuracy {final[f'{name}_accuracy']:.4f}" for name in sets)
    print(f"wrote {written[0]}{f' ({scores})' if scores else ''} and {written[1]}")
    if args.plot is not None:
        from training.plots import plot_learning_curve

        title = prepared.summary.split(":")[0]
        plot_learning_curve(state.history, args.plot, title=f"{title}: {config.hidden_size} hidden")
        print(f"wrote {args.plot}")
    return 0


#: Fine-tuning's recipe (``--images``), chosen by the measurements in the README ("Train on
#: your own images"): 300 UCI digits from mnist.npz with MNIST replayed, held-out UCI accuracy
#: 91.1% after 30 epochs at 0.1, 92.9% at 0.3, 94.1% after 100 epochs at 0.3 (94.3% after 300,
#: 94.2% at 1.0); 95.5% with training/augment.py's bolder strokes and every image trained on
#: (MIN_CLASS_SIZE_TO_HOLD_OUT). An epoch is a few hundred own images plus the replay draw, so
#: 100 epochs are about 4,700 steps: 26 s of CPU for the whole command on 2 cores.
FINETUNE = TrainConfig(epochs=100, learning_rate=0.3)
#: From scratch on --images (no --init-from): the built-in sets' step size.
SCRATCH_IMAGES_LEARNING_RATE = TrainConfig().learning_rate
#: Replay examples per own example per epoch. Measured at 100 epochs, lr 0.3 (held-out UCI /
#: MNIST test): ratio 1 92.7% / 96.69%, 2 93.7% / 97.16%, 4 94.1% / 97.54%, 8 93.7% / 97.71%
#: (shipped: 84.7% / 97.95%). Up to 4, more replay forgets less and, as a regulariser, also
#: generalises better to new writers.
DEFAULT_REPLAY_RATIO = 4.0
DEFAULT_VALIDATION_SPLIT = 0.1
#: ... but only when every class has at least this many images. With 30 a class, a tenth held
#: out is 3 images a class (one image moves the held-out accuracy by 3 points: noise, not a
#: measurement), and those 30 images are worth more as training data: held-out UCI accuracy
#: 95.0% with 27 a class, 95.5% with all 30 (seed 0; 94.9% / 95.3% with seed 1). Except behind
#: --publish-if-better: the gate must judge the new model on the source it is tuned for, so a
#: tenth is held out whatever the folder's size (coarse with 3 a class, but a measurement).
MIN_CLASS_SIZE_TO_HOLD_OUT = 100
#: The held-out split's own random stream, so that it does not shift the training's draws.
VALIDATION_STREAM = 1


def _train_config(args: argparse.Namespace, init: ModelFile | None) -> TrainConfig:
    defaults = TrainConfig() if args.images is None else FINETUNE
    hidden = args.hidden_size if args.hidden_size is not None else defaults.hidden_size
    if init is not None:
        hidden_init = int(init.params["W1"].shape[1])
        if args.hidden_size is not None and args.hidden_size != hidden_init:
            raise UsageError(
                f"--hidden-size {args.hidden_size}: {init.path} has {hidden_init} hidden units; "
                "leave --hidden-size out when fine-tuning"
            )
        hidden = hidden_init
    learning_rate = args.learning_rate
    if learning_rate is None:
        learning_rate = FINETUNE.learning_rate if init is not None else SCRATCH_IMAGES_LEARNING_RATE
        learning_rate = learning_rate if args.images is not None else defaults.learning_rate
    augment = args.augment if args.augment is not None else args.images is not None
    if args.early_stopping and args.images is None and args.validation_split is None:
        raise UsageError("--early-stopping needs held-out data: add --validation-split F")
    return TrainConfig(
        hidden_size=hidden,
        learning_rate=learning_rate,
        batch_size=args.batch_size,
        epochs=args.epochs if args.epochs is not None else defaults.epochs,
        loss=args.loss,
        weight_init=args.weight_init,
        dtype=args.dtype,
        seed=args.seed,
        sampling=args.sampling,
        lr_schedule=args.lr_schedule,
        augment=augment,
        replay_ratio=args.replay_ratio if args.replay is not None else 0.0,
        early_stopping=args.early_stopping,
    )


def _builtin_data(args: argparse.Namespace, config: TrainConfig) -> _Prepared:
    name = args.dataset or "mnist"
    ds = _load_dataset(name, args, progress=not args.no_progress)
    dtype = np.dtype(config.dtype)
    x, t = as_training_arrays(ds.x_train, dtype), ds.t_train.astype(np.intp)
    x_val = t_val = None
    if args.validation_split is not None:
        rng = np.random.default_rng((config.seed, VALIDATION_STREAM))
        from training.imagefolder import split_stratified

        keep, held = split_stratified(t, args.validation_split, rng)
        x, t, x_val, t_val = x[keep], t[keep], x[held], t[held]
    data = TrainData(
        x_train=x,
        t_train=t,
        x_test=as_training_arrays(ds.x_test, dtype),
        t_test=ds.t_test.astype(np.intp),
        num_classes=len(ds.class_names),
        x_val=x_val,
        t_val=t_val,
    )
    data_id: dict[str, Any] = {
        "name": ds.name,
        "sha256": {n: f["sha256"] for n, f in sorted(ds.files.items())},
    }
    if args.validation_split is not None:
        data_id["validation_split"] = args.validation_split
    held_out = f" ({t_val.shape[0]} held out)" if t_val is not None else ""
    return _Prepared(
        data=data,
        data_id=data_id,
        class_names=list(ds.class_names),
        description={"name": ds.name, "files": data_id["sha256"]},
        summary=f"{ds.name}: {t.shape[0]} train{held_out} / {ds.x_test.shape[0]} test images",
    )


def _load_init_model(path: Path) -> ModelFile:
    """``--init-from``: a model file, MODEL_DIR/NAME (newest version) or MODEL_DIR/NAME(.npz)."""
    if path.is_dir():
        versions = sorted(
            (int(e.name) for e in path.iterdir() if is_version_name(e.name) and (e / VERSION_FILE).is_file()),
        )
        if not versions:
            raise UsageError(
                f"--init-from {path}: a directory without versions ({path}/<N>/{VERSION_FILE}); "
                "give a model's .npz, MODEL_DIR/NAME or MODEL_DIR/NAME.npz"
            )
        path = path / str(versions[-1]) / VERSION_FILE
    elif not path.exists() and path.with_name(path.name + ".npz").is_file():
        path = path.with_name(path.name + ".npz")
    model = load_model(path)
    if math.prod(model.input_shape) != 28 * 28:
        raise UsageError(
            f"--init-from {path}: takes {math.prod(model.input_shape)} inputs; --images trains on "
            "28x28 images"
        )
    return model


def _image_data(args: argparse.Namespace, config: TrainConfig, init: ModelFile | None) -> _Prepared:
    """--images DIR (+ --init-from, --replay, held-out data) -> what ``run`` trains on."""
    from training.imagefolder import split_stratified

    replay = _load_dataset(args.replay, args, progress=not args.no_progress) if args.replay else None
    classes: list[str] | None = None
    style = "mnist"
    if init is not None:
        classes = init.class_names
        style = _image_style(init.metadata)
        if replay is not None and list(replay.class_names) != classes:
            raise UsageError(
                f"--replay {replay.name}: its classes ({', '.join(replay.class_names)}) are not the "
                f"classes of {init.path} ({', '.join(classes)}); replay the data set the model learnt"
            )
    elif replay is not None:
        classes = list(replay.class_names)
        style = "fashion-mnist" if replay.name == "fashion-mnist" else "mnist"
    own = _read_folder(args.images, classes, style, progress=not args.no_progress)
    class_names = list(own.class_names)
    present = sorted(set(own.t.tolist()))
    if len(present) < 2 and replay is None:
        raise UsageError(
            f"{own.root}: only one class ({class_names[present[0]]}); a classifier needs two or more "
            "class folders, or --init-from MODEL with --replay DATASET to keep its other classes"
        )
    dtype = np.dtype(config.dtype)
    x, t = own.x.astype(dtype, copy=False), own.t
    x_val = t_val = None
    held_out: dict[str, Any] = {}
    if args.validation_dir is not None:
        val = _read_folder(args.validation_dir, class_names, style, progress=not args.no_progress)
        x_val, t_val = val.x.astype(dtype, copy=False), val.t
        held_out = {"validation": val.describe()}
    else:
        fraction = args.validation_split
        if fraction is None:
            smallest = int(np.bincount(t)[present].min())
            # the evaluation gate judges on the new source, so it always holds a tenth out
            small = smallest < MIN_CLASS_SIZE_TO_HOLD_OUT and not args.publish_if_better
            fraction = 0.0 if small else DEFAULT_VALIDATION_SPLIT
            if fraction == 0:
                print(
                    f"{own.root}: training on every image (the smallest class has {smallest}, fewer "
                    f"than {MIN_CLASS_SIZE_TO_HOLD_OUT}); --validation-split F or --validation-dir DIR "
                    "holds some out"
                )
        if fraction > 0:
            rng = np.random.default_rng((config.seed, VALIDATION_STREAM))
            keep, held = split_stratified(t, fraction, rng)
            if held.size:
                x, t, x_val, t_val = x[keep], t[keep], x[held], t[held]
                held_out = {"validation_split": fraction, "validation_count": int(held.size)}
    if config.early_stopping and t_val is None:
        raise UsageError(
            "--early-stopping needs held-out data: a --validation-split above 0 or --validation-dir"
        )
    x_test = t_test = None
    replay_from = None
    description: dict[str, Any] = {"name": "images", "images": own.describe(), **held_out}
    data_id: dict[str, Any] = {"images": own.files_sha256, **held_out}
    if replay is not None:
        replay_from = x.shape[0]
        x = np.concatenate((x, as_training_arrays(replay.x_train, dtype)))
        t = np.concatenate((t, replay.t_train.astype(np.intp)))
        x_test, t_test = as_training_arrays(replay.x_test, dtype), replay.t_test.astype(np.intp)
        files = {n: f["sha256"] for n, f in sorted(replay.files.items())}
        description["replay"] = {"name": replay.name, "files": files, "ratio": config.replay_ratio}
        data_id["replay"] = {"name": replay.name, "sha256": files}
    if init is not None:
        description["init_from"] = {"path": str(init.path), "sha256": init.sha256}
        data_id["init_from"] = init.sha256
    data = TrainData(
        x_train=x,
        t_train=t,
        x_test=x_test,
        t_test=t_test,
        num_classes=len(class_names),
        x_val=x_val,
        t_val=t_val,
        replay_from=replay_from,
    )
    n_own = data.n_own
    parts = [f"{own.root}: {n_own} images of {len(present)} classes"]
    if t_val is not None:
        parts.append(f"{t_val.shape[0]} held out")
    if replay is not None:
        drawn = data.epoch_size(config) - n_own
        parts.append(f"+ {drawn} {replay.name} per epoch (test: {replay.name})")
    if init is not None:
        parts.append(f"from {init.path}")
    return _Prepared(
        data=data,
        data_id=data_id,
        class_names=class_names,
        description=description,
        summary=", ".join(parts),
        initial=init.network() if init is not None else None,
        image_style=style,
    )


def _read_folder(root: Path, classes: list[str] | None, style: str, *, progress: bool) -> ImageFolder:
    """An image folder with a progress bar (on a terminal), its skipped files warned about."""
    from training.imagefolder import load_image_folder, print_skipped

    bar: Any = None
    if progress and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(desc=f"reading {root}", unit="image", leave=False, file=sys.stderr)
    try:
        folder = load_image_folder(root, classes, style=style, progress=bar.update if bar else None)
    finally:
        if bar is not None:
            bar.close()
    print_skipped(folder.skipped)
    if folder.skipped:
        print(f"{root}: read {folder.t.shape[0]} images, skipped {len(folder.skipped)} (see the warnings)")
    return folder


def _image_style(metadata: dict[str, Any]) -> str:
    """The preprocessing style a model is served with (as service/registry.py decides it)."""
    style = metadata.get("image_preprocessing")
    if isinstance(style, str):
        return style
    return "fashion-mnist" if "fashion" in str(metadata.get("dataset", "")).lower() else "mnist"


def _final_record(state: TrainState) -> EpochRecord:
    """The history line of the weights being exported: the best epoch's with early stopping."""
    if state.best_params is not None and state.best_epoch:
        return state.history[state.best_epoch - 1]
    return state.history[-1]


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
    prepared: _Prepared,
    config: TrainConfig,
    state: TrainState,
    gate: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """The model (weights + metadata) and its per-epoch history, each written atomically, at
    ``output``, or with ``publish`` as the next version in that directory (the history in the
    version directory unless ``history_path`` says otherwise). Returns the two paths."""
    final = _final_record(state)
    training: dict[str, Any] = {
        "config": config.to_dict(),
        "seed": config.seed,
        "epochs_completed": state.epoch,
        "training_seconds": round(state.seconds, 2),
    }
    if state.best_params is not None and state.best_epoch:
        training["best_epoch"] = state.best_epoch
    metadata: dict[str, Any] = {
        "input_shape": [28, 28],
        "class_names": prepared.class_names,
        "pixel_preprocessing": PIXEL_PREPROCESSING,
        "dataset": prepared.description,
        "training": training,
        "metrics": {k: v for k, v in final.items() if k.endswith(("_loss", "_accuracy"))},
    }
    if prepared.image_style is not None:
        metadata["image_preprocessing"] = prepared.image_style
    recorded: dict[str, Any] = {}
    if gate is not None:  # the evaluation gate's figures (--publish-if-better)
        metadata["gate"] = recorded["gate"] = gate
    dataset_name = prepared.description.get("name")
    history = json.dumps(
        {"config": config.to_dict(), "dataset": dataset_name, "epochs": state.history, **recorded},
        indent=2,
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


# --- the evaluation gate (--publish-if-better; training/gate.py) -----------------------------
def _gate_baseline(publish: Path | None, init: ModelFile | None) -> ModelFile | None:
    """The model a gated publish must match: NAME's newest version, else ``--init-from``'s."""
    assert publish is not None  # noqa: S101 - _train refuses --publish-if-better without --publish
    if publish.is_dir() and any(
        is_version_name(e.name) and (e / VERSION_FILE).is_file() for e in publish.iterdir()
    ):
        return _load_init_model(publish)
    return init


def _gate_sets(
    args: argparse.Namespace, data: TrainData, baseline: ModelFile | None, class_names: list[str]
) -> list[HeldOut]:
    """The held-out sets the gate compares on, checked before any training is done."""
    if baseline is None:
        return []
    if baseline.class_names != class_names or math.prod(baseline.input_shape) != data.x_train.shape[1]:
        raise UsageError(
            f"--publish-if-better: {baseline.path} (the model to beat) has other classes or inputs than "
            "this run's model; publish under another name, or leave out --publish-if-better"
        )
    test_tolerance = REPLAY_TOLERANCE if args.replay is not None else OWN_TOLERANCE
    tolerances = {"test": test_tolerance, "val": OWN_TOLERANCE}
    sets = [HeldOut(name, x, t, tolerances[name]) for name, x, t in data.splits()]
    if not sets:
        raise UsageError(
            "--publish-if-better compares on held-out data and this run has none: add --replay DATASET, "
            "a --validation-split above 0 or --validation-dir"
        )
    return sets


def _gate(
    state: TrainState, baseline: ModelFile | None, sets: list[HeldOut], *, forced: bool
) -> dict[str, Any]:
    """The gate's verdict as the metadata records it, announced in one line."""
    if baseline is None:
        print("gate: nothing serves this name and there is no --init-from model to beat: published")
        return {"passed": True, "forced": forced, "baseline": None, "sets": {}, "reason": "no baseline"}
    name = str(baseline.path)
    verdict = compare(state.net, baseline.network(), sets, name)
    record = verdict.record({"path": str(baseline.path), "sha256": baseline.sha256}, forced=forced)
    if verdict.passed or forced:
        print(
            f"gate: {'passed' if verdict.passed else 'FAILED, published anyway (--force)'}: {verdict.reason}"
        )
    return record


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'digits-serving[plots]'") from None


# --- evaluate ------------------------------------------------------------------------------
def _evaluate(args: argparse.Namespace) -> int:
    model = load_model(args.model)
    if args.images is not None:
        return _evaluate_images(args, model)
    described = model.metadata.get("dataset", {})
    name = args.dataset or described.get("name")
    if name == "images":  # trained on an image folder: its replay set, if it had one
        name = (described.get("replay") or {}).get("name")
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


def _evaluate_images(args: argparse.Namespace, model: ModelFile) -> int:
    """``evaluate --images DIR``: the model on a labelled image folder, read as uploads are."""
    folder = _read_folder(args.images, model.class_names, _image_style(model.metadata), progress=False)
    net = model.network()
    result = evaluate(net, folder.x.astype(net.dtype, copy=False), folder.t)
    summary = {
        "model": str(args.model),
        "version": model.version,
        "images": str(args.images),
        "count": int(folder.t.shape[0]),
        "skipped": len(folder.skipped),
        **result,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{args.model} on {args.images} ({folder.t.shape[0]} images): "
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
