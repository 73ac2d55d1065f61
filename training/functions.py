"""Activation and loss functions of the textbook chapter, batched and numerically safe.

Every function takes arrays shaped ``(N, C)`` (a batch) or ``(C,)`` (one sample, treated as a
batch of one) and never returns NaN or inf for finite inputs.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

#: Probabilities are floored at this value before ``log`` so a zero never gives ``inf``.
CROSS_ENTROPY_EPS = 1e-7


def sigmoid(x: ArrayLike) -> NDArray[np.floating]:
    """1 / (1 + exp(-x)), element-wise, any shape; stable for |x| up to float max."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    # 0.5 * (1 + tanh(x / 2)) is the same function and never overflows.
    out = np.multiply(x, 0.5)
    np.tanh(out, out=out)
    out *= 0.5
    out += 0.5
    return out


def sigmoid_grad(x: ArrayLike) -> NDArray[np.floating]:
    """d sigmoid(x) / dx = sigmoid(x) * (1 - sigmoid(x)), element-wise, any shape."""
    z = sigmoid(x)
    return z * (1.0 - z)


def softmax(x: ArrayLike) -> NDArray[np.floating]:
    """Row-wise softmax: (N, C) -> (N, C) or (C,) -> (C,); subtracts the row max first."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    shifted = x - np.max(x, axis=-1, keepdims=True)
    e = np.exp(shifted)
    e /= np.sum(e, axis=-1, keepdims=True)
    return e


def _as_batch(y: ArrayLike, t: ArrayLike) -> tuple[NDArray[np.floating], NDArray]:
    y = np.asarray(y)
    t = np.asarray(t)
    if y.ndim == 1:
        y = y.reshape(1, -1)
        t = t.reshape(1, -1) if t.size == y.size else t.reshape(1)
    if y.ndim != 2:
        raise ValueError(f"predictions must be (N, C) or (C,), got shape {y.shape}")
    if y.shape[0] == 0:
        raise ValueError("cannot compute a loss over an empty batch")
    return y, t


def labels_to_one_hot(t: ArrayLike, num_classes: int, dtype: np.dtype | type = np.float64) -> NDArray:
    """Integer class labels (N,) -> one-hot rows (N, num_classes); one-hot input passes through."""
    t = np.asarray(t)
    if t.ndim == 2:
        if t.shape[1] != num_classes:
            raise ValueError(f"one-hot labels have {t.shape[1]} columns, expected {num_classes}")
        return t.astype(dtype, copy=False)
    labels = _integer_labels(t, num_classes)
    one_hot = np.zeros((labels.shape[0], num_classes), dtype=dtype)
    one_hot[np.arange(labels.shape[0]), labels] = 1
    return one_hot


def _integer_labels(t: NDArray, num_classes: int) -> NDArray[np.intp]:
    if t.ndim != 1:
        raise ValueError(f"integer labels must be (N,), got shape {t.shape}")
    if t.dtype.kind == "f":
        if not np.all(np.isfinite(t)) or not np.all(t == np.round(t)):
            raise ValueError("integer labels must be whole numbers")
    elif t.dtype.kind not in "iub":
        raise ValueError(f"labels must be numbers, got dtype {t.dtype}")
    labels = t.astype(np.intp)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes - 1}]")
    return labels


def label_indices(t: ArrayLike, num_classes: int) -> NDArray[np.intp]:
    """Integer labels (N,) or one-hot rows (N, C) -> integer labels (N,)."""
    t = np.asarray(t)
    if t.ndim == 2:
        if t.shape[1] != num_classes:
            raise ValueError(f"one-hot labels have {t.shape[1]} columns, expected {num_classes}")
        return np.argmax(t, axis=1)
    return _integer_labels(t, num_classes)


def mean_squared_error(y: ArrayLike, t: ArrayLike) -> float:
    """0.5 * sum((y - t)^2) / N for y (N, C) and t one-hot (N, C) or integer labels (N,)."""
    y, t = _as_batch(y, t)
    if t.shape != y.shape:
        t = labels_to_one_hot(t, y.shape[1], dtype=y.dtype)
    if t.shape[0] != y.shape[0]:
        raise ValueError(f"{t.shape[0]} labels for {y.shape[0]} predictions")
    return float(0.5 * np.sum((y - t) ** 2) / y.shape[0])


def cross_entropy_error(y: ArrayLike, t: ArrayLike) -> float:
    """-sum(t * log(y)) / N for probabilities y (N, C) and labels t: one-hot (N, C) or integers (N,).

    Probabilities are floored at ``CROSS_ENTROPY_EPS``, so a zero probability costs
    -log(1e-7) ~ 16.1 instead of inf, and the gradient is exact wherever y > eps.
    """
    y, t = _as_batch(y, t)
    n, c = y.shape
    if t.shape[0] != n:
        raise ValueError(f"{t.shape[0]} labels for {n} predictions")
    if t.shape == y.shape:
        log_y = np.log(np.clip(y, CROSS_ENTROPY_EPS, None))
        return float(-np.sum(t * log_y) / n)
    labels = _integer_labels(t, c)
    picked = y[np.arange(n), labels]
    return float(-np.sum(np.log(np.clip(picked, CROSS_ENTROPY_EPS, None))) / n)
