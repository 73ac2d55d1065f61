import numpy as np
import pytest

from training import (
    CROSS_ENTROPY_EPS,
    cross_entropy_error,
    label_indices,
    labels_to_one_hot,
    mean_squared_error,
    sigmoid,
    sigmoid_grad,
    softmax,
)
from training.gradient import numerical_gradient


def test_sigmoid_values_and_extremes():
    x = np.array([-1e4, -1.0, 0.0, 1.0, 1e4])
    y = sigmoid(x)
    np.testing.assert_allclose(y, [0.0, 1 / (1 + np.e), 0.5, 1 / (1 + np.exp(-1)), 1.0], atol=1e-15)
    assert np.all(np.isfinite(sigmoid(np.array([-1e308, 1e308]))))


def test_sigmoid_keeps_float32_and_accepts_ints():
    assert sigmoid(np.zeros(3, np.float32)).dtype == np.float32
    np.testing.assert_allclose(sigmoid([0, 0]), [0.5, 0.5])


def test_sigmoid_grad_matches_numerical():
    x = np.linspace(-5, 5, 11)
    numeric = np.array([numerical_gradient(lambda v: float(sigmoid(v)[0]), np.array([xi]))[0] for xi in x])
    np.testing.assert_allclose(sigmoid_grad(x), numeric, rtol=1e-6)


def test_softmax_rows_sum_to_one_and_stable():
    a = np.array([[1e4, 0.0, -1e4], [1.0, 2.0, 3.0]])
    y = softmax(a)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y.sum(axis=1), 1.0)
    np.testing.assert_allclose(y[0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(y[1], np.exp([1, 2, 3]) / np.exp([1, 2, 3]).sum())


def test_softmax_is_row_wise_not_global():
    a = np.array([[0.0, 0.0], [100.0, 100.0]])
    np.testing.assert_allclose(softmax(a), 0.5)


def test_softmax_single_vector():
    np.testing.assert_allclose(softmax(np.array([0.0, np.log(3.0)])), [0.25, 0.75])


def test_mean_squared_error_textbook_example():
    t = [0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
    y = [0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0]
    assert mean_squared_error(np.array(y), np.array(t)) == pytest.approx(0.0975)


def test_cross_entropy_textbook_example():
    t = np.array([0, 0, 1, 0, 0, 0, 0, 0, 0, 0])
    y = np.array([0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0])
    assert cross_entropy_error(y, t) == pytest.approx(-np.log(0.6))


def test_cross_entropy_integer_and_one_hot_labels_agree():
    rng = np.random.default_rng(0)
    y = softmax(rng.standard_normal((8, 5)))
    labels = rng.integers(0, 5, 8)
    one_hot = labels_to_one_hot(labels, 5)
    assert cross_entropy_error(y, labels) == pytest.approx(cross_entropy_error(y, one_hot))
    assert mean_squared_error(y, labels) == pytest.approx(mean_squared_error(y, one_hot))


def test_cross_entropy_zero_probability_is_finite():
    y = np.array([[0.0, 1.0], [1.0, 0.0]])
    loss = cross_entropy_error(y, np.array([0, 1]))
    assert np.isfinite(loss)
    assert loss == pytest.approx(-np.log(CROSS_ENTROPY_EPS))


def test_cross_entropy_is_batch_mean():
    y = np.array([[0.5, 0.5], [0.25, 0.75]])
    assert cross_entropy_error(y, [0, 1]) == pytest.approx((-np.log(0.5) - np.log(0.75)) / 2)


@pytest.mark.parametrize(
    ("y", "t", "message"),
    [
        (np.ones((2, 3)) / 3, np.array([0, 1, 2]), "3 labels for 2"),
        (np.ones((2, 3)) / 3, np.array([0, 3]), r"\[0, 2\]"),
        (np.ones((2, 3)) / 3, np.array([0.5, 1.0]), "whole numbers"),
        (np.ones((0, 3)), np.array([]), "empty batch"),
        (np.ones((2, 2, 2)), np.array([0, 1]), "must be"),
        (np.ones((2, 3)) / 3, np.array(["a", "b"]), "numbers"),
    ],
)
def test_cross_entropy_rejects_bad_labels(y, t, message):
    with pytest.raises(ValueError, match=message):
        cross_entropy_error(y, t)


def test_label_indices_both_forms():
    np.testing.assert_array_equal(label_indices([[0, 1], [1, 0]], 2), [1, 0])
    np.testing.assert_array_equal(label_indices([1, 0], 2), [1, 0])
    with pytest.raises(ValueError, match="columns"):
        label_indices([[0, 1, 0]], 2)
