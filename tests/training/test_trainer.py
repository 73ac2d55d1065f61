import numpy as np
import pytest

from training.datasets import as_training_arrays, load_dataset
from training.trainer import (
    TrainConfig,
    evaluate,
    init_state,
    learning_rate_at,
    steps_per_epoch,
    train_epoch,
)


@pytest.fixture(scope="module")
def sample(mnist_sample_dir):
    ds = load_dataset("mnist", mnist_sample_dir)
    return as_training_arrays(ds.x_train[:500], np.float32), ds.t_train[:500].astype(np.intp)


def run(config, x, t, stop_after=None):
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
    a, _ = run(config, sample[0].astype(dtype), sample[1])
    b, _ = run(config, sample[0].astype(dtype), sample[1])
    for k in a.net.params:
        assert a.net.params[k].dtype == np.dtype(dtype)
        np.testing.assert_array_equal(a.net.params[k], b.net.params[k])


def test_different_seed_different_weights(sample):
    a, _ = run(TrainConfig(**FAST, seed=1), *sample)
    b, _ = run(TrainConfig(**FAST, seed=2), *sample)
    assert not np.array_equal(a.net.params["W1"], b.net.params["W1"])


def test_training_learns_real_digits(sample):
    config = TrainConfig(hidden_size=32, batch_size=20, epochs=15, learning_rate=0.5)
    state, _ = run(config, *sample)
    result = evaluate(state.net, *sample)
    assert result["accuracy"] > 0.9
    assert result["loss"] < 0.5


def test_mean_squared_error_is_trainable(sample):
    config = TrainConfig(
        hidden_size=32, batch_size=20, epochs=15, learning_rate=2.0, loss="mean_squared_error"
    )
    before = evaluate(init_state(config, 784, 10).net, *sample, loss_name="mean_squared_error")
    state, _ = run(config, *sample)
    after = evaluate(state.net, *sample, loss_name="mean_squared_error")
    assert after["loss"] < before["loss"] * 0.5
    assert after["accuracy"] > 0.8


def test_stopped_and_continued_matches_uninterrupted(sample):
    config = TrainConfig(**FAST)
    whole, done = run(config, *sample)
    assert done
    part, done = run(config, *sample, stop_after=13)  # mid-epoch 2 (10 steps per epoch)
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
