"""The data plane: one path from a request's numbers or images to the model's answer.

Every protocol is an adapter over this module (docs/ARCHITECTURE.md). An adapter decodes its
request into the pieces named here and encodes what ``infer`` answers; what a request may be
is decided here, once, for all of them:

* ``batch_from_rows``: numbers whose structure must be proved (v1's ``inputs``: nested lists,
  each input flat or as the image grid) -> an array (N, ...);
* ``check_tensor_shape`` and ``tensor_array``: numbers with a declared shape (the Open
  Inference Protocol's tensors, JSON or binary) -> an array (N, ...);
* ``model_input``: such an array -> the model's float32 batch (N, D) in [0, 1]: the shape of
  each input against the model's, the batch against ``MAX_BATCH_SIZE``, finiteness, the range of
  the values and their scale (pixel values 0-255 are divided by 255, as training did);
* ``batch_from_images``: image files -> the model's batch, by ``service.images``;
* ``infer``: the forward pass, the labels, and for /metrics the per-class prediction counts and
  the confidence histogram;
* ``explain``: why: the attributions of each input's pixels to a class's probability, by the
  network's own backpropagation (``explain_options`` checks what a request asks for).

A request that does not fit raises ``InputError`` with a ``reason`` and its parameters; each
protocol words it in its own error shape (``message`` takes the protocol's templates), so the
rules cannot differ between protocols while their messages follow their conventions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from service import images
from service.errors import ImageTooLarge
from service.inputs import JsonArray, NotNumbers
from service.metrics import count_predictions
from service.registry import Model
from training.nets import DEFAULT_IG_STEPS, MAX_IG_STEPS

#: The largest pixel value of 8-bit images: integer pixel values are divided by it.
PIXEL_MAX = 255


@dataclass(frozen=True)
class InputSpec:
    """What one model accepts: built once per model when it loads, read by every protocol."""

    input_shape: tuple[int, ...] | None = None
    #: (H, W) an image is turned into, or None if the model does not take images.
    image_size: tuple[int, int] | None = None
    image_style: str = "mnist"
    num_classes: int | None = None
    max_batch_size: int = 1000
    max_image_pixels: int = 4096 * 4096

    @cached_property
    def input_size(self) -> int | None:
        return None if self.input_shape is None else math.prod(self.input_shape)

    @cached_property
    def accepted_shapes(self) -> tuple[tuple[int, ...], ...]:
        """Per-input shapes accepted: the metadata's shape, flat, and the image grid."""
        if self.input_shape is None:
            return ()
        shapes = [self.input_shape, (math.prod(self.input_shape),)]
        if self.image_size is not None:
            shapes.append(self.image_size)
        return tuple(dict.fromkeys(shapes))

    @cached_property
    def accepted_text(self) -> str:
        return " or ".join(map(shape_text, self.accepted_shapes)) or "a list of numbers"


def shape_text(shape: tuple[int, ...]) -> str:
    """How an input's shape reads in a message: "784 numbers", "28x28 nested lists"."""
    return f"{shape[0]} numbers" if len(shape) == 1 else "x".join(map(str, shape)) + " nested lists"


class InputError(ValueError):
    """A request's inputs do not fit the model. ``reason`` keys the protocol's message
    templates; ``params`` fill them in."""

    def __init__(self, reason: str, **params: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.params = params

    def message(self, templates: Mapping[str, str], **extra: Any) -> str:
        return templates[self.reason].format(**self.params, **extra)


class Inference(NamedTuple):
    """What the network answered for a batch: probabilities (N, C) and labels (N,)."""

    probabilities: NDArray[np.floating]
    labels: NDArray[np.intp]


class Explanation(NamedTuple):
    """Why the network answered as it did, per input: ``attributions`` (N, D) of the ``targets``
    class's probability; ``convergence_delta`` (N,) for integrated gradients, else None."""

    inference: Inference
    method: str
    targets: NDArray[np.intp]
    steps: int | None
    attributions: NDArray[np.floating]
    convergence_delta: NDArray[np.floating] | None


#: Explanation methods: the gradient of the target's probability with respect to the input
#: (a saliency map), or integrated gradients from a black image (Sundararajan et al., 2017).
EXPLAIN_METHODS = ("integrated_gradients", "gradient")
DEFAULT_EXPLAIN_METHOD = "integrated_gradients"
DEFAULT_EXPLAIN_STEPS = DEFAULT_IG_STEPS
MAX_EXPLAIN_STEPS = MAX_IG_STEPS
#: Integrated gradients backpropagate inputs x steps rows: a request may ask for this many
#: (65,536 rows: about 20 GFLOP, well under a second), computed this many at a time (4,096
#: rows of 784 float32: 13 MB per array), so memory does not grow with the batch.
MAX_EXPLAIN_ROWS = 65_536
EXPLAIN_CHUNK_ROWS = 4_096


# --- numbers -> array ---------------------------------------------------------------------
def batch_from_rows(value: Any, spec: InputSpec) -> NDArray[Any]:
    """A batch of inputs given as nested lists (a ``JsonArray`` or plain lists) -> (N, ...).

    A ``JsonArray`` that is provably a rectangular batch of numbers is copied straight into
    numpy by the parser. Anything else goes through one ``np.asarray``: ragged rows, strings,
    ``null`` and all-boolean lists give dtypes other than int/float and are refused. (A boolean
    mixed with numbers would be read as 0 or 1: ``service.inputs.loads_json`` turns booleans in
    arrays into ``null`` first.)
    """
    if isinstance(value, JsonArray):
        check_batch_size(len(value), spec)
        try:
            arr = value.rows()
        except NotNumbers:
            raise InputError("numbers") from None
        if arr is not None:
            return arr
        value = value.to_list()
    if not isinstance(value, list):
        raise InputError("type")
    if not value:
        raise InputError("empty")
    if not isinstance(value[0], list):
        raise InputError("unbatched")
    check_batch_size(len(value), spec)
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        raise InputError("ragged") from None
    if arr.dtype.kind not in "iuf":
        raise InputError("ragged" if _is_ragged(value) else "numbers")
    return arr


def check_tensor_shape(shape: Sequence[int], spec: InputSpec) -> None:
    """A tensor's declared shape [N, ...]: each input's shape, and the batch's size."""
    check_input_shape(tuple(shape[1:]) if len(shape) >= 2 else None, spec, got=list(shape))
    check_batch_size(shape[0], spec)


def tensor_array(shape: Sequence[int], values: JsonArray | list[Any] | NDArray[Any]) -> NDArray[Any]:
    """A tensor's values -> an array of its declared ``shape``.

    ``values`` are row-major, flat or nested any way (JSON), or already an array (binary data).
    """
    flat = values if isinstance(values, np.ndarray) else _flat_numbers(values)
    count = math.prod(shape)
    if flat.size != count:
        raise InputError("count", shape=list(shape), count=count, got=flat.size)
    return flat.reshape(tuple(shape))


def _flat_numbers(values: JsonArray | list[Any]) -> NDArray[np.float64]:
    if isinstance(values, JsonArray):
        flat = values.flat()
        if flat is not None:
            return flat
    elif isinstance(values, list):  # parsed by the json module (a body with NaN or Infinity)
        out: list[Any] = []
        try:
            if _flatten(values, out):
                return np.asarray(out, dtype=np.float64)
        except OverflowError:  # an integer past float64 (only the json module reads those)
            raise InputError("finite") from None
    raise InputError("numbers")


def _flatten(value: Any, out: list[Any]) -> bool:
    if isinstance(value, list):
        return all(_flatten(v, out) for v in value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    out.append(value)
    return True


def _is_ragged(value: list[Any]) -> bool:
    """True if the top-level rows are lists of differing lengths (only called on failures)."""
    lengths = {len(row) if isinstance(row, list) else -1 for row in value}
    return len(lengths) > 1 and -1 not in lengths


# --- array -> the model's batch -----------------------------------------------------------
def check_batch_size(n: int, spec: InputSpec) -> None:
    if n < 1:
        raise InputError("empty")
    if n > spec.max_batch_size:
        raise InputError("too_many", max=spec.max_batch_size, n=n)


def check_input_shape(shape: tuple[int, ...] | None, spec: InputSpec, got: Any = None) -> None:
    """One input's shape against the model's (None: the batch has no per-input shape)."""
    accepted = spec.accepted_shapes
    if shape is None or not math.prod(shape) or (accepted and shape not in accepted):
        raise InputError(
            "shape",
            accepted=spec.accepted_text,
            accepted_shapes=" or ".join(str([-1, *s]) for s in spec.accepted_shapes),
            got=got if got is not None else (shape_text(shape) if shape else "single numbers, not inputs"),
        )


def model_input(
    arr: NDArray[Any], spec: InputSpec, *, top: float = 1.0, whole: bool = False, shape_checked: bool = False
) -> NDArray[np.float32]:
    """(N, ...) numbers -> the model's batch (N, D) float32 in [0, 1].

    ``top`` is the largest value allowed (1, or 255 for pixel values, which are then divided by
    255); ``whole`` also refuses fractions (integer datatypes). One ``min`` and one ``max`` over
    the whole array decide the common case (NaN fails both).
    """
    if not shape_checked:
        check_input_shape(arr.shape[1:] if arr.ndim >= 2 else None, spec)
    if whole:
        fraction = arr.dtype.kind == "f" and not (arr == np.floor(arr)).all()
        if not (arr.min() >= 0 and arr.max() <= top) or fraction:
            raise InputError("whole", top=top)
        return (arr.astype(np.float32) / np.float32(top)).reshape(len(arr), -1)
    flat = arr.reshape(len(arr), -1)
    if flat.dtype != np.float32 and flat.min() >= 0 and flat.max() <= top:  # (False for NaN)
        x = flat.astype(np.float32)  # the common case: in range already, nothing can overflow
    else:
        with np.errstate(over="ignore"):  # beyond float32 becomes inf: refused as not finite
            x = flat.astype(np.float32, copy=False)
        if not (x.min() >= 0 and x.max() <= top):  # (False for NaN)
            if not np.isfinite(x).all():
                raise InputError("finite")
            raise InputError("range", top=top)
    return x if top == 1 else x / np.float32(top)


def check_images(n: int, spec: InputSpec) -> None:
    """A request's count of images, and that the model takes images at all."""
    check_batch_size(n, spec)
    if spec.image_size is None:
        raise InputError("not_images")


def batch_from_images(files: Sequence[bytes], spec: InputSpec, preprocess: bool) -> NDArray[np.float32]:
    """Image files -> the model's batch (N, D) float32 in [0, 1] (``service.images``).

    An image that cannot be decoded: ``InputError("image", index=i, problem=...)``; one over
    the pixel limit: ``ImageTooLarge`` (413) with the image's index in its details.
    """
    check_images(len(files), spec)
    assert spec.image_size is not None  # (checked)
    batch = np.empty((len(files), *spec.image_size), dtype=np.float32)
    for i, data in enumerate(files):
        try:
            batch[i] = images.load_image(
                data,
                spec.image_size,
                spec.image_style,
                preprocess=preprocess,
                max_pixels=spec.max_image_pixels,
            )
        except images.InvalidImage as exc:
            raise InputError("image", index=i, problem=str(exc)) from None
        except ImageTooLarge as exc:
            exc.details = {"images": {i: [exc.message]}}
            raise
    return batch.reshape(len(files), -1)


# --- the model ----------------------------------------------------------------------------
def infer(model: Model, x: NDArray[np.floating]) -> Inference:
    """The network's answer for the batch ``x`` (N, D), counted by class and by confidence (the
    top probability of each answer) for /metrics."""
    probabilities = model.predict(x)
    labels = probabilities.argmax(axis=1)
    # each answer's top probability; for one input, an index is cheaper than a reduction
    confidence = probabilities[:1, labels[0]] if len(labels) == 1 else probabilities.max(axis=1)
    count_predictions(model.name, model.class_names, labels, confidence)
    return Inference(probabilities, labels)


def explain_options(
    n: int, spec: InputSpec, method: Any = None, target: Any = None, steps: Any = None
) -> tuple[str, NDArray[np.intp] | None, int | None]:
    """What an explanation request asks for, checked: (method, targets (N,) or None for the
    predicted classes, steps or None for the gradient).

    ``target`` is one class for every input or a list of one class per input; ``steps`` the
    points on integrated gradients' path, at most ``MAX_EXPLAIN_STEPS`` and at most
    ``MAX_EXPLAIN_ROWS`` over the whole batch.
    """
    method = DEFAULT_EXPLAIN_METHOD if method is None else method
    if method not in EXPLAIN_METHODS:
        raise InputError("method", methods=", ".join(EXPLAIN_METHODS), got=method)
    classes = spec.num_classes or 0
    targets = None
    if target is not None:
        values = target if isinstance(target, list) else [target]
        if not all(_is_int(v) and 0 <= v < classes for v in values):
            raise InputError("target", top=classes - 1)
        if isinstance(target, list) and len(values) != n:
            raise InputError("targets", n=n, got=len(values))
        targets = np.broadcast_to(np.asarray(values, dtype=np.intp), (n,))
    if method == "gradient":
        if steps is not None:
            raise InputError("steps_unused")
        return method, targets, None
    steps = DEFAULT_EXPLAIN_STEPS if steps is None else steps
    if not _is_int(steps) or not 1 <= steps <= MAX_EXPLAIN_STEPS:
        raise InputError("steps", max=MAX_EXPLAIN_STEPS)
    if n * steps > MAX_EXPLAIN_ROWS:
        raise InputError("explain_rows", max=MAX_EXPLAIN_ROWS, n=n, steps=steps)
    return method, targets, int(steps)


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def explain(
    model: Model,
    x: NDArray[np.floating],
    method: str = DEFAULT_EXPLAIN_METHOD,
    targets: NDArray[np.intp] | None = None,
    steps: int | None = DEFAULT_EXPLAIN_STEPS,
) -> Explanation:
    """Attributions of each input's values to one class's probability (``targets``; default
    the predicted class), as ``explain_options`` checked them, with the prediction (``infer``:
    counted in /metrics like any other)."""
    inference = infer(model, x)
    t = inference.labels if targets is None else targets
    net = model.net
    if method == "gradient":
        return Explanation(inference, method, t, None, net.input_gradient(x, t), None)
    assert steps is not None  # (explain_options gives integrated gradients their steps)
    attributions = np.empty(x.shape, dtype=net.dtype)
    delta = np.empty(len(x), dtype=net.dtype)
    chunk = max(1, EXPLAIN_CHUNK_ROWS // steps)
    for start in range(0, len(x), chunk):
        part = slice(start, start + chunk)
        attributions[part], delta[part] = net.integrated_gradients(x[part], t[part], steps=steps)
    attributions += 0.0  # -0.0 (a black pixel times a negative gradient) reads as 0.0
    return Explanation(inference, method, t, steps, attributions, delta)
