"""Request and response schemas, named after their payloads.

Structure is validated by marshmallow; numbers by numpy. Pixels never pass through
``fields.List(fields.Float())``: ``PixelBatch`` turns the nested lists into one ndarray and
checks shape, finiteness and range on whole arrays. A request schema is built per model with
an ``InputSpec`` (its input shape, classes and limits), so every check is against the model's
metadata, and ``load`` returns the batch ``x`` (N, D) ready for the network.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema
from numpy.typing import NDArray

from service import dataplane
from service.dataplane import InputError, InputSpec
from service.inputs import JsonArray
from training import LOSSES

#: ``pixel_range`` values: what the numbers in ``inputs`` run over; each maps to its maximum.
PIXEL_RANGES = {"0-1": 1.0, "0-255": float(dataplane.PIXEL_MAX)}
RANGE_HINT = '; send 0-255 values with "pixel_range": "0-255"'
#: How the data plane's refusals of ``images`` read in a v1 validation error.
IMAGE_MESSAGES = {
    "empty": "Must hold at least one image.",
    "too_many": "At most {max} images per request, got {n}.",
    "not_images": "This model's inputs are not images.",
}


def _spec(field: fields.Field) -> InputSpec:
    return getattr(field.root, "spec", None) or InputSpec()


# --- fields -------------------------------------------------------------------------------
class PixelBatch(fields.Field):
    """A batch of inputs as nested lists of numbers -> float32 ndarray (N, D) in [0, 1].

    A JSON body's array (``JsonArray``) whose structure is provably a rectangular batch is
    copied straight into numpy by the parser, which refuses any non-number. Anything else (a
    Python list, or an array that is not simple) goes through one ``np.asarray``: ragged rows,
    strings, ``null`` and all-boolean lists give dtypes other than int/float and are refused.
    (A boolean mixed with numbers would be read as 0 or 1: ``service.inputs.loads_json`` turns
    booleans inside arrays into ``null`` so they are refused too.) Each input must have one of
    the model's accepted shapes and every value must be finite and in [0, 1], or [0, 255] when
    the request says ``"pixel_range": "0-255"`` (then values are divided by 255). Range and
    finiteness take one ``min`` and one ``max``: NaN fails every comparison.
    """

    default_error_messages = {
        "type": "Must be a list of inputs (each a list of numbers or a list of rows).",
        "ragged": "Rows have different lengths: every input must have the same shape.",
        "numbers": "Must contain only numbers (no strings, booleans or nulls).",
        "empty": "Must hold at least one input.",
        "unbatched": "Must be a batch: a list of inputs, e.g. [[0.0, ...]] for one input.",
        "too_many": "At most {max} inputs per request, got {n}.",
        "shape": "Each input must be {accepted}; got {got}.",
        "finite": "Must not contain NaN or infinite values.",
        "range": "Values must be in [0, {top:g}]{hint}.",
    }

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> NDArray[np.float32]:
        spec = _spec(self)
        # pixel_range is read raw here; its own field reports a value that is not allowed
        pixel_range = data.get("pixel_range", "0-1") if data else "0-1"
        top = PIXEL_RANGES.get(pixel_range) if isinstance(pixel_range, str) else None
        try:
            arr = dataplane.batch_from_rows(value, spec)
            if top is None:
                dataplane.check_input_shape(arr.shape[1:] if arr.ndim >= 2 else None, spec)
                return arr.reshape(len(arr), -1).astype(np.float32)
            return dataplane.model_input(arr, spec, top=top)
        except InputError as exc:
            hint = "" if exc.reason != "range" or exc.params["top"] > 1 else RANGE_HINT
            raise self.make_error(exc.reason, **exc.params, hint=hint) from None


_PLAIN_KEYS = frozenset({"inputs", "pixel_range"})


def plain_inputs(payload: Any, spec: InputSpec) -> NDArray[np.float32] | None:
    """The batch ``x`` that ``PredictRequestSchema(spec=spec).load(payload)`` gives, when
    ``payload`` has the plain form nearly every client sends (a JSON body's ``inputs``, perhaps
    ``pixel_range``) and is valid; else None, and the schema, the reference, reads it and words
    the errors (a property test holds the two together). marshmallow's walk of the payload cost
    as much as the forward pass of a single-image request."""
    if type(payload) is not dict or not payload.keys() <= _PLAIN_KEYS:
        return None
    inputs = payload.get("inputs")
    pixel_range = payload.get("pixel_range", "0-1")
    top = PIXEL_RANGES.get(pixel_range) if type(pixel_range) is str else None
    if top is None or not isinstance(inputs, JsonArray):
        return None
    try:
        return dataplane.model_input(dataplane.batch_from_rows(inputs, spec), spec, top=top)
    except InputError:
        return None


class Labels(fields.Field):
    """Class labels: integers (N,) or one-hot rows (N, C), from a list or a form string.

    A string is read as JSON if it starts with ``[``, else as comma-separated integers
    (``"3,1,4"``). Integers must be in [0, C); one-hot rows must be 0/1 with a single 1.
    The array keeps the dtype numpy gives the list, exactly what ``TwoLayerNet`` would get.
    """

    default_error_messages = {
        "type": "Must be a list of integer labels or of one-hot rows.",
        "numbers": "Labels must be integers (or one-hot rows of 0 and 1).",
        "empty": "Must hold at least one label.",
        "range": "Integer labels must be in [0, {top}].",
        "one_hot": "One-hot rows must have {c} columns of 0 and 1 with exactly one 1.",
    }

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> NDArray:
        if isinstance(value, str):
            value = self._parse_text(value)
        if not isinstance(value, list):
            raise self.make_error("type")
        if not value:
            raise self.make_error("empty")
        try:
            t = np.asarray(value)
        except (ValueError, TypeError, OverflowError):
            raise self.make_error("type") from None
        if t.dtype.kind not in "iuf" or t.ndim not in (1, 2):
            raise self.make_error("numbers")
        if not np.isfinite(t).all() or not (t == np.round(t)).all():
            raise self.make_error("numbers")
        num_classes = _spec(self).num_classes
        if t.ndim == 1:
            if t.min() < 0 or (num_classes is not None and t.max() >= num_classes):
                raise self.make_error("range", top=(num_classes or 1) - 1)
        elif (
            (num_classes is not None and t.shape[1] != num_classes)
            or not np.isin(t, (0, 1)).all()
            or not (t.sum(axis=1) == 1).all()
        ):
            raise self.make_error("one_hot", c=num_classes or t.shape[1])
        return t

    def _parse_text(self, text: str) -> Any:
        text = text.strip()
        try:
            if text.startswith("["):
                return orjson.loads(text)
            return [int(part) for part in text.split(",")]
        except ValueError:
            raise self.make_error("type") from None


class WholeNumber(fields.Field):
    """A non-negative integer, from JSON or from a form or query string ("64")."""

    default_error_messages = {"type": "Must be a whole number."}

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> int:
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        raise self.make_error("type")


class TargetClasses(fields.Field):
    """One class for every input, or one per input: an integer or a list of them; in a form or
    query string "3", "3,1,4" or a JSON array. Checked against the model by the data plane."""

    default_error_messages = {"type": "Must be a class index, or a list of one class index per input."}

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> int | list[int]:
        if isinstance(value, str):
            text = value.strip()
            try:
                value = orjson.loads(text) if text.startswith("[") else [int(p) for p in text.split(",")]
            except ValueError:
                raise self.make_error("type") from None
            if isinstance(value, list) and len(value) == 1:
                value = value[0]
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            raise self.make_error("type")
        return value  # type: ignore[no-any-return]


class ImageData(fields.Field):
    """One image file: raw bytes (multipart, raw body) or a base64 string, data URL allowed."""

    default_error_messages = {
        "type": "Must be a base64-encoded image file.",
        "base64": "Not valid base64.",
        "empty": "The image is empty.",
    }

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> bytes:
        if isinstance(value, str):
            if value.startswith("data:"):  # data:image/png;base64,... from a browser canvas
                value = value.partition(",")[2]
            try:
                value = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise self.make_error("base64") from None
        if not isinstance(value, bytes):
            raise self.make_error("type")
        if not value:
            raise self.make_error("empty")
        return value


# --- requests -----------------------------------------------------------------------------
class PredictRequestSchema(Schema):
    """Inputs for inference: exactly one of ``inputs`` (numbers) or ``images`` (files)."""

    inputs = PixelBatch(
        metadata={
            "description": "A batch of inputs: each a flat list of the model's input size (784 for "
            "MNIST) or nested rows of its image shape (28x28). Numbers in [0, 1], or "
            "[0, 255] with pixel_range '0-255'. White ink on black, as in MNIST.",
        }
    )
    images = fields.List(
        ImageData(),
        metadata={
            "description": "Image files (PNG, JPEG, GIF, BMP, WebP), base64-encoded or as data URLs.",
        },
    )
    pixel_range = fields.String(
        validate=validate.OneOf(list(PIXEL_RANGES)),
        metadata={
            "description": "What the numbers in inputs run over: '0-1' (default) or '0-255'.",
        },
    )
    preprocess = fields.Boolean(
        load_default=True,
        metadata={
            "description": "Images only: apply MNIST-style preprocessing (invert light backgrounds, "
            "crop, fit 20x20, centre by mass). false: just grayscale and resize.",
        },
    )

    def __init__(self, *args: Any, spec: InputSpec | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spec = spec or InputSpec()

    @validates_schema
    def _check_batch(self, data: dict[str, Any], **kwargs: Any) -> None:
        """Exactly one source of inputs, within the limits; as many labels as inputs."""
        has_inputs, has_images = "inputs" in data, "images" in data
        if has_inputs == has_images:
            raise ValidationError("Send exactly one of 'inputs' (numbers) or 'images' (files).", "_schema")
        if has_inputs:
            n = len(data["inputs"])
        else:
            if "pixel_range" in data:
                raise ValidationError("pixel_range applies to inputs, not images.", "pixel_range")
            n = len(data["images"])
            try:
                dataplane.check_images(n, self.spec)
            except InputError as exc:
                raise ValidationError(exc.message(IMAGE_MESSAGES), "images") from None
        if "labels" in data and len(data["labels"]) != n:
            raise ValidationError(f"Got {len(data['labels'])} labels for {n} inputs.", "labels")

    @post_load
    def _to_batch(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Adds ``x``: the batch (N, D) float32 in [0, 1], whatever form the inputs came in."""
        data.pop("pixel_range", None)
        if "inputs" in data:
            data["x"] = data.pop("inputs")
            return data
        try:
            data["x"] = dataplane.batch_from_images(data.pop("images"), self.spec, data["preprocess"])
        except InputError as exc:  # an image that does not decode
            raise ValidationError({"images": {exc.params["index"]: [exc.params["problem"]]}}) from None
        return data


class LossRequestSchema(PredictRequestSchema):
    labels = Labels(
        required=True,
        metadata={
            "description": "One label per input: integer classes or one-hot rows. In a form or "
            "query string: '3,1,4' or a JSON array.",
        },
    )
    loss = fields.String(
        load_default="cross_entropy",
        validate=validate.OneOf(LOSSES),
        metadata={"description": "The loss function: " + ", ".join(LOSSES)},
    )


#: How the data plane's refusals of explanation options read in a v1 validation error, and
#: the field each belongs to.
EXPLAIN_MESSAGES = {
    "method": "Must be one of: {methods}.",
    "target": "Must be a class in [0, {top}], or a list of one per input.",
    "targets": "Got {got} targets for {n} inputs: send one class for all, or one per input.",
    "steps": "Must be an integer in [1, {max}].",
    "steps_unused": "steps applies to integrated_gradients only.",
    "explain_rows": "Inputs x steps must be at most {max}, got {n} x {steps}: send fewer steps or "
    "fewer inputs per request.",
}
EXPLAIN_FIELDS = {"targets": "target", "steps_unused": "steps", "explain_rows": "steps"}


class ExplainRequestSchema(PredictRequestSchema):
    """What predict takes, plus what to explain: the method, the target class, the steps."""

    method = fields.String(
        metadata={
            "description": "integrated_gradients (the default: from a black image, the attributions "
            "sum to p(x) - p(black)) or gradient (d p_target / d input).",
            "enum": list(dataplane.EXPLAIN_METHODS),
        }
    )
    target = TargetClasses(
        metadata={
            "description": "The class whose probability is explained: one for every input or one per "
            "input. Default: each input's predicted class.",
        }
    )
    steps = WholeNumber(
        metadata={
            "description": f"integrated_gradients only: points on the path, 1 to "
            f"{dataplane.MAX_EXPLAIN_STEPS} (default {dataplane.DEFAULT_EXPLAIN_STEPS}); inputs x "
            f"steps at most {dataplane.MAX_EXPLAIN_ROWS}.",
        }
    )

    @post_load
    def _to_batch(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Adds to predict's ``x``: ``options``, (method, targets, steps) as
        ``dataplane.explain`` takes them, and ``from_images``: whether the inputs were image files."""
        from_images = "images" in data
        data = super()._to_batch(data, **kwargs)
        data["from_images"] = from_images
        try:
            data["options"] = dataplane.explain_options(
                len(data["x"]),
                self.spec,
                data.pop("method", None),
                data.pop("target", None),
                data.pop("steps", None),
            )
        except InputError as exc:
            field = EXPLAIN_FIELDS.get(exc.reason, exc.reason)
            raise ValidationError(exc.message(EXPLAIN_MESSAGES), field) from None
        return data


class AccuracyRequestSchema(PredictRequestSchema):
    labels = Labels(
        required=True,
        metadata={
            "description": "One label per input: integer classes or one-hot rows. In a form or "
            "query string: '3,1,4' or a JSON array.",
        },
    )


# --- responses (built as dicts on the hot path; these document and test them) ------------
class PredictionSchema(Schema):
    label = fields.Integer(required=True, metadata={"description": "Index of the likeliest class."})
    class_name = fields.String(required=True)
    probabilities = fields.List(
        fields.Float(), required=True, metadata={"description": "One per class, summing to 1."}
    )


class PredictResponseSchema(Schema):
    model = fields.String(required=True)
    version = fields.String(required=True, metadata={"description": "Hash of the model file."})
    predictions = fields.List(fields.Nested(PredictionSchema), required=True)


class ExplanationSchema(Schema):
    label = fields.Integer(required=True, metadata={"description": "The predicted class."})
    class_name = fields.String(required=True)
    probabilities = fields.List(fields.Float(), required=True)
    target = fields.Integer(required=True, metadata={"description": "The class explained."})
    target_name = fields.String(required=True)
    method = fields.String(required=True, validate=validate.OneOf(dataplane.EXPLAIN_METHODS))
    attributions = fields.List(
        fields.List(fields.Float()),
        required=True,
        metadata={
            "description": "Per input value (28x28 for MNIST), its share of the target's probability: "
            "positive raised it, negative lowered it.",
        },
    )
    convergence_delta = fields.Float(
        metadata={
            "description": "integrated_gradients: sum(attributions) - (p(x) - p(black)); near 0 when "
            "the steps are enough.",
        }
    )
    preprocessed = fields.List(
        fields.List(fields.Float()),
        metadata={"description": "Image inputs: the 28x28 the image became, which the attributions cover."},
    )


class ExplainResponseSchema(Schema):
    model = fields.String(required=True)
    version = fields.String(required=True)
    method = fields.String(required=True, validate=validate.OneOf(dataplane.EXPLAIN_METHODS))
    steps = fields.Integer(metadata={"description": "integrated_gradients: the points on the path."})
    explanations = fields.List(fields.Nested(ExplanationSchema), required=True)


class LossResponseSchema(Schema):
    model = fields.String(required=True)
    version = fields.String(required=True)
    loss_name = fields.String(required=True, validate=validate.OneOf(LOSSES))
    loss = fields.Float(required=True, metadata={"description": "Mean loss over the batch."})
    count = fields.Integer(required=True)


class AccuracyResponseSchema(Schema):
    model = fields.String(required=True)
    version = fields.String(required=True)
    accuracy = fields.Float(required=True)
    correct = fields.Integer(required=True)
    count = fields.Integer(required=True)


class ModelInfoSchema(Schema):
    name = fields.String(required=True)
    version = fields.String(
        required=True, metadata={"description": "A version directory's number, or a flat NAME.npz's hash id."}
    )
    versions = fields.List(
        fields.String(),
        required=True,
        metadata={"description": "The model's ready versions, oldest first; the last serves by default."},
    )
    ready = fields.Boolean(
        required=True, metadata={"description": "Always true: only loaded, valid models are listed."}
    )
    sha256 = fields.String(required=True, metadata={"description": "SHA-256 of the weights file."})
    input_shape = fields.List(fields.Integer(), required=True)
    input_size = fields.Integer(required=True)
    hidden_size = fields.Integer(required=True)
    class_names = fields.List(fields.String(), required=True)
    num_classes = fields.Integer(required=True)
    dtype = fields.String(required=True)
    accepts_images = fields.Boolean(required=True)
    image_preprocessing = fields.String(required=True)
    pixel_preprocessing = fields.Raw(allow_none=True)
    dataset = fields.Raw(allow_none=True)
    metrics = fields.Raw(allow_none=True)
    created_at = fields.String(allow_none=True)
    metadata = fields.Dict(required=True, metadata={"description": "The file's full metadata."})
    model_version_status = fields.List(
        fields.Dict(),
        metadata={
            "description": "GET /v1/models/{name} only: TF Serving's model status, one entry per "
            'ready version: {"version", "state": "AVAILABLE", "status": {"error_code": "OK", '
            '"error_message": ""}}.',
        },
    )


class ModelListResponseSchema(Schema):
    default_model = fields.String(required=True)
    feedback = fields.Boolean(
        required=True,
        metadata={"description": "POST /v1/models/{name}/feedback stores corrections (FEEDBACK_DIR is set)."},
    )
    models = fields.List(fields.Nested(ModelInfoSchema), required=True)


class StatusResponseSchema(Schema):
    status = fields.String(required=True)
    default_model = fields.String()
    models = fields.List(fields.String())


class ErrorBodySchema(Schema):
    status = fields.Integer(required=True)
    code = fields.String(required=True, metadata={"description": "Stable machine-readable code."})
    message = fields.String(required=True)
    details = fields.Raw(metadata={"description": "Per-field messages for validation errors."})


class ErrorResponseSchema(Schema):
    error = fields.Nested(ErrorBodySchema, required=True)


@dataclass(frozen=True)
class RequestSchemas:
    """The request schemas of one model, built once."""

    predict: PredictRequestSchema
    loss: LossRequestSchema
    accuracy: AccuracyRequestSchema
    explain: ExplainRequestSchema

    @classmethod
    def for_spec(cls, spec: InputSpec) -> RequestSchemas:
        return cls(
            PredictRequestSchema(spec=spec),
            LossRequestSchema(spec=spec),
            AccuracyRequestSchema(spec=spec),
            ExplainRequestSchema(spec=spec),
        )


class ServingVersionsSchema(Schema):
    version = fields.String(required=True, metadata={"description": "The version serving by default."})
    versions = fields.List(fields.String(), required=True)


class ReloadReportSchema(Schema):
    """What ``POST /v1/admin/reload`` did in the worker that answered."""

    changed = fields.Boolean(required=True, metadata={"description": "A new state was swapped in."})
    loaded = fields.List(fields.Dict(), required=True, metadata={"description": "Files read and valid."})
    failed = fields.List(fields.Dict(), required=True, metadata={"description": "Files that failed."})
    removed = fields.List(fields.Dict(), required=True, metadata={"description": "Versions gone."})
    serving = fields.Dict(keys=fields.String(), values=fields.Nested(ServingVersionsSchema), required=True)
    pid = fields.Integer(required=True, metadata={"description": "The worker that answered."})
    workers_restarting = fields.Boolean(
        required=True, metadata={"description": "MODEL_POLL_SECONDS=0: gunicorn restarts every worker"}
    )
