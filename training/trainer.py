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


def steps_per_epoch(n_train: int, config: TrainConfig) -> int:
    """Mini-batches per epoch: ceil(N / B) when shuffling, max(N // B, 1) for random sampling."""
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


def init_state(config: TrainConfig, input_size: int, output_size: int) -> TrainState:
    """A fresh net and generator from the config's seed."""
    rng = np.random.default_rng(config.seed)
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

    x_train (N, D) and x_test (M, D) floats (the config's dtype), t_train (N,) and t_test (M,)
    integer labels in [0, num_classes).
    """

    x_train: NDArray[np.floating]
    t_train: NDArray[np.integer]
    x_test: NDArray[np.floating]
    t_test: NDArray[np.integer]
    num_classes: int

    def __post_init__(self) -> None:
        for split, x, t in (("train", self.x_train, self.t_train), ("test", self.x_test, self.t_test)):
            if x.ndim != 2 or t.ndim != 1 or x.shape[0] != t.shape[0] or x.shape[0] == 0:
                raise ValueError(
                    f"{split} data must be x (N, D) and t (N,) with N >= 1, got {x.shape} and {t.shape}"
                )
        if self.x_train.shape[1] != self.x_test.shape[1]:
            raise ValueError(
                f"train and test inputs differ: {self.x_train.shape[1]} vs {self.x_test.shape[1]}"
            )


#: One epoch's line of the history: epoch (completed epochs, 1-based), train/test loss and
#: accuracy, and the training seconds spent so far.
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

    @property
    def history(self) -> list[EpochRecord]:
        return self.state.history


def run(
    config: TrainConfig,
    data: TrainData,
    callbacks: Callbacks | None = None,
    resume_from: TrainState | None = None,
) -> TrainResult:
    """Train for ``config.epochs`` epochs on ``data``; the hooks in ``callbacks`` see it happen.

    A fresh net comes from ``init_state(config, D, data.num_classes)``; ``resume_from`` (a state
    ``on_checkpoint`` was given, perhaps saved and loaded since) continues where it stopped and
    ends with the weights an uninterrupted run ends with. Each epoch runs its SGD steps
    (``train_epoch``), then evaluates the net on both splits into an ``EpochRecord``.
    """
    cb = callbacks or Callbacks()
    input_size, output_size = data.x_train.shape[1], data.num_classes
    if resume_from is None:
        state = init_state(config, input_size, output_size)
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
                state, config, data.x_train, data.t_train, on_step=cb.on_step, should_stop=cb.should_stop
            )
        finally:
            state.seconds += time.perf_counter() - started
            if cb.on_epoch_end is not None:
                cb.on_epoch_end(epoch)
        if not done:
            if cb.on_checkpoint is not None:
                cb.on_checkpoint(state)
            return TrainResult(state, stopped=True)
        record = _epoch_record(state, data)
        state.history.append(record)
        if cb.on_epoch is not None:
            cb.on_epoch(record)
        if state.epoch < config.epochs and cb.on_checkpoint is not None:
            cb.on_checkpoint(state)
    return TrainResult(state, stopped=False)


def _epoch_record(state: TrainState, data: TrainData) -> EpochRecord:
    train = evaluate(state.net, data.x_train, data.t_train)
    test = evaluate(state.net, data.x_test, data.t_test)
    return {
        "epoch": state.epoch,
        "train_loss": train["loss"],
        "train_accuracy": train["accuracy"],
        "test_loss": test["loss"],
        "test_accuracy": test["accuracy"],
        "seconds": round(state.seconds, 3),
    }


def train_epoch(
    state: TrainState,
    config: TrainConfig,
    x_train: NDArray[np.floating],
    t_train: NDArray[np.integer],
    on_step: Callable[[int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> bool:
    """Run (the rest of) one epoch of SGD on x_train (N, D) and integer labels t_train (N,).

    ``on_step(step, loss)`` is called after every update (without it, no loss is computed: four
    numpy calls, 0.4% of a step's instructions at batch 100 on 784-100-10); when ``should_stop()``
    turns true the loop returns False right after a completed step, leaving ``state`` ready to
    resume.
    Returns True when the epoch is complete.
    """
    n = x_train.shape[0]
    per_epoch = steps_per_epoch(n, config)
    total = per_epoch * config.epochs
    batch = config.batch_size
    if config.sampling == "shuffle" and (state.order is None or state.step == 0):
        state.order = state.rng.permutation(n)
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
            # idx is always in range; mode="clip" lets np.take write straight into out
            # (the default mode="raise" fills a temporary first, then copies it over)
            np.take(x_train, idx, axis=0, out=x_batch, mode="clip")
            np.take(t_train, idx, out=t_batch, mode="clip")
            lr = learning_rate_at(config, state.epoch * per_epoch + state.step, total)
            loss = net.sgd_step(x_batch, t_batch, lr, with_loss=on_step is not None)
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
