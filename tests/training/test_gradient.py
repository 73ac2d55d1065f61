import numpy as np
import pytest

from training import gradient_descent, numerical_gradient


def function_2(x):
    return float(np.sum(x**2))


def test_numerical_gradient_textbook_points():
    np.testing.assert_allclose(numerical_gradient(function_2, np.array([3.0, 4.0])), [6.0, 8.0])
    np.testing.assert_allclose(numerical_gradient(function_2, np.array([0.0, 2.0])), [0.0, 4.0])


def test_numerical_gradient_any_shape():
    x = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    np.testing.assert_allclose(numerical_gradient(function_2, x), 2 * x, rtol=1e-6, atol=1e-6)


def test_numerical_gradient_restores_x_when_f_raises():
    x = np.array([1.0, 2.0])
    calls = []

    def boom(v):
        calls.append(v.copy())
        if len(calls) == 2:
            raise RuntimeError("boom")
        return function_2(v)

    with pytest.raises(RuntimeError):
        numerical_gradient(boom, x)
    np.testing.assert_array_equal(x, [1.0, 2.0])
    assert calls[0][0] != 1.0  # it really did perturb before failing


def test_numerical_gradient_needs_float_array():
    with pytest.raises(TypeError):
        numerical_gradient(function_2, np.array([1, 2]))


def test_gradient_descent_reaches_origin():
    x = gradient_descent(function_2, np.array([-3.0, 4.0]), lr=0.1, step_num=100)
    np.testing.assert_allclose(x, [0.0, 0.0], atol=1e-8)


def test_gradient_descent_does_not_modify_init():
    init = np.array([-3.0, 4.0])
    gradient_descent(function_2, init, lr=0.1, step_num=10)
    np.testing.assert_array_equal(init, [-3.0, 4.0])


def test_gradient_descent_learning_rate_extremes():
    # too large diverges, too small barely moves: the textbook's point
    big = gradient_descent(function_2, np.array([-3.0, 4.0]), lr=10.0, step_num=100)
    small = gradient_descent(function_2, np.array([-3.0, 4.0]), lr=1e-10, step_num=100)
    assert np.linalg.norm(big) > 1e10
    np.testing.assert_allclose(small, [-3.0, 4.0], rtol=1e-6)


def test_gradient_descent_rejects_negative_steps():
    with pytest.raises(ValueError):
        gradient_descent(function_2, np.array([1.0]), step_num=-1)
