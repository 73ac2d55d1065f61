import numpy as np
import pytest

from training.checkpoint import load_checkpoint, save_checkpoint
from training.datasets import as_training_arrays, load_dataset
from training.trainer import (
    Callbacks,
    TrainConfig,
    TrainData,
    TrainState,
    evaluate,
    init_state,
    learning_rate_at,
    run,
    steps_per_epoch,
    train_epoch,
)


@pytest.fixture(scope="module")
def sample(mnist_sample_dir):
    ds = load_dataset("mnist", mnist_sample_dir)
    return as_training_arrays(ds.x_train[:500], np.float32), ds.t_train[:500].astype(np.intp)


@pytest.fixture(scope="module")
def data(mnist_sample_dir, sample):
    """500 real digits to train on (the ``sample``) and 200 others to test on."""
    ds = load_dataset("mnist", mnist_sample_dir)
    x_test, t_test = as_training_arrays(ds.x_test[500:700], np.float32), ds.t_test[500:700].astype(np.intp)
    return TrainData(*sample, x_test, t_test, num_classes=10)


def train_epochs(config, x, t, stop_after=None):
    """The epoch loop by hand, on ``train_epoch`` alone: the reference ``run`` must match."""
    state = init_state(config, x.shape[1], 10)
    steps = 0

    def should_stop():
        return stop_after is not None and steps >= stop_after

    def on_step(step, loss):
        nonlocal steps
        steps += 1

    while state.epoch < config.epochs:
        if not train_epoch(state, config, x, t, on_step=on_step, should_stop=should_stop):
            return state, False
    return state, True


FAST = {"hidden_size": 16, "batch_size": 50, "epochs": 3}


@pytest.mark.parametrize("sampling", ["shuffle", "random"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_same_seed_same_bits(sample, sampling, dtype):
    config = TrainConfig(**FAST, sampling=sampling, dtype=dtype)
    a, _ = train_epochs(config, sample[0].astype(dtype), sample[1])
    b, _ = train_epochs(config, sample[0].astype(dtype), sample[1])
    for k in a.net.params:
        assert a.net.params[k].dtype == np.dtype(dtype)
        np.testing.assert_array_equal(a.net.params[k], b.net.params[k])


def test_different_seed_different_weights(sample):
    a, _ = train_epochs(TrainConfig(**FAST, seed=1), *sample)
    b, _ = train_epochs(TrainConfig(**FAST, seed=2), *sample)
    assert not np.array_equal(a.net.params["W1"], b.net.params["W1"])


def test_training_learns_real_digits(sample):
    config = TrainConfig(hidden_size=32, batch_size=20, epochs=15, learning_rate=0.5)
    state, _ = train_epochs(config, *sample)
    result = evaluate(state.net, *sample)
    assert result["accuracy"] > 0.9
    assert result["loss"] < 0.5


def test_mean_squared_error_is_trainable(sample):
    config = TrainConfig(
        hidden_size=32, batch_size=20, epochs=15, learning_rate=2.0, loss="mean_squared_error"
    )
    before = evaluate(init_state(config, 784, 10).net, *sample, loss_name="mean_squared_error")
    state, _ = train_epochs(config, *sample)
    after = evaluate(state.net, *sample, loss_name="mean_squared_error")
    assert after["loss"] < before["loss"] * 0.5
    assert after["accuracy"] > 0.8


def test_stopped_and_continued_matches_uninterrupted(sample):
    config = TrainConfig(**FAST)
    whole, done = train_epochs(config, *sample)
    assert done
    part, done = train_epochs(config, *sample, stop_after=13)  # mid-epoch 2 (10 steps per epoch)
    assert not done and part.epoch == 1 and part.step == 3
    while part.epoch < config.epochs:
        train_epoch(part, config, *sample)
    for k in whole.net.params:
        np.testing.assert_array_equal(whole.net.params[k], part.net.params[k])


def test_steps_per_epoch_and_partial_batches():
    assert steps_per_epoch(1000, TrainConfig(batch_size=300)) == 4
    assert steps_per_epoch(1000, TrainConfig(batch_size=300, sampling="random")) == 3
    assert steps_per_epoch(10, TrainConfig(batch_size=300, sampling="random")) == 1


@pytest.mark.parametrize(
    ("schedule", "at_half", "at_end"),
    [("constant", 1.0, 1.0), ("linear", 0.5, 0.01), ("cosine", 0.5, 0.0)],
)
def test_learning_rate_schedules(schedule, at_half, at_end):
    config = TrainConfig(learning_rate=1.0, lr_schedule=schedule)
    assert learning_rate_at(config, 0, 100) == 1.0
    assert learning_rate_at(config, 50, 100) == pytest.approx(at_half)
    assert learning_rate_at(config, 99, 100) == pytest.approx(at_end, abs=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs must be a positive integer"),
        ({"batch_size": 2.5}, "batch-size"),
        ({"hidden_size": True}, "hidden-size"),
        ({"learning_rate": float("nan")}, "learning-rate"),
        ({"learning_rate": -1.0}, "learning-rate"),
        ({"loss": "hinge"}, "loss must be one of"),
        ({"dtype": "float16"}, "dtype"),
        ({"sampling": "stratified"}, "sampling"),
        ({"lr_schedule": "step"}, "lr-schedule"),
        ({"weight_init": "glorot"}, "weight-init"),
        ({"weight_init": "-1"}, "weight-init"),
        ({"seed": -1}, "seed"),
    ],
)
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_evaluate_rejects_empty():
    with pytest.raises(ValueError, match="empty"):
        evaluate(init_state(TrainConfig(**FAST), 4, 2).net, np.zeros((0, 4)), np.zeros(0, int))


# --- run: the whole loop, seen through its callbacks ------------------------------------------
class Recorder:
    """Callbacks that log every call as a tuple, and ask to stop once ``stop_after`` steps ran."""

    def __init__(self, stop_after=None, on_checkpoint=None):
        self.calls = []
        self.steps = 0
        self.stop_after = stop_after
        self._on_checkpoint = on_checkpoint

    def callbacks(self):
        return Callbacks(
            on_epoch_start=lambda epoch, step: self.calls.append(("epoch_start", epoch, step)),
            on_step=self.on_step,
            should_stop=self.should_stop,
            on_epoch_end=lambda epoch: self.calls.append(("epoch_end", epoch)),
            on_epoch=lambda record: self.calls.append(("epoch", record)),
            on_checkpoint=self.on_checkpoint,
        )

    def on_step(self, step, loss):
        assert np.isfinite(loss)
        self.steps += 1
        self.calls.append(("step", step))

    def should_stop(self):
        self.calls.append(("should_stop",))
        return self.stop_after is not None and self.steps >= self.stop_after

    def on_checkpoint(self, state):
        self.calls.append(("checkpoint", state.epoch, state.step))
        if self._on_checkpoint is not None:
            self._on_checkpoint(state)

    def hooks(self, *names):
        return [c for c in self.calls if c[0] in names]


def expected_epoch(epoch, per_epoch, last):
    steps = [call for step in range(1, per_epoch + 1) for call in (("step", step), ("should_stop",))]
    checkpoint = [] if last else [("checkpoint", epoch, 0)]
    return [("epoch_start", epoch, 0), *steps, ("epoch_end", epoch), "record", *checkpoint]


def test_run_calls_every_hook_in_order(data):
    config = TrainConfig(**FAST)
    recorder = Recorder()
    result = run(config, data, recorder.callbacks())
    assert not result.stopped and result.state.epoch == 3 and result.state.step == 0
    per_epoch = steps_per_epoch(500, config)  # 10
    expected = [c for e in (1, 2, 3) for c in expected_epoch(e, per_epoch, last=e == 3)]
    assert [c if c[0] != "epoch" else "record" for c in recorder.calls] == expected


def test_on_epoch_gets_each_epochs_history_record(data):
    config = TrainConfig(**FAST)
    recorder = Recorder()
    result = run(config, data, recorder.callbacks())
    records = [record for _, record in recorder.hooks("epoch")]
    assert records == result.history == result.state.history
    assert [r["epoch"] for r in records] == [1, 2, 3]
    keys = {"epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "seconds"}
    assert all(set(record) == keys for record in records)
    last = records[-1]
    test = evaluate(result.state.net, data.x_test, data.t_test)
    assert (last["test_loss"], last["test_accuracy"]) == (test["loss"], test["accuracy"])
    assert 0 <= records[0]["seconds"] <= records[1]["seconds"] <= records[2]["seconds"]


def test_training_metrics_are_running_means_of_the_epochs_steps(data):
    """Keras' way: each step's batch loss and correct answers (before its update) averaged over
    the epoch, at no extra pass; ``full_train_metrics`` recomputes them over the whole set."""
    config = TrainConfig(**FAST)
    losses: list[float] = []
    result = run(config, data, Callbacks(on_step=lambda step, loss: losses.append(loss)))
    per_epoch = len(losses) // config.epochs
    sizes = [min(config.batch_size, data.x_train.shape[0] - i * config.batch_size) for i in range(per_epoch)]
    last_epoch = losses[-per_epoch:]
    expected = sum(loss * m for loss, m in zip(last_epoch, sizes, strict=True)) / sum(sizes)
    assert result.history[-1]["train_loss"] == pytest.approx(expected, rel=1e-12)
    assert 0 < result.history[-1]["train_accuracy"] <= 1

    full = run(config, data, full_train_metrics=True)
    train = evaluate(full.state.net, data.x_train, data.t_train)
    assert (full.history[-1]["train_loss"], full.history[-1]["train_accuracy"]) == (
        train["loss"],
        train["accuracy"],
    )
    assert full.state.net.params["W1"].tobytes() == result.state.net.params["W1"].tobytes()


@pytest.mark.parametrize("sampling", ["shuffle", "random"])
def test_run_gives_the_weights_of_the_train_epoch_loop(data, sampling):
    """Same seed, same numbers: run() adds hooks and evaluation, not a change to the math."""
    config = TrainConfig(**FAST, sampling=sampling)
    reference, _ = train_epochs(config, data.x_train, data.t_train)
    result = run(config, data)  # no callbacks at all
    for k in reference.net.params:
        np.testing.assert_array_equal(result.state.net.params[k], reference.net.params[k])


@pytest.mark.parametrize(
    ("stop_after", "epoch", "step"),
    [(1, 0, 1), (13, 1, 3), (10, 1, 1)],
    ids=["first-step", "mid-epoch", "last-step-of-an-epoch"],
)
def test_should_stop_ends_the_run_after_the_current_step(data, stop_after, epoch, step):
    """Stopped after the step during which it was asked; the last step of an epoch completes the
    epoch (record and checkpoint) first, so the stop lands on the next epoch's first step."""
    config = TrainConfig(**FAST)
    recorder = Recorder(stop_after=stop_after)
    result = run(config, data, recorder.callbacks())
    assert result.stopped
    assert (result.state.epoch, result.state.step) == (epoch, step)
    assert recorder.steps == epoch * 10 + step
    assert recorder.calls[-4:] == [
        ("step", step),
        ("should_stop",),
        ("epoch_end", epoch + 1),
        ("checkpoint", epoch, step),
    ]
    assert len(recorder.hooks("epoch")) == len(result.history) == epoch


def test_resume_from_a_saved_checkpoint_continues_to_the_same_weights(data, tmp_path):
    config = TrainConfig(**FAST)
    data_id = {"name": "mnist-sample"}
    whole = run(config, data)

    saved = tmp_path / "run.ckpt"
    save = Recorder(stop_after=13, on_checkpoint=lambda state: save_checkpoint(saved, state, config, data_id))
    assert run(config, data, save.callbacks()).stopped

    resumed_from = load_checkpoint(saved, config, data_id)
    recorder = Recorder()
    resumed = run(config, data, recorder.callbacks(), resume_from=resumed_from)
    assert not resumed.stopped
    assert recorder.calls[0] == ("epoch_start", 2, 3)  # the rest of epoch 2, from step 3
    assert [c[1] for c in recorder.hooks("step")[:2]] == [4, 5]
    for k in whole.state.net.params:
        np.testing.assert_array_equal(resumed.state.net.params[k], whole.state.net.params[k])

    def without_seconds(history):
        return [{k: v for k, v in record.items() if k != "seconds"} for record in history]

    assert without_seconds(resumed.history) == without_seconds(whole.history)


def test_run_refuses_a_state_for_other_data(data):
    other = init_state(TrainConfig(**FAST), 20, 10)
    with pytest.raises(ValueError, match="maps 20 inputs to 10 classes, but the data has 784 inputs"):
        run(TrainConfig(**FAST), data, resume_from=other)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"t_train": np.zeros(3, np.intp)}, r"train data must be x \(N, D\) and t \(N,\)"),
        ({"x_test": np.zeros((0, 784), np.float32), "t_test": np.zeros(0, np.intp)}, "test data"),
        ({"x_test": np.zeros((2, 10), np.float32), "t_test": np.zeros(2, np.intp)}, "784 vs 10"),
    ],
    ids=["lengths", "empty", "widths"],
)
def test_train_data_refuses_arrays_that_do_not_fit(data, change, message):
    fields = {
        "x_train": data.x_train,
        "t_train": data.t_train,
        "x_test": data.x_test,
        "t_test": data.t_test,
        "num_classes": 10,
    }
    with pytest.raises(ValueError, match=message):
        TrainData(**{**fields, **change})


def test_shuffle_visits_every_example_once_per_epoch_in_a_new_order():
    """Which examples each step trained on, seen from outside: each input is a one-hot pixel of
    its own, so a step changes exactly the rows of W1 of the examples in its batch. Each epoch
    must cover all 65 exactly once (the last batch holds 5), in an order no other epoch repeats."""
    n, batch, epochs = 65, 10, 4
    x, t = np.eye(n, dtype=np.float64), np.arange(n) % 3
    data = TrainData(x, t, x, t, num_classes=3)
    config = TrainConfig(hidden_size=4, batch_size=batch, epochs=epochs, dtype="float64")
    state = init_state(config, n, 3)
    batches: list[list[int]] = []
    w1 = state.net.params["W1"].copy()

    def on_step(step, loss):
        nonlocal w1
        now = state.net.params["W1"]
        batches.append(np.flatnonzero(np.any(now != w1, axis=1)).tolist())
        w1 = now.copy()

    run(config, data, Callbacks(on_step=on_step), resume_from=state)  # the loop `train` runs
    per_epoch = steps_per_epoch(n, config)
    assert len(batches) == per_epoch * epochs
    orders = [batches[e * per_epoch : (e + 1) * per_epoch] for e in range(epochs)]
    for order in orders:
        assert [len(b) for b in order] == [batch] * (per_epoch - 1) + [n % batch]
        assert sorted(i for b in order for i in b) == list(range(n))
    assert len({str(order) for order in orders}) == epochs
    assert orders[0] != [list(range(s, min(s + batch, n))) for s in range(0, n, batch)]


@pytest.fixture(scope="module")
def replay_data(mnist_sample_dir, sample):
    """100 own digits, a 400-digit replay pool after them, 100 held out and 200 to test on."""
    ds = load_dataset("mnist", mnist_sample_dir)
    x, t = sample
    x_test, t_test = as_training_arrays(ds.x_test[500:700], np.float32), ds.t_test[500:700].astype(np.intp)
    return TrainData(
        x[:500],
        t[:500],
        x_test,
        t_test,
        num_classes=10,
        x_val=x_test[:100],
        t_val=t_test[:100],
        replay_from=100,
    )


def test_replay_draws_a_fresh_share_of_the_pool_beside_every_own_example(replay_data):
    config = TrainConfig(hidden_size=16, batch_size=50, epochs=2, replay_ratio=1.5)
    assert replay_data.epoch_size(config) == 250
    seen: list[np.ndarray] = []
    state = init_state(config, 784, 10)
    for _ in range(2):
        train_epoch(
            state,
            config,
            replay_data.x_train,
            replay_data.t_train,
            replay_from=100,
            on_step=lambda step, loss: seen.append(state.order.copy()) if step == 1 else None,
        )
    for order in seen:
        assert sorted(order[order < 100].tolist()) == list(range(100))
        assert (order >= 100).sum() == 150 and len(set(order.tolist())) == 250
    assert set(seen[0][seen[0] >= 100].tolist()) != set(seen[1][seen[1] >= 100].tolist())


@pytest.mark.parametrize("augment", [False, True])
def test_resumed_run_with_replay_augmentation_and_early_stopping_is_bit_identical(
    replay_data, augment, tmp_path
):
    config = TrainConfig(
        hidden_size=16, batch_size=50, epochs=6, replay_ratio=2.0, augment=augment, early_stopping=2
    )
    whole = run(config, replay_data)
    stops = iter(range(1000))
    saved: list[TrainState] = []
    part = run(
        config,
        replay_data,
        Callbacks(should_stop=lambda: next(stops) == 8, on_checkpoint=saved.append),  # mid-epoch 2
    )
    assert part.stopped
    save_checkpoint(tmp_path / "c.ckpt", part.state, config, {"d": 1})
    resumed = run(config, replay_data, resume_from=load_checkpoint(tmp_path / "c.ckpt", config, {"d": 1}))

    def without_time(history):
        return [{k: v for k, v in record.items() if k != "seconds"} for record in history]

    assert without_time(resumed.history) == without_time(whole.history)
    assert resumed.state.best_epoch == whole.state.best_epoch
    for k in whole.state.net.params:
        np.testing.assert_array_equal(whole.state.net.params[k], resumed.state.net.params[k])


def test_early_stopping_keeps_the_best_epochs_weights(replay_data):
    config = TrainConfig(hidden_size=16, batch_size=50, epochs=8, learning_rate=3.0, early_stopping=1)
    result = run(config, replay_data)
    best = min(result.history, key=lambda r: r["val_loss"])
    assert result.state.best_epoch == best["epoch"]
    val = evaluate(result.state.net, replay_data.x_val, replay_data.t_val)
    assert val["loss"] == pytest.approx(best["val_loss"], rel=1e-6)
