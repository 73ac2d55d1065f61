import numpy as np
import pytest

from training import LOSSES, SimpleNet, TwoLayerNet, numerical_gradient, softmax
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
