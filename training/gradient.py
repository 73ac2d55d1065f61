"""Numerical gradient by central differences, and plain gradient descent."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

#: Step of the central difference (f(x + h) - f(x - h)) / 2h, the textbook's choice.
NUMERICAL_GRADIENT_H = 1e-4


def numerical_gradient(
    f: Callable[[NDArray], float], x: NDArray[np.floating], h: float = NUMERICAL_GRADIENT_H
) -> NDArray[np.floating]:
    """df/dx by central differences for x of any shape; x is perturbed in place and always restored.

    ``f`` is called with ``x`` itself (so a closure over a network's parameters works) and must
    return a scalar. Cost: 2 * x.size calls of ``f``.
    """
    if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating):
        raise TypeError("numerical_gradient needs a floating-point ndarray to perturb in place")
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=[["readwrite"]])  # type: ignore[list-item]
    while not it.finished:
        idx = it.multi_index
        original = x[idx].copy()
        try:
            x[idx] = original + h
            f_plus = float(f(x))
            x[idx] = original - h
            f_minus = float(f(x))
        finally:
            x[idx] = original
        grad[idx] = (f_plus - f_minus) / (2 * h)
        it.iternext()
    return grad


def gradient_descent(
    f: Callable[[NDArray], float],
    init_x: NDArray[np.floating],
    lr: float = 0.01,
    step_num: int = 100,
) -> NDArray[np.floating]:
    """x <- x - lr * df/dx, ``step_num`` times, from a copy of ``init_x``; returns the final x."""
    if step_num < 0:
        raise ValueError("step_num must be >= 0")
    x = np.array(
        init_x,
        dtype=np.float64
        if not np.issubdtype(np.asarray(init_x).dtype, np.floating)
        else np.asarray(init_x).dtype,
        copy=True,
    )
    for _ in range(int(step_num)):
        x -= lr * numerical_gradient(f, x)
    return x
