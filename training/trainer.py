"""Mini-batch SGD for TwoLayerNet: config, schedule, the training loop, and resumable state.

``run(config, data, callbacks)`` is the whole loop: it starts a net (or continues a saved
state), runs the epochs, evaluates after each and records the history. Pure: no printing or
file I/O here; progress, output and checkpoint files are the caller's, through ``Callbacks``.
Randomness comes only from the ``np.random.Generator`` seeded by ``TrainConfig.seed``, so the
same seed, data and config give bit-identical weights, and a run resumed from a ``TrainState``
matches an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
from numpy.typing import NDArray

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # optional: without it BLAS keeps its default thread count
    threadpool_limits = None

from training.augment import augment_batch
from training.functions import cross_entropy_error, mean_squared_error
from training.nets import LOSSES, WEIGHT_INITS, TwoLayerNet

SAMPLINGS = ("shuffle", "random")
SCHEDULES = ("constant", "linear", "cosine")
DTYPES = ("float32", "float64")
#: Evaluate the full train/test sets in chunks of this many rows to bound memory.
EVAL_CHUNK = 10_000
#: Steps whose biggest product (batch x inputs x hidden multiply-adds) is at most this run BLAS
#: on one thread: batch 100 on 784-100 is 7.8M. Measured on 2 cores (bench/README.md): two
#: threads win at best by a fifth on an idle machine, and lose several times over as soon as
#: another process wants a core (BLAS threads then wait for each other at every product).
SINGLE_THREAD_STEP_MACS = 10_000_000


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines the trained weights (besides the data).

    The defaults are the recipe of the shipped models. The textbook's run is
    ``learning_rate=0.1, batch_size=100, weight_init="0.01", lr_schedule="constant",
    sampling="random"``.
    """

    hidden_size: int = 100
    learning_rate: float = 0.5
    batch_size: int = 32
    epochs: int = 30
    loss: str = "cross_entropy"
    weight_init: str = "xavier"
    dtype: str = "float32"
    seed: int = 0
    sampling: str = "shuffle"
    lr_schedule: str = "cosine"
    #: Random affine and stroke-width changes per batch (training/augment.py).
    augment: bool = False
    #: With replay data (``TrainData.replay_from``): replay examples per own example, per epoch.
    replay_ratio: float = 0.0
    #: Stop after this many epochs without a lower held-out loss, keeping the best (0: off).
    early_stopping: int = 0

    def __post_init__(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        for name in ("hidden_size", "batch_size", "epochs"):
            value = getattr(self, name)
            check(
                isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                f"{name.replace('_', '-')} must be a positive integer, got {value!r}",
            )
        check(
            isinstance(self.early_stopping, int) and self.early_stopping >= 0,
            f"early-stopping must be an integer >= 0, got {self.early_stopping!r}",
        )
        check(
            math.isfinite(self.replay_ratio) and self.replay_ratio >= 0,
            f"replay-ratio must be a number >= 0, got {self.replay_ratio!r}",
        )
        check(
            isinstance(self.seed, int) and self.seed >= 0, f"seed must be an integer >= 0, got {self.seed!r}"
        )
        check(
            math.isfinite(self.learning_rate) and self.learning_rate > 0,
            f"learning-rate must be a positive number, got {self.learning_rate!r}",
        )
        check(self.loss in LOSSES, f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        check(self.dtype in DTYPES, f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        check(
            self.sampling in SAMPLINGS,
            f"sampling must be one of {', '.join(SAMPLINGS)}, got {self.sampling!r}",
        )
        check(
            self.lr_schedule in SCHEDULES,
            f"lr-schedule must be one of {', '.join(SCHEDULES)}, got {self.lr_schedule!r}",
        )
        check(
            self.weight_init in WEIGHT_INITS or _positive_float(self.weight_init),
            f"weight-init must be a positive number or one of {', '.join(WEIGHT_INITS)}, "
            f"got {self.weight_init!r}",
        )

    @property
    def weight_init_std(self) -> float | str:
        return self.weight_init if self.weight_init in WEIGHT_INITS else float(self.weight_init)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _positive_float(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) and value > 0


def replay_count(n_own: int, config: TrainConfig, pool: int) -> int:
    """Replay examples drawn into each epoch beside ``n_own`` own examples, from ``pool``."""
    return min(round(n_own * config.replay_ratio), pool)


def steps_per_epoch(n_train: int, config: TrainConfig) -> int:
    """Mini-batches per epoch of N examples: ceil(N / B) when shuffling, max(N // B, 1) for
    random sampling."""
    if config.sampling == "shuffle":
        return -(-n_train // config.batch_size)
    return max(n_train // config.batch_size, 1)


def learning_rate_at(config: TrainConfig, step: int, total_steps: int) -> float:
    """The schedule's learning rate for global step ``step`` of ``total_steps`` (0-based)."""
    if config.lr_schedule == "constant":
        return config.learning_rate
    progress = step / total_steps
    if config.lr_schedule == "linear":
        return config.learning_rate * (1.0 - progress)
    return config.learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class TrainState:
    """Where a run is: the net, the generator, the position, and the history so far."""

    net: TwoLayerNet
    rng: np.random.Generator
    epoch: int = 0  # completed epochs
    step: int = 0  # completed steps inside the current epoch
    order: NDArray[np.intp] | None = None  # this epoch's permutation (shuffle sampling)
    history: list[dict[str, float]] = field(default_factory=list)  # one EpochRecord per epoch
    seconds: float = 0.0  # training time spent so far, across resumes
    #: this epoch's running sums so far: batch losses x batch sizes, correct answers, examples
    running: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    #: early stopping: the best held-out loss so far, its epoch, and a copy of its weights
    best_loss: float = math.inf
    best_epoch: int = 0
    best_params: dict[str, NDArray[np.floating]] | None = None


def init_state(
    config: TrainConfig, input_size: int, output_size: int, initial: TwoLayerNet | None = None
) -> TrainState:
    """A fresh net and generator from the config's seed; with ``initial``, a copy of its weights
    (in the config's dtype) instead of random ones: fine-tuning."""
    rng = np.random.default_rng(config.seed)
    if initial is not None:
        dtype = np.dtype(config.dtype)
        params = {k: np.array(v, dtype=dtype) for k, v in initial.params.items()}
        net = TwoLayerNet.from_params(params, loss_name=config.loss)  # type: ignore[arg-type]
        if net.hidden_size != config.hidden_size:
            raise ValueError(
                f"hidden-size {config.hidden_size} differs from the initial model's {net.hidden_size}"
            )
        return TrainState(net=net, rng=rng)
    net = TwoLayerNet(
        input_size,
        config.hidden_size,
        output_size,
        weight_init_std=config.weight_init_std,
        rng=rng,
        dtype=np.dtype(config.dtype),
        loss_name=config.loss,  # type: ignore[arg-type]
    )
    return TrainState(net=net, rng=rng)


@dataclass(frozen=True)
class TrainData:
    """The arrays ``run`` trains and evaluates on.

    x_train (N, D) floats (the config's dtype) and t_train (N,) integer labels in
    [0, num_classes); likewise the test set (evaluated after every epoch; None: none) and the
    held-out validation set (evaluated after every epoch, and what early stopping watches).
    ``replay_from``: rows from this index on are a replay pool (a built-in training set), of
    which each epoch draws ``replay_count`` fresh examples beside all the rows before it.
    """

    x_train: NDArray[np.floating]
    t_train: NDArray[np.integer]
    x_test: NDArray[np.floating] | None
    t_test: NDArray[np.integer] | None
    num_classes: int
    x_val: NDArray[np.floating] | None = None
    t_val: NDArray[np.integer] | None = None
    replay_from: int | None = None

    def __post_init__(self) -> None:
        for split, x, t in self.splits(train=True):
            if x.ndim != 2 or t.ndim != 1 or x.shape[0] != t.shape[0] or x.shape[0] == 0:
                raise ValueError(
                    f"{split} data must be x (N, D) and t (N,) with N >= 1, got {x.shape} and {t.shape}"
                )
            if x.shape[1] != self.x_train.shape[1]:
                raise ValueError(f"train and {split} inputs differ: {self.x_train.shape[1]} vs {x.shape[1]}")
        if self.replay_from is not None and not 0 < self.replay_from < self.x_train.shape[0]:
            raise ValueError(f"replay_from must be inside the training rows, got {self.replay_from}")

    def splits(self, *, train: bool = False) -> list[tuple[str, NDArray, NDArray]]:
        """("train"?, "test", "val") with their (x, t), for the sets there are."""
        found = [("train", self.x_train, self.t_train)] if train else []
        if self.x_test is not None or self.t_test is not None:
            found.append(("test", self.x_test, self.t_test))  # type: ignore[arg-type]
        if self.x_val is not None or self.t_val is not None:
            found.append(("val", self.x_val, self.t_val))  # type: ignore[arg-type]
        return found

    @property
    def n_own(self) -> int:
        """Training rows that every epoch goes through (all of them without a replay pool)."""
        return self.x_train.shape[0] if self.replay_from is None else self.replay_from

    def epoch_size(self, config: TrainConfig) -> int:
        """Examples per epoch: the own rows plus the replay draw."""
        if self.replay_from is None:
            return self.x_train.shape[0]
        return self.n_own + replay_count(self.n_own, config, self.x_train.shape[0] - self.n_own)


#: One epoch's line of the history: epoch (completed epochs, 1-based), train loss and accuracy
#: (running means over the epoch's steps, or recomputed with ``full_train_metrics``), test and
#: val loss and accuracy (for the sets there are), and the training seconds spent so far.
EpochRecord = dict[str, float]


@dataclass(frozen=True)
class Callbacks:
    """The hooks ``run`` calls, each optional (None: nothing to do). In the order they happen:

    - ``on_epoch_start(epoch, step)``: epoch ``epoch`` (1-based) begins, at ``step`` when resumed;
    - ``on_step(step, loss)``: after every SGD update: steps done in this epoch, the batch's loss;
    - ``should_stop()``: after every step; True ends the run after that step, resumable;
    - ``on_epoch_end(epoch)``: the epoch's steps are over (done or stopped), before evaluation;
    - ``on_epoch(record)``: the epoch's ``EpochRecord``, just appended to ``state.history``;
    - ``on_checkpoint(state)``: a state to keep for resuming: after every epoch but the last,
      and when the run stops early.
    """

    on_epoch_start: Callable[[int, int], None] | None = None
    on_step: Callable[[int, float], None] | None = None
    should_stop: Callable[[], bool] | None = None
    on_epoch_end: Callable[[int], None] | None = None
    on_epoch: Callable[[EpochRecord], None] | None = None
    on_checkpoint: Callable[[TrainState], None] | None = None


@dataclass(frozen=True)
class TrainResult:
    """Where ``run`` ended: the state (net, history, ...) and whether ``should_stop`` cut it short."""

    state: TrainState
    stopped: bool
    #: early stopping ended the run (not an interruption); the net holds the best epoch's weights
    stopped_early: bool = False

    @property
    def history(self) -> list[EpochRecord]:
        return self.state.history


def run(
    config: TrainConfig,
    data: TrainData,
    callbacks: Callbacks | None = None,
    resume_from: TrainState | None = None,
    *,
    initial: TwoLayerNet | None = None,
    full_train_metrics: bool = False,
) -> TrainResult:
    """Train for ``config.epochs`` epochs on ``data``; the hooks in ``callbacks`` see it happen.

    A fresh net comes from ``init_state(config, D, data.num_classes)``; ``resume_from`` (a state
    ``on_checkpoint`` was given, perhaps saved and loaded since) continues where it stopped and
    ends with the weights an uninterrupted run ends with; ``initial`` starts from a copy of
    that net's weights (fine-tuning). Each epoch runs its SGD steps (``train_epoch``), then
    evaluates the net on the test and validation sets into an ``EpochRecord``; the training
    metrics are the running means of the epoch's steps, or, with ``full_train_metrics``, a
    second pass over the whole training set. With ``config.early_stopping`` N and a validation
    set, the run ends after N epochs without a lower validation loss, with the best weights.
    """
    cb = callbacks or Callbacks()
    input_size, output_size = data.x_train.shape[1], data.num_classes
    if resume_from is None:
        state = init_state(config, input_size, output_size, initial)
    else:
        state = resume_from
        if (state.net.input_size, state.net.output_size) != (input_size, output_size):
            raise ValueError(
                f"the state's net maps {state.net.input_size} inputs to {state.net.output_size} classes, "
                f"but the data has {input_size} inputs and {output_size} classes"
            )
    while state.epoch < config.epochs:
        epoch = state.epoch + 1
        if cb.on_epoch_start is not None:
            cb.on_epoch_start(epoch, state.step)
        started = time.perf_counter()
        try:
            done = train_epoch(
                state,
                config,
                data.x_train,
                data.t_train,
                on_step=cb.on_step,
                should_stop=cb.should_stop,
                replay_from=data.replay_from,
            )
        finally:
            state.seconds += time.perf_counter() - started
            if cb.on_epoch_end is not None:
                cb.on_epoch_end(epoch)
        if not done:
            if cb.on_checkpoint is not None:
                cb.on_checkpoint(state)
            return TrainResult(state, stopped=True)
        record = _epoch_record(state, data, full_train_metrics)
        state.history.append(record)
        if cb.on_epoch is not None:
            cb.on_epoch(record)
        if _early_stop(state, config, record):
            _restore_best(state)
            return TrainResult(state, stopped=False, stopped_early=True)
        if state.epoch < config.epochs and cb.on_checkpoint is not None:
            cb.on_checkpoint(state)
    if config.early_stopping and state.best_params is not None:
        _restore_best(state)
    return TrainResult(state, stopped=False)


def _epoch_record(state: TrainState, data: TrainData, full_train_metrics: bool) -> EpochRecord:
    loss_sum, correct, seen = state.running
    if full_train_metrics or seen == 0:
        train = evaluate(state.net, data.x_train[: data.n_own], data.t_train[: data.n_own])
    else:
        train = {"loss": loss_sum / seen, "accuracy": correct / seen}
    record: EpochRecord = {
        "epoch": state.epoch,
        "train_loss": train["loss"],
        "train_accuracy": train["accuracy"],
    }
    # one BLAS thread, as the steps have: on 2 shared cores a second thread bought nothing for a
    # 10,000-row chunk and spun while it waited (bench/README.md, train_process: 0.2-0.3 s of
    # CPU over 5 epochs, most of the per-epoch test evaluation's cost)
    with _blas_threads_for(0):
        for split, x, t in data.splits():
            result = evaluate(state.net, x, t)
            record[f"{split}_loss"] = result["loss"]
            record[f"{split}_accuracy"] = result["accuracy"]
    record["seconds"] = round(state.seconds, 3)
    state.running = [0.0, 0.0, 0.0]
    return record


def _early_stop(state: TrainState, config: TrainConfig, record: EpochRecord) -> bool:
    """Track the best validation loss; True when ``config.early_stopping`` epochs passed without
    a lower one."""
    if not config.early_stopping or "val_loss" not in record:
        return False
    if record["val_loss"] < state.best_loss:
        state.best_loss = record["val_loss"]
        state.best_epoch = state.epoch
        state.best_params = {k: v.copy() for k, v in state.net.params.items()}
        return False
    return state.epoch - state.best_epoch >= config.early_stopping


def _restore_best(state: TrainState) -> None:
    if state.best_params is not None:
        for k, v in state.best_params.items():
            state.net.params[k][...] = v


def train_epoch(
    state: TrainState,
    config: TrainConfig,
    x_train: NDArray[np.floating],
    t_train: NDArray[np.integer],
    on_step: Callable[[int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    *,
    replay_from: int | None = None,
) -> bool:
    """Run (the rest of) one epoch of SGD on x_train (N, D) and integer labels t_train (N,).

    Every step adds its batch's loss and correct answers to ``state.running`` (the epoch's
    training metrics, as running means: the loss and an argmax of the forward pass the step
    makes anyway) and calls ``on_step(step, loss)``; when ``should_stop()`` turns true the loop
    returns False right after a completed step, leaving ``state`` ready to resume. With
    ``replay_from``, rows from that index on are a pool: the epoch goes through every row before
    it plus ``replay_count`` pool rows drawn afresh (shuffle sampling only). With
    ``config.augment`` each batch is changed by ``augment_batch`` before its step.
    Returns True when the epoch is complete.
    """
    n = x_train.shape[0]
    if replay_from is not None and config.sampling != "shuffle":
        raise ValueError("replay needs shuffle sampling")
    epoch_size = (
        n if replay_from is None else replay_from + replay_count(replay_from, config, n - replay_from)
    )
    per_epoch = steps_per_epoch(epoch_size, config)
    total = per_epoch * config.epochs
    batch = config.batch_size
    if config.sampling == "shuffle" and (state.order is None or state.step == 0):
        if replay_from is None:
            state.order = state.rng.permutation(n)
        else:
            drawn = replay_from + state.rng.choice(n - replay_from, epoch_size - replay_from, replace=False)
            state.order = state.rng.permutation(np.concatenate((np.arange(replay_from), drawn)))
    xb = np.empty((batch, x_train.shape[1]), dtype=x_train.dtype)
    tb = np.empty((batch,), dtype=t_train.dtype)
    net = state.net
    with _blas_threads_for(batch * net.input_size * net.hidden_size):
        while state.step < per_epoch:
            if config.sampling == "shuffle":
                assert state.order is not None
                idx = state.order[state.step * batch : (state.step + 1) * batch]
            else:
                idx = state.rng.choice(n, batch)  # the textbook's random mini-batch
            m = idx.shape[0]
            x_batch, t_batch = (xb, tb) if m == batch else (xb[:m], tb[:m])
            # idx is always in range; mode="clip" lets take write straight into out (the default
            # mode="raise" fills a temporary first, then copies it over); the ndarray method skips
            # np.take's Python wrapper, a few us a call, 3 calls a step
            x_train.take(idx, axis=0, out=x_batch, mode="clip")
            t_train.take(idx, out=t_batch, mode="clip")
            if config.augment:
                augment_batch(x_batch, state.rng)
            lr = learning_rate_at(config, state.epoch * per_epoch + state.step, total)
            loss, correct = net.sgd_step_metrics(x_batch, t_batch, lr)
            state.running[0] += loss * m
            state.running[1] += correct
            state.running[2] += m
            state.step += 1
            if on_step is not None:
                on_step(state.step, loss)
            if should_stop is not None and should_stop() and state.step < per_epoch:
                return False
    state.epoch += 1
    state.step = 0
    state.order = None
    return True


def _blas_threads_for(step_macs: int) -> contextlib.AbstractContextManager[Any]:
    """One BLAS thread for small steps (see ``SINGLE_THREAD_STEP_MACS``), else no change."""
    if threadpool_limits is None or step_macs > SINGLE_THREAD_STEP_MACS:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def evaluate(
    net: TwoLayerNet, x: NDArray[np.floating], t: NDArray[np.integer], loss_name: str | None = None
) -> dict[str, float]:
    """Mean loss and accuracy of ``net`` over (x, t), computed in chunks."""
    if x.shape[0] == 0:
        raise ValueError("cannot evaluate on an empty set")
    total_loss = 0.0
    correct = 0
    for start in range(0, x.shape[0], EVAL_CHUNK):
        xs, ts = x[start : start + EVAL_CHUNK], t[start : start + EVAL_CHUNK]
        y = net.predict(xs)
        total_loss += _batch_loss(y, ts, loss_name or net.loss_name) * xs.shape[0]
        correct += int(np.sum(np.argmax(y, axis=1) == ts))
    return {"loss": total_loss / x.shape[0], "accuracy": correct / x.shape[0]}


def _batch_loss(y: NDArray, t: NDArray, loss_name: str) -> float:
    return cross_entropy_error(y, t) if loss_name == "cross_entropy" else mean_squared_error(y, t)
