import numpy as np
import pytest

from training import (
    DEFAULT_IG_STEPS,
    LOSSES,
    MAX_IG_STEPS,
    SimpleNet,
    TwoLayerNet,
    numerical_gradient,
    softmax,
)
from training.datasets import as_training_arrays
from training.nets import gradient_relative_errors


@pytest.fixture
def small_net_data():
    rng = np.random.default_rng(42)
    x = rng.random((7, 12))
    t = rng.integers(0, 4, 7)
    return rng, x, t


def test_simple_net_gradient_matches_textbook_shape():
    net = SimpleNet(rng=np.random.default_rng(0))
    x = np.array([0.6, 0.9])
    t = np.array([0, 0, 1])
    dW = numerical_gradient(lambda _: net.loss(x, t), net.W)
    assert dW.shape == (2, 3)
    # analytic: x^T (softmax(xW) - t)
    np.testing.assert_allclose(dW, np.outer(x, softmax(x @ net.W) - t), rtol=1e-6)


def test_two_layer_net_shapes_and_probabilities():
    net = TwoLayerNet(784, 100, 10, rng=np.random.default_rng(0))
    assert {k: v.shape for k, v in net.params.items()} == {
        "W1": (784, 100),
        "b1": (100,),
        "W2": (100, 10),
        "b2": (10,),
    }
    y = net.predict(np.random.default_rng(1).random((3, 784)))
    assert y.shape == (3, 10)
    np.testing.assert_allclose(y.sum(axis=1), 1.0)
    assert net.predict(np.zeros(784)).shape == (10,)


@pytest.mark.parametrize("loss_name", LOSSES)
def test_backprop_matches_numerical_gradient(small_net_data, loss_name):
    rng, x, t = small_net_data
    net = TwoLayerNet(12, 6, 4, weight_init_std=1.0, rng=rng, loss_name=loss_name)
    errors = gradient_relative_errors(net, x, t)
    assert set(errors) == {"W1", "b1", "W2", "b2"}
    assert max(errors.values()) < 1e-6, errors


@pytest.mark.parametrize("loss_name", LOSSES)
def test_one_hot_and_integer_labels_give_same_gradient(small_net_data, loss_name):
    rng, x, t = small_net_data
    net = TwoLayerNet(12, 6, 4, weight_init_std=1.0, rng=rng, loss_name=loss_name)
    g_int = net.gradient(x, t)
    g_hot = net.gradient(x, np.eye(4)[t])
    for k in g_int:
        np.testing.assert_allclose(g_int[k], g_hot[k], rtol=1e-12)
    assert net.loss(x, t) == pytest.approx(net.loss(x, np.eye(4)[t]))


def test_mse_gradient_is_not_the_cross_entropy_shortcut(small_net_data):
    rng, x, t = small_net_data
    ce = TwoLayerNet(12, 6, 4, weight_init_std=1.0, rng=np.random.default_rng(3))
    mse = TwoLayerNet.from_params({k: v.copy() for k, v in ce.params.items()}, "mean_squared_error")
    assert not np.allclose(ce.gradient(x, t)["W2"], mse.gradient(x, t)["W2"])


@pytest.mark.parametrize("loss_name", LOSSES)
def test_sgd_step_decreases_loss_and_equals_gradient_update(small_net_data, loss_name):
    rng, x, t = small_net_data
    net = TwoLayerNet(12, 6, 4, weight_init_std=1.0, rng=rng, loss_name=loss_name)
    grads = net.gradient(x, t)
    expected = {k: v - 0.1 * grads[k] for k, v in net.params.items()}
    before = net.loss(x, t)
    returned = net.sgd_step(x, t, 0.1)
    assert returned == pytest.approx(before)
    for k in expected:
        np.testing.assert_allclose(net.params[k], expected[k], rtol=1e-12)
    for _ in range(200):
        net.sgd_step(x, t, 0.5)
    assert net.loss(x, t) < before


@pytest.mark.parametrize("loss_name", LOSSES)
def test_sgd_steps_follow_the_readable_gradient_in_float32(loss_name):
    """The fused fast path (``sgd_step``) against the textbook one (``gradient``), step by step
    from the same weights: 30 steps of batches of 8 and a last one of 3, within float32 rounding."""
    rng = np.random.default_rng(7)
    fast = TwoLayerNet(20, 6, 4, weight_init_std="xavier", rng=rng, dtype=np.float32, loss_name=loss_name)
    readable = TwoLayerNet.from_params({k: v.copy() for k, v in fast.params.items()}, loss_name)
    for step in range(31):
        m = 8 if step < 30 else 3
        x, t = rng.random((m, 20), dtype=np.float32), rng.integers(0, 4, m)
        expected_loss = readable.loss(x, t)
        grads = readable.gradient(x, t)
        for k in readable.params:
            readable.params[k] = readable.params[k] - np.float32(0.5) * grads[k]
        assert fast.sgd_step(x, t, 0.5) == pytest.approx(expected_loss, rel=1e-5)
    for k in fast.params:
        assert fast.params[k].dtype == readable.params[k].dtype == np.float32
        np.testing.assert_allclose(fast.params[k], readable.params[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loss_name", LOSSES)
def test_sgd_step_without_the_loss_makes_the_same_update(small_net_data, loss_name):
    rng, x, t = small_net_data
    a = TwoLayerNet(12, 6, 4, weight_init_std=1.0, rng=rng, loss_name=loss_name)
    b = TwoLayerNet.from_params({k: v.copy() for k, v in a.params.items()}, loss_name)
    assert np.isfinite(a.sgd_step(x, t, 0.1))
    assert np.isnan(b.sgd_step(x, t, 0.1, with_loss=False))
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])


def test_accuracy_with_integer_and_one_hot_labels():
    net = TwoLayerNet(2, 3, 2, rng=np.random.default_rng(0))
    net.params["W1"][:] = 0
    net.params["W2"][:] = 0
    net.params["b2"][:] = [0.0, 1.0]  # always predicts class 1
    x = np.zeros((4, 2))
    assert net.accuracy(x, np.array([1, 1, 0, 1])) == 0.75
    assert net.accuracy(x, np.eye(2)[[1, 0, 0, 0]]) == 0.25
    assert net.accuracy(np.zeros(2), 1) == 1.0
    with pytest.raises(ValueError, match="3 labels for 4"):
        net.accuracy(x, np.array([1, 1, 1]))


def test_float32_net_stays_float32():
    net = TwoLayerNet(5, 4, 3, dtype=np.float32, rng=np.random.default_rng(0))
    x = np.random.default_rng(1).random((2, 5)).astype(np.float32)
    assert net.predict(x).dtype == np.float32
    net.sgd_step(x, np.array([0, 2]), 0.1)
    assert all(v.dtype == np.float32 for v in net.params.values())


def test_sgd_step_handles_a_smaller_last_batch():
    rng = np.random.default_rng(0)
    net = TwoLayerNet(5, 4, 3, rng=rng)
    net.sgd_step(rng.random((10, 5)), rng.integers(0, 3, 10), 0.1)
    net.sgd_step(rng.random((3, 5)), rng.integers(0, 3, 3), 0.1)
    net.sgd_step(rng.random((10, 5)), rng.integers(0, 3, 10), 0.1)
    assert all(np.all(np.isfinite(v)) for v in net.params.values())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_size": 0}, "input_size"),
        ({"hidden_size": -1}, "hidden_size"),
        ({"weight_init_std": "glorot"}, "weight_init_std"),
        ({"weight_init_std": -0.1}, "positive"),
        ({"dtype": np.int32}, "dtype"),
        ({"loss_name": "hinge"}, "loss"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs, message):
    args = {"input_size": 4, "hidden_size": 3, "output_size": 2} | kwargs
    with pytest.raises(ValueError, match=message):
        TwoLayerNet(**args)


def test_named_initialisations_scale_with_fan_in():
    net = TwoLayerNet(400, 100, 10, weight_init_std="xavier", rng=np.random.default_rng(0))
    assert net.params["W1"].std() == pytest.approx(1 / 20, rel=0.05)
    assert net.params["W2"].std() == pytest.approx(1 / 10, rel=0.1)


def test_same_rng_seed_same_weights():
    a = TwoLayerNet(5, 4, 3, rng=np.random.default_rng(7))
    b = TwoLayerNet(5, 4, 3, rng=np.random.default_rng(7))
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])


def test_from_params_rejects_inconsistent_shapes():
    with pytest.raises(ValueError, match="inconsistent"):
        TwoLayerNet.from_params(
            {"W1": np.zeros((4, 3)), "b1": np.zeros(2), "W2": np.zeros((3, 2)), "b2": np.zeros(2)}
        )


# --- explanations: input gradient and integrated gradients (issue 12) ---------------------


def _relative_error(a, b):
    return float(np.linalg.norm(a - b) / (np.linalg.norm(a) + np.linalg.norm(b)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_input_gradient_matches_numerical_gradient(seed):
    rng = np.random.default_rng(seed)
    net = TwoLayerNet(12, 6, 4, weight_init_std=1.0, rng=rng)
    x = rng.random((5, 12))
    t = rng.integers(0, 4, 5)
    dx = net.input_gradient(x, t)
    assert dx.shape == (5, 12) and dx.dtype == np.float64
    for i in range(len(x)):
        x_i = x[i : i + 1].copy()
        numerical = numerical_gradient(lambda v, i=i: net.predict(v)[0, t[i]], x_i)
        assert _relative_error(dx[i], numerical[0]) < 1e-6
    # the whole batch at once: p_t of each row depends on that row only
    batch = x.copy()
    numerical = numerical_gradient(lambda v: float(net.predict(v)[np.arange(5), t].sum()), batch)
    assert _relative_error(dx, numerical) < 1e-6


def test_input_gradient_float32_agrees_with_float64():
    rng = np.random.default_rng(5)
    net64 = TwoLayerNet(30, 10, 5, weight_init_std=1.0, rng=rng)
    net32 = TwoLayerNet.from_params({k: v.astype(np.float32) for k, v in net64.params.items()})
    x = rng.random((8, 30))
    t = rng.integers(0, 5, 8)
    dx32 = net32.input_gradient(x, t)
    assert dx32.dtype == np.float32
    assert _relative_error(dx32.astype(np.float64), net64.input_gradient(x, t)) < 1e-3


@pytest.fixture(scope="module")
def sample_digits(mnist_sample):
    """The 1,000 sample digits as (N, 784) float32 in [0, 1]."""
    images, _ = mnist_sample
    return as_training_arrays(images, np.float32)


def test_integrated_gradients_completeness_on_real_digits(mnist_net, sample_digits):
    x = sample_digits
    t = np.argmax(mnist_net.predict(x), axis=1)
    gaps = []
    for start in range(0, len(x), 100):  # 100 digits x 64 steps per batched pass
        xb, tb = x[start : start + 100], t[start : start + 100]
        attributions, delta = mnist_net.integrated_gradients(xb, tb)
        assert attributions.shape == xb.shape and delta.shape == (len(xb),)
        assert attributions.dtype == np.float32
        rows = np.arange(len(xb))
        p_x = mnist_net.predict(xb)[rows, tb]
        p_black = mnist_net.predict(np.zeros_like(xb))[rows, tb]
        gap = np.abs(attributions.sum(axis=1) - (p_x - p_black))
        np.testing.assert_allclose(gap, np.abs(delta), atol=1e-6)
        gaps.append(gap)
    assert np.max(np.concatenate(gaps)) < 0.02


def test_integrated_gradients_converge_as_steps_grow(mnist_net, sample_digits):
    net = TwoLayerNet.from_params({k: v.astype(np.float64) for k, v in mnist_net.params.items()})
    x = sample_digits[:20].astype(np.float64)
    t = np.argmax(net.predict(x), axis=1)
    worst = [np.abs(net.integrated_gradients(x, t, steps)[1]).max() for steps in (4, 16, 64, 256)]
    assert all(later < earlier / 4 for earlier, later in zip(worst, worst[1:], strict=False))

    # a much finer reference: the midpoint rule at 4,096 points, one path point at a time
    reference_steps = 4096
    mean_grad = np.zeros_like(x)
    for k in range(reference_steps):
        mean_grad += net.input_gradient((k + 0.5) / reference_steps * x, t)
    reference = x * mean_grad / reference_steps
    attributions, _ = net.integrated_gradients(x, t)
    assert _relative_error(attributions, reference) < 1e-3


def test_integrated_gradients_equal_the_path_loop_over_input_gradient():
    """The batched pass (which folds the first affine layer along the path) is the definition:
    input_gradient at each path point, averaged, times x - x'."""
    rng = np.random.default_rng(7)
    net = TwoLayerNet(12, 6, 4, weight_init_std=1.0, rng=rng)
    x, baseline = rng.random((3, 12)), rng.random(12)
    t = np.array([0, 3, 1])
    for steps in (1, 10, DEFAULT_IG_STEPS):
        attributions, delta = net.integrated_gradients(x, t, steps=steps, baseline=baseline)
        alphas = (np.arange(steps) + 0.5) / steps
        loop = np.zeros_like(x)
        for alpha in alphas:
            loop += net.input_gradient(baseline + alpha * (x - baseline), t)
        np.testing.assert_allclose(attributions, (x - baseline) * loop / steps, rtol=1e-10, atol=1e-15)
        p = net.predict(x)[np.arange(3), t] - net.predict(np.tile(baseline, (3, 1)))[np.arange(3), t]
        np.testing.assert_allclose(delta, attributions.sum(axis=1) - p, atol=1e-14)
    # the default steps, and the default baseline: black
    default, _ = net.integrated_gradients(x, t)
    np.testing.assert_array_equal(
        default, net.integrated_gradients(x, t, DEFAULT_IG_STEPS, baseline=np.zeros(12))[0]
    )


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (np.array([0, 4]), r"in \[0, 4\)"),
        (np.array([-1, 0]), r"in \[0, 4\)"),
        (np.array([0.0, 1.0]), "integer classes"),
        (np.array([0, 1, 2]), "one class per row"),
        (np.array([[0], [1]]), "one class per row"),
    ],
)
def test_bad_target_is_rejected(target, message):
    net = TwoLayerNet(3, 2, 4, rng=np.random.default_rng(0))
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match=message):
        net.input_gradient(x, target)
    with pytest.raises(ValueError, match=message):
        net.integrated_gradients(x, target)


@pytest.mark.parametrize("steps", [0, -1, MAX_IG_STEPS + 1, 2.5, True])
def test_bad_steps_are_rejected(steps):
    net = TwoLayerNet(3, 2, 4, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="steps must be an integer"):
        net.integrated_gradients(np.zeros((2, 3)), np.array([0, 1]), steps=steps)


def test_bad_input_and_baseline_shapes_are_rejected():
    net = TwoLayerNet(3, 2, 4, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"x must be \(N, 3\)"):
        net.input_gradient(np.zeros((2, 5)), np.array([0, 1]))
    with pytest.raises(ValueError, match="baseline must be"):
        net.integrated_gradients(np.zeros((2, 3)), np.array([0, 1]), baseline=np.zeros(5))
