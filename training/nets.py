"""SimpleNet (the chapter's 2x3 example) and TwoLayerNet: affine -> sigmoid -> affine -> softmax."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from training.functions import (
    CROSS_ENTROPY_EPS,
    cross_entropy_error,
    label_indices,
    labels_to_one_hot,
    mean_squared_error,
    sigmoid,
    softmax,
)
from training.gradient import numerical_gradient

LossName = Literal["cross_entropy", "mean_squared_error"]
LOSSES: tuple[LossName, ...] = ("cross_entropy", "mean_squared_error")
PARAM_NAMES = ("W1", "b1", "W2", "b2")
#: Named weight initialisations; a float is used as the standard deviation itself.
WEIGHT_INITS = ("xavier", "he")
#: Integrated-gradients path points by default. The midpoint rule's completeness gap falls as
#: 1 / steps^2; measured on the 1,000 sample digits with a trained net: max 0.026 at 8, 3e-4 at 64.
DEFAULT_IG_STEPS = 64
#: Upper bound on path points: the batched pass holds N * steps hidden activations at once.
MAX_IG_STEPS = 1024
#: Riemann midpoints: path point k of ``steps`` sits at alpha_k = (k + 1/2) / steps.
IG_MIDPOINT_OFFSET = 0.5


class SimpleNet:
    """The chapter's toy network: z = x @ W with W (2, 3), then softmax and cross-entropy."""

    def __init__(self, rng: np.random.Generator | None = None) -> None:
        rng = rng if rng is not None else np.random.default_rng(0)
        self.W = rng.standard_normal((2, 3))

    def predict(self, x: ArrayLike) -> NDArray[np.floating]:
        """(N, 2) or (2,) -> scores (N, 3) or (3,)."""
        return np.asarray(x) @ self.W

    def loss(self, x: ArrayLike, t: ArrayLike) -> float:
        """Cross-entropy of softmax(predict(x)) against labels t (one-hot or integers)."""
        return cross_entropy_error(softmax(self.predict(x)), t)


def _init_std(spec: float | str, fan_in: int) -> float:
    if isinstance(spec, str):
        if spec == "xavier":
            return float(np.sqrt(1.0 / fan_in))
        if spec == "he":
            return float(np.sqrt(2.0 / fan_in))
        raise ValueError(f"weight_init_std must be a number or one of {WEIGHT_INITS}, got {spec!r}")
    std = float(spec)
    if not np.isfinite(std) or std <= 0:
        raise ValueError(f"weight_init_std must be a positive number, got {spec!r}")
    return std


class _Workspace:
    """Buffers for one batch size, reused by every step so the training loop allocates nothing."""

    def __init__(self, n: int, d: int, h: int, c: int, dtype: np.dtype) -> None:
        self.n = n
        self.a1 = np.empty((n, h), dtype)  # pre-activation, then dL/da1
        self.z1 = np.empty((n, h), dtype)
        self.a2 = np.empty((n, c), dtype)  # logits, then softmax y, then dL/da2
        self.dz1 = np.empty((n, h), dtype)
        self.tmp_nc = np.empty((n, c), dtype)
        self.row = np.empty((n, 1), dtype)
        self.eye = np.eye(c, dtype=dtype)  # row k is the one-hot vector of label k
        self.t_hot = np.empty((n, c), dtype)
        self.ones = np.ones(n, dtype)  # 1^T v sums v over the batch
        self.grads = {
            "W1": np.empty((d, h), dtype),
            "b1": np.empty((h,), dtype),
            "W2": np.empty((h, c), dtype),
            "b2": np.empty((c,), dtype),
        }


class TwoLayerNet:
    """affine (W1, b1) -> sigmoid -> affine (W2, b2) -> softmax, trained on cross-entropy or MSE.

    ``params`` holds ``W1`` (D, H), ``b1`` (H,), ``W2`` (H, C), ``b2`` (C,). ``predict`` returns
    probabilities; ``loss`` and ``gradient`` use ``loss_name`` unless told otherwise.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        weight_init_std: float | str = 0.01,
        rng: np.random.Generator | None = None,
        dtype: type | np.dtype = np.float64,
        loss_name: LossName = "cross_entropy",
    ) -> None:
        for name, value in (
            ("input_size", input_size),
            ("hidden_size", hidden_size),
            ("output_size", output_size),
        ):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        if loss_name not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss_name!r}")
        self.loss_name: LossName = loss_name
        rng = rng if rng is not None else np.random.default_rng(0)
        std1 = _init_std(weight_init_std, input_size)
        std2 = _init_std(weight_init_std, hidden_size)
        self.params: dict[str, NDArray[np.floating]] = {
            "W1": (std1 * rng.standard_normal((input_size, hidden_size))).astype(self.dtype),
            "b1": np.zeros(hidden_size, dtype=self.dtype),
            "W2": (std2 * rng.standard_normal((hidden_size, output_size))).astype(self.dtype),
            "b2": np.zeros(output_size, dtype=self.dtype),
        }
        self._workspace: _Workspace | None = None
        self._last_correct = 0  # correct answers of the last batch sgd_step computed a loss for

    @classmethod
    def from_params(
        cls, params: dict[str, NDArray[np.floating]], loss_name: LossName = "cross_entropy"
    ) -> TwoLayerNet:
        """A network around existing weights (shapes are checked; arrays are used as given)."""
        w1, b1, w2, b2 = (np.asarray(params[k]) for k in PARAM_NAMES)
        d, h = w1.shape
        c = w2.shape[1]
        if b1.shape != (h,) or w2.shape != (h, c) or b2.shape != (c,):
            raise ValueError(
                f"inconsistent shapes: W1 {w1.shape}, b1 {b1.shape}, W2 {w2.shape}, b2 {b2.shape}"
            )
        net = cls.__new__(cls)
        net.dtype = w1.dtype
        net.loss_name = loss_name
        net.params = {"W1": w1, "b1": b1, "W2": w2, "b2": b2}
        net._workspace = None
        net._last_correct = 0
        return net

    @property
    def input_size(self) -> int:
        return int(self.params["W1"].shape[0])

    @property
    def hidden_size(self) -> int:
        return int(self.params["W1"].shape[1])

    @property
    def output_size(self) -> int:
        return int(self.params["W2"].shape[1])

    # --- forward -------------------------------------------------------------------------
    def predict(self, x: ArrayLike) -> NDArray[np.floating]:
        """Probabilities: (N, D) -> (N, C), or (D,) -> (C,)."""
        p = self.params
        x = np.asarray(x, dtype=self.dtype)
        a1 = x @ p["W1"]  # (N, H)
        a1 += p["b1"]
        z1 = _sigmoid_(a1)  # in place: a1 becomes z1
        a2 = z1 @ p["W2"]  # (N, C)
        a2 += p["b2"]
        return _softmax_(a2)  # in place: a2 becomes y

    def loss(self, x: ArrayLike, t: ArrayLike, loss_name: LossName | None = None) -> float:
        """Mean loss over the batch; t is integer labels (N,) or one-hot rows (N, C)."""
        name = loss_name or self.loss_name
        y = self.predict(x)
        if name == "cross_entropy":
            return cross_entropy_error(y, t)
        if name == "mean_squared_error":
            return mean_squared_error(y, t)
        raise ValueError(f"loss must be one of {LOSSES}, got {name!r}")

    def accuracy(self, x: ArrayLike, t: ArrayLike) -> float:
        """Fraction of rows whose argmax matches t (integer labels or one-hot rows)."""
        y = np.atleast_2d(self.predict(x))
        t = np.atleast_1d(np.asarray(t))
        if y.shape[0] == 1 and t.ndim == 1 and t.size == self.output_size > 1:
            t = t.reshape(1, -1)  # a single one-hot row for a single input
        labels = label_indices(t, self.output_size)
        if labels.shape[0] != y.shape[0]:
            raise ValueError(f"{labels.shape[0]} labels for {y.shape[0]} inputs")
        return float(np.mean(np.argmax(y, axis=1) == labels))

    # --- gradients -----------------------------------------------------------------------
    def numerical_gradient(self, x: ArrayLike, t: ArrayLike) -> dict[str, NDArray[np.floating]]:
        """dL/dparams by central differences (slow: 2 forward passes per weight)."""

        def loss_w(_: NDArray) -> float:
            return self.loss(x, t)

        return {k: numerical_gradient(loss_w, self.params[k]) for k in PARAM_NAMES}

    def gradient(self, x: ArrayLike, t: ArrayLike) -> dict[str, NDArray[np.floating]]:
        """dL/dparams by backpropagation; same keys and shapes as ``params``.

        The textbook's computation, one line per step of the chain rule. ``sgd_step`` is the
        same math fused into preallocated buffers; tests hold the two together.
        """
        p = self.params
        x = np.atleast_2d(np.asarray(x, dtype=self.dtype))
        n = x.shape[0]
        t_hot = self._one_hot_targets(np.asarray(t), n)

        # forward: a1 = x W1 + b1, z1 = sigmoid(a1), a2 = z1 W2 + b2, y = softmax(a2)
        a1 = x @ p["W1"] + p["b1"]  # (N, H)
        z1 = sigmoid(a1)
        a2 = z1 @ p["W2"] + p["b2"]  # (N, C)
        y = softmax(a2)

        # backward: dL/da2, then name for name back through the forward pass
        if self.loss_name == "cross_entropy":
            da2 = (y - t_hot) / n  # softmax followed by cross-entropy
        else:
            dy = (y - t_hot) / n  # d(0.5 * sum((y - t)^2) / N) / dy
            da2 = y * (dy - np.sum(dy * y, axis=1, keepdims=True))  # through softmax's Jacobian
        grads = {"W2": z1.T @ da2, "b2": np.sum(da2, axis=0)}
        dz1 = da2 @ p["W2"].T
        da1 = dz1 * z1 * (1 - z1)  # sigmoid'(a1) = z1 (1 - z1)
        grads["W1"] = x.T @ da1
        grads["b1"] = np.sum(da1, axis=0)
        return {k: grads[k].astype(self.dtype, copy=False) for k in PARAM_NAMES}

    def _one_hot_targets(self, t: NDArray, n: int) -> NDArray[np.floating]:
        """Labels (N,) or one-hot rows (N, C), checked against the batch -> one-hot rows (N, C)."""
        c = self.output_size
        if t.ndim == 2 and t.shape != (n, c):
            raise ValueError(f"one-hot labels must be ({n}, {c}), got {t.shape}")
        if t.ndim != 2 and t.shape != (n,):
            raise ValueError(f"expected {n} labels, got shape {t.shape}")
        return labels_to_one_hot(t, c, dtype=self.dtype)

    def sgd_step(
        self, x: NDArray[np.floating], t: NDArray, learning_rate: float, *, with_loss: bool = True
    ) -> float:
        """One SGD update on batch (x, t) in place; returns the batch loss before the update
        (NaN with ``with_loss=False``: a loop that shows no loss skips its 4 numpy calls a step).

        The fast path of ``params[k] -= learning_rate * gradient(x, t)[k]``: the same math fused
        into preallocated buffers (``_forward_backward``), so a training loop of equal-sized
        batches allocates nothing beyond the last partial batch.
        """
        n = x.shape[0]
        ws = self._workspace
        if ws is None or ws.n != n:
            ws = _Workspace(n, self.input_size, self.hidden_size, self.output_size, self.dtype)
            if self._workspace is None or n > self._workspace.n:
                self._workspace = ws
        loss = self._forward_backward(x, t, ws, scale=learning_rate, with_loss=with_loss)
        for k, g in ws.grads.items():
            self.params[k] -= g
        return loss

    def sgd_step_metrics(
        self, x: NDArray[np.floating], t: NDArray, learning_rate: float
    ) -> tuple[float, int]:
        """``sgd_step`` that also counts the batch's correct answers (before the update): the
        training metrics of an epoch as running means over its own steps, at no extra pass."""
        loss = self.sgd_step(x, t, learning_rate, with_loss=True)
        return loss, self._last_correct

    def _forward_backward(
        self, x: NDArray, t: NDArray, ws: _Workspace, scale: float, with_loss: bool = True
    ) -> float:
        """Forward pass, loss (NaN unless ``with_loss``), and scale * gradients into ws.grads.
        Backward mirrors forward."""
        p = self.params
        n, c = x.shape[0], self.output_size
        one_hot = t.ndim == 2
        if one_hot and t.shape != (n, c):
            raise ValueError(f"one-hot labels must be ({n}, {c}), got {t.shape}")
        if not one_hot and t.shape != (n,):
            raise ValueError(f"expected {n} labels, got shape {t.shape}")

        # forward: a1 = x W1 + b1, z1 = sigmoid(a1), a2 = z1 W2 + b2, y = softmax(a2)
        a1, z1, y = ws.a1, ws.z1, ws.a2
        np.matmul(x, p["W1"], out=a1)
        a1 += p["b1"]
        np.multiply(a1, 0.5, out=z1)
        _sigmoid_(z1, prescaled=True)
        np.matmul(z1, p["W2"], out=y)
        y += p["b2"]
        # (the ndarray reduction methods skip np.max/np.sum's Python wrapper: a few us a call)
        y.max(axis=1, keepdims=True, out=ws.row)
        y -= ws.row
        np.exp(y, out=y)
        y.sum(axis=1, keepdims=True, out=ws.row)
        y /= ws.row

        if with_loss:  # the batch's correct answers, for running accuracy (a few us)
            labels = t.argmax(axis=1) if one_hot else t
            self._last_correct = int((y.argmax(axis=1) == labels).sum())

        # loss and da2 = dL/da2 (scaled), written over y
        da2 = y
        if self.loss_name == "cross_entropy":
            # integer labels pick rows of the identity: one-hot targets without fancy indexing
            t_hot = t if one_hot else ws.eye.take(t.astype(np.intp, copy=False), axis=0, out=ws.t_hot)
            loss = math.nan
            if with_loss:
                log_y = np.maximum(y, CROSS_ENTROPY_EPS, out=ws.tmp_nc)
                np.log(log_y, out=log_y)
                loss = -float(np.vdot(t_hot, log_y)) / n
            # softmax followed by cross-entropy: dL/da2 = (y - t) / N
            da2 -= t_hot
            da2 *= scale / n
        else:
            t_hot = t if one_hot else labels_to_one_hot(t, c, dtype=self.dtype)
            dy = ws.tmp_nc
            np.subtract(y, t_hot, out=dy)  # y - t
            loss = 0.5 * float(np.sum(dy * dy)) / n if with_loss else math.nan
            dy *= scale / n  # dL/dy
            # through softmax: da2 = y * (dy - sum(dy * y, axis=1))
            np.sum(dy * y, axis=1, keepdims=True, out=ws.row)
            dy -= ws.row
            da2 *= dy

        # backward: mirrors forward name for name
        g = ws.grads
        np.matmul(z1.T, da2, out=g["W2"])
        np.matmul(ws.ones, da2, out=g["b2"])  # db2 = 1^T da2
        dz1 = ws.dz1
        np.matmul(da2, p["W2"].T, out=dz1)
        # sigmoid'(a1) = z1 * (1 - z1); da1 written over a1
        da1 = a1
        np.subtract(1, z1, out=da1)
        da1 *= z1
        da1 *= dz1
        np.matmul(x.T, da1, out=g["W1"])
        np.matmul(ws.ones, da1, out=g["b1"])  # db1 = 1^T da1
        return loss

    # --- explanations (issue 12) ---------------------------------------------------------
    def input_gradient(self, x: ArrayLike, target: ArrayLike) -> NDArray[np.floating]:
        """dp_target/dx by backpropagation: x (N, D), target (N,) integer classes -> (N, D)."""
        p = self.params
        x = np.asarray(x, dtype=self.dtype)
        if x.ndim != 2 or x.shape[1] != self.input_size:
            raise ValueError(f"x must be (N, {self.input_size}), got shape {x.shape}")
        t = self._target_classes(target, x.shape[0])

        # forward: a1 = x W1 + b1, z1 = sigmoid(a1), a2 = z1 W2 + b2, y = softmax(a2)
        a1 = x @ p["W1"] + p["b1"]  # (N, H)
        z1 = sigmoid(a1)
        a2 = z1 @ p["W2"] + p["b2"]  # (N, C)
        y = softmax(a2)

        # backward of p_t = y[t], name for name
        dy = np.eye(self.output_size, dtype=self.dtype)[t]  # dp_t/dy: the one-hot row of t
        y_t = np.take_along_axis(y, t[:, None], axis=1)  # (N, 1)
        da2 = y_t * (dy - y)  # softmax Jacobian row t: y_t * (onehot_t - y)
        dz1 = da2 @ p["W2"].T  # (N, H)
        da1 = dz1 * z1 * (1 - z1)  # sigmoid'(a1) = z1 (1 - z1)
        dx = da1 @ p["W1"].T  # (N, D)
        return dx

    def integrated_gradients(
        self,
        x: ArrayLike,
        target: ArrayLike,
        steps: int = DEFAULT_IG_STEPS,
        baseline: ArrayLike | None = None,
    ) -> tuple[NDArray[np.floating], NDArray[np.floating]]:
        """Integrated gradients of p_target: x (N, D), target (N,) -> attributions (N, D), delta (N,).

        Sundararajan et al. (2017): attribution_i = (x_i - x'_i) * integral_0^1 dp_t/dx_i at
        x' + alpha (x - x') d alpha, from a baseline x' (default zeros: a black image) along the
        straight path. The integral uses the midpoint rule, alpha_k = (k + 1/2) / steps: its error
        falls as 1 / steps^2 like the trapezoid rule's but is about half as large for the same
        number of gradient evaluations, and every point gets the same weight 1 / steps. All
        N * steps path points go through the network in one batched pass.

        ``delta`` = sum_i attribution_i - (p_t(x) - p_t(x')): the completeness axiom says it is 0
        for the exact integral, so |delta| measures the quadrature error.
        """
        if isinstance(steps, bool) or not isinstance(steps, int | np.integer):
            raise ValueError(f"steps must be an integer in [1, {MAX_IG_STEPS}], got {steps!r}")
        if not 1 <= steps <= MAX_IG_STEPS:
            raise ValueError(f"steps must be an integer in [1, {MAX_IG_STEPS}], got {steps}")
        x = np.asarray(x, dtype=self.dtype)
        if x.ndim != 2 or x.shape[1] != self.input_size:
            raise ValueError(f"x must be (N, {self.input_size}), got shape {x.shape}")
        n, d = x.shape
        t = self._target_classes(target, n)
        if baseline is None:
            x_base = np.zeros_like(x)
        else:
            b = np.asarray(baseline, dtype=self.dtype)
            if b.shape not in ((d,), (n, d)):
                raise ValueError(f"baseline must be ({d},) or ({n}, {d}), got shape {b.shape}")
            x_base = np.broadcast_to(b, x.shape)

        p = self.params
        alpha = ((np.arange(steps) + IG_MIDPOINT_OFFSET) / steps).astype(self.dtype)  # (S,) midpoints
        dx = x - x_base  # (N, D): the path's direction

        # The first layer is affine, so along the path a1 = a1(x') + alpha * (x - x') W1: two
        # products with W1 per input instead of one per path point; the rest runs on all N * S
        # points at once, as input_gradient would (checked against it in the tests).
        a1_base = x_base @ p["W1"] + p["b1"]  # (N, H)
        a1_dir = dx @ p["W1"]  # (N, H)
        a1 = (a1_base[:, None, :] + alpha[None, :, None] * a1_dir[:, None, :]).reshape(n * steps, -1)
        z1 = sigmoid(a1)  # (N S, H)
        a2 = z1 @ p["W2"] + p["b2"]  # (N S, C)
        y = softmax(a2)

        # backward of p_t at every point, as in input_gradient, down to the first layer
        points, t_path = np.arange(n * steps), np.repeat(t, steps)
        y_t = y[points, t_path][:, None]  # (N S, 1)
        da2 = -y_t * y  # softmax Jacobian row t: y_t * (onehot_t - y) ...
        da2[points, t_path] += y_t[:, 0]  # ... whose onehot part is y_t at t
        dz1 = da2 @ p["W2"].T  # (N S, H)
        da1 = dz1 * z1 * (1 - z1)
        # dp_t/dx = da1 W1^T is linear in da1: average over the path first, then one product
        mean_grad = da1.reshape(n, steps, -1).mean(axis=1) @ p["W1"].T  # (N, D)
        attributions = dx * mean_grad

        # p_t at both ends of the path, x' and x, in one pass
        ends = softmax(sigmoid(np.concatenate([a1_base, a1_base + a1_dir])) @ p["W2"] + p["b2"])
        rows = np.arange(n)
        p_base, p_x = ends[rows, t], ends[n + rows, t]
        convergence_delta = attributions.sum(axis=1) - (p_x - p_base)
        return attributions, convergence_delta

    def _target_classes(self, target: ArrayLike, n: int) -> NDArray[np.intp]:
        """target (N,) integer classes in [0, C), checked -> (N,) intp."""
        t = np.asarray(target)
        if t.dtype.kind not in "iu":
            raise ValueError(f"target must be integer classes, got dtype {t.dtype}")
        if t.shape != (n,):
            raise ValueError(f"target must hold one class per row: shape ({n},), got {t.shape}")
        c = self.output_size
        if n and (t.min() < 0 or t.max() >= c):
            raise ValueError(f"target classes must be in [0, {c}), got {t.min()}..{t.max()}")
        return t.astype(np.intp, copy=False)


def gradient_relative_errors(net: TwoLayerNet, x: ArrayLike, t: ArrayLike) -> dict[str, float]:
    """||analytic - numerical|| / (||analytic|| + ||numerical||) for each parameter."""
    analytic = net.gradient(x, t)
    numerical = net.numerical_gradient(x, t)
    errors = {}
    for k, a in analytic.items():
        n = numerical[k]
        denom = float(np.linalg.norm(a) + np.linalg.norm(n))
        errors[k] = float(np.linalg.norm(a - n)) / denom if denom > 0 else 0.0
    return errors


def _softmax_(a: NDArray[np.floating]) -> NDArray[np.floating]:
    """In-place row-wise softmax of logits a (N, C) or (C,); the same function as ``softmax``."""
    a -= a.max(axis=-1, keepdims=True)
    np.exp(a, out=a)
    a /= a.sum(axis=-1, keepdims=True)
    return a


def _sigmoid_(a: NDArray[np.floating], prescaled: bool = False) -> NDArray[np.floating]:
    """In-place sigmoid via 0.5 * (1 + tanh(a / 2)); with ``prescaled`` a already holds a / 2."""
    if not prescaled:
        a *= 0.5
    np.tanh(a, out=a)
    a *= 0.5
    a += 0.5
    return a
