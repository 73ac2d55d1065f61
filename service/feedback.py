"""Corrections: ``POST /v1/models/<name>/feedback`` (and ``/feedback``, the default model).

Someone saw a wrong prediction and says what it should have been. The route takes what predict
takes (a raw image body with ``?label=``, a multipart upload with ``label``, JSON ``images`` or
``inputs`` with ``labels``), read and checked by predict's own readers and limits (one
pipeline: the body limit, the image decoder and its decompression-bomb guard, the batch limit),
and stores each image in the model's image folder (``service.feedback_store``), which
``train --images`` reads. Numbers (``inputs``) are stored as the 8-bit grayscale PNG of the
model's image grid.

A label is a class of the model: an index (``7``) or a class name (``"7"``, ``"Trouser"``). A
string is a class name if the model has one so spelled, else a decimal index. ``predicted``
(what the client was shown) and ``request_id`` (the X-Request-ID of that prediction) go into
the record; the model's own answer for the image now is recorded beside them.

Off unless ``FEEDBACK_DIR`` is set (then 404 ``feedback_disabled``); the bearer token applies
as to every inference route.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import numpy as np
import orjson
from flask import Blueprint, Flask, Response, current_app, request
from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema
from numpy.typing import NDArray
from PIL import Image

from service.dataplane import InputSpec
from service.errors import RequestValidationError
from service.feedback_store import Correction, FeedbackDisabled, FeedbackStore, Stored
from service.images import ALLOWED_FORMATS, IMAGE_MIMETYPES
from service.inputs import request_payload
from service.metrics import REQUEST_ID, count_feedback
from service.registry import Model
from service.routes import route
from service.schemas import ErrorResponseSchema, PredictRequestSchema
from service.settings import Settings
from service.state import lookup
from service.views import ERRORS, json_response

feedback = Blueprint("feedback", __name__)
EXTENSION = "digits_feedback"
#: The file extension of each accepted image format.
EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "GIF": "gif", "BMP": "bmp", "WEBP": "webp"}
#: A request id as ``service.metrics`` accepts one: printable ASCII, no spaces.
REQUEST_ID_PATTERN = r"^[\x21-\x7e]{1,128}$"
MAX_CLASS_NAME = 256


# --- fields -------------------------------------------------------------------------------
class ClassLabel(fields.Field):
    """One class: an index (integer) or a name (string); checked against the model by the view."""

    default_error_messages = {"type": "Must be a class index or a class name."}

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> int | str:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip() and len(value) <= MAX_CLASS_NAME:
            return value.strip()
        raise self.make_error("type")


class ClassLabels(fields.Field):
    """One class per input: a list of indices or names; in a form or query string "3,1,4" or
    a JSON array."""

    default_error_messages = {
        "type": "Must be a list of class indices or class names, one per input.",
        "empty": "Must hold at least one class.",
    }

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> list[int | str]:
        if isinstance(value, str):
            text = value.strip()
            try:
                value = orjson.loads(text) if text.startswith("[") else text.split(",")
            except orjson.JSONDecodeError:
                raise self.make_error("type") from None
        if not isinstance(value, list):
            raise self.make_error("type")
        if not value:
            raise self.make_error("empty")
        one = ClassLabel()
        try:
            return [one._deserialize(item, None, None) for item in value]
        except ValidationError:
            raise self.make_error("type") from None


class FeedbackRequestSchema(PredictRequestSchema):
    """What predict takes, plus the right classes: ``label`` (one input) or ``labels``."""

    label = ClassLabel(
        metadata={"description": "The class the one input is: an index or a class name ('7', 'Trouser')."}
    )
    labels = ClassLabels(
        metadata={
            "description": "One class per input: indices or class names. In a form or query string: "
            "'3,1,4' or a JSON array.",
        }
    )
    predicted = ClassLabels(
        metadata={"description": "What the prediction being corrected said, one class per input."}
    )
    request_id = fields.String(
        validate=validate.Regexp(REQUEST_ID_PATTERN),
        metadata={"description": "The X-Request-ID of the prediction being corrected."},
    )

    @validates_schema
    def _check_labels(self, data: dict[str, Any], **kwargs: Any) -> None:
        if ("label" in data) == ("labels" in data):
            raise ValidationError(
                "Send the right class: label (one input) or labels (one per input).", "label"
            )
        n = len(data["inputs"] if "inputs" in data else data.get("images", ()))
        if "label" in data and n != 1:
            raise ValidationError(f"label is for one input, got {n}: send labels, one per input.", "label")
        if "predicted" in data and len(data["predicted"]) != n:
            raise ValidationError(f"Got {len(data['predicted'])} classes for {n} inputs.", "predicted")

    @post_load
    def _to_batch(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Predict's ``x``, plus ``files``: the image files as sent (None for numbers)."""
        files = data.get("images")
        data = super()._to_batch(data, **kwargs)
        data["files"] = files
        if "label" in data:
            data["labels"] = [data.pop("label")]
        return data


class StoredSchema(Schema):
    label = fields.Integer(required=True, metadata={"description": "The class index stored under."})
    class_name = fields.String(required=True)
    predicted = fields.String(
        allow_none=True, required=True, metadata={"description": "What the client said was predicted."}
    )
    model_predicted = fields.String(
        required=True, metadata={"description": "What the serving version answers for the image now."}
    )
    file = fields.String(
        required=True,
        metadata={"description": "Where the image is, under FEEDBACK_DIR/<model>/: <class>/<sha256>.<ext>."},
    )
    sha256 = fields.String(required=True)
    status = fields.String(
        required=True,
        validate=validate.OneOf(("created", "duplicate", "relabelled")),
        metadata={
            "description": "created: a new file; duplicate: the same image was already stored with this "
            "label; relabelled: it was stored with another label and moved here (the newest wins).",
        },
    )
    previous = fields.String(metadata={"description": "relabelled: the class folder it left."})


class FeedbackResponseSchema(Schema):
    model = fields.String(required=True)
    version = fields.String(required=True)
    stored = fields.List(fields.Nested(StoredSchema), required=True)


# --- the route ----------------------------------------------------------------------------
def _declaration() -> dict[str, Any]:
    form = {
        "image": {"type": "string", "format": "binary", "description": "The image file (any field name)."},
        "label": {"type": "string", "description": "Its class: an index or a class name."},
        "labels": {"type": "string", "description": "Several images: '3,1,4' or a JSON array."},
        "predicted": {"type": "string", "description": "What the prediction said: '3' or '3,1,4'."},
        "request_id": {"type": "string", "pattern": REQUEST_ID_PATTERN},
        "preprocess": {"type": "boolean", "default": True},
    }
    content: dict[str, Any] = {"multipart/form-data": {"schema": {"type": "object", "properties": form}}}
    for mimetype in sorted(IMAGE_MIMETYPES):
        content[mimetype] = {"schema": {"type": "string", "format": "binary"}}
    query = tuple(
        {"name": name, "in": "query", "schema": schema, "description": f"Raw image bodies only: {text}"}
        for name, schema, text in (
            ("label", {"type": "string"}, "the image's class, an index or a class name."),
            ("predicted", {"type": "string"}, "what the prediction said."),
            (
                "request_id",
                {"type": "string", "pattern": REQUEST_ID_PATTERN},
                "the prediction's X-Request-ID.",
            ),
            ("preprocess", {"type": "boolean"}, "false: the image is already MNIST-like."),
        )
    )
    return {
        "method": "POST",
        "status": 201,
        "summary": "Correct a prediction: store the image (or inputs, as PNG) under the right class "
        "for the next training (FEEDBACK_DIR/<model>/<class>/<sha256>.<ext>), and record it.",
        "tags": ("feedback",),
        "request": FeedbackRequestSchema,
        "request_content": content,
        "parameters": query,
        "response": FeedbackResponseSchema,
        "response_description": "Stored (or already there) and recorded",
        "errors": {
            **ERRORS,
            "404": "Feedback is off on this server (no FEEDBACK_DIR: code feedback_disabled); or an "
            "unknown model or route",
            "503": "The feedback volume cannot be written (full, read-only): nothing stored",
            "507": "The feedback quota (FEEDBACK_MAX_FILES, FEEDBACK_MAX_BYTES) is reached: nothing stored",
        },
        "error": ErrorResponseSchema,
    }


@route(feedback, "/v1/models/<name>/feedback", "/feedback", **_declaration())
def post_feedback(name: str | None = None) -> Response:
    store: FeedbackStore | None = current_app.extensions.get(EXTENSION)
    if store is None:
        raise FeedbackDisabled("feedback is off on this server: set FEEDBACK_DIR to collect corrections")
    endpoint = lookup(name)
    model = endpoint.model
    data = _schema(endpoint.spec).load(request_payload(request))
    labels = _classes(data["labels"], model, "labels")
    predicted = _classes(data["predicted"], model, "predicted") if "predicted" in data else None
    x = data["x"]
    files = data["files"] or _pngs(x, model)
    model_predicted = model.predict(x).argmax(axis=1).tolist()
    corrections = [
        Correction(
            file,
            _extension(file),
            label,
            predicted[i] if predicted is not None else None,
            model_predicted[i],
        )
        for i, (file, label) in enumerate(zip(files, labels, strict=True))
    ]
    context = {
        "request_id": data.get("request_id"),
        "feedback_request_id": request.environ.get(REQUEST_ID),
        "source": "images" if data["files"] else "inputs",
        "preprocess": data["preprocess"],
    }
    stored = store.store(model.name, model.version, model.class_names, corrections, context)
    names = model.class_names
    count_feedback(
        model.name,
        (
            (names[c.model_predicted if c.predicted is None else c.predicted], names[c.label])
            for c in corrections
        ),
    )
    return json_response(
        {
            "model": model.name,
            "version": model.version,
            "stored": [_stored_item(names, c, s) for c, s in zip(corrections, stored, strict=True)],
        },
        status=201,
    )


@cache
def _schema(spec: InputSpec) -> FeedbackRequestSchema:
    return FeedbackRequestSchema(spec=spec)


def _classes(values: Sequence[int | str], model: Model, field: str) -> list[int]:
    """Class indices for the request's classes, or 422 naming each one that is not a class."""
    names = model.class_names
    indices: list[int] = []
    wrong: dict[int, list[str]] = {}
    for i, value in enumerate(values):
        index = class_index(value, names)
        if index is None:
            wrong[i] = [
                f"{value!r} is not a class of model {model.name!r}: send an index in "
                f"[0, {len(names) - 1}] or one of its class names ({', '.join(names)})."
            ]
        else:
            indices.append(index)
    if wrong:
        raise RequestValidationError("the request is not valid", {field: wrong})
    return indices


def class_index(value: int | str, class_names: Sequence[str]) -> int | None:
    """The index of the class ``value`` names (an index, a class name, or an index as decimal
    text), or None."""
    if isinstance(value, str):
        if value in class_names:
            return class_names.index(value)
        if not (value.isascii() and value.isdigit()):
            return None
        value = int(value)
    return value if 0 <= value < len(class_names) else None


def _pngs(x: NDArray[np.float32], model: Model) -> list[bytes]:
    """The inputs (N, D) in [0, 1] as 8-bit grayscale PNGs of the model's image grid."""
    if model.image_size is None:
        raise RequestValidationError(
            "the request is not valid",
            {"inputs": ["This model's inputs are not images: feedback stores images."]},
        )
    pixels = np.rint(x.reshape(len(x), *model.image_size) * 255).astype(np.uint8)
    out = []
    for image in pixels:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def _extension(data: bytes) -> str:
    """The file extension of an image the pipeline has decoded already (its header only)."""
    with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as image:
        return EXTENSIONS[image.format or "PNG"]


def _stored_item(names: Sequence[str], correction: Correction, stored: Stored) -> dict[str, Any]:
    item: dict[str, Any] = {
        "label": correction.label,
        "class_name": names[correction.label],
        "predicted": None if correction.predicted is None else names[correction.predicted],
        "model_predicted": names[correction.model_predicted],
        "file": stored.file,
        "sha256": stored.sha256,
        "status": stored.status,
    }
    if stored.previous is not None:
        item["previous"] = stored.previous
    return item


def register_feedback(app: Flask, settings: Settings) -> None:
    """The feedback route, storing under ``FEEDBACK_DIR`` when it is set."""
    if settings.feedback_dir is not None:
        app.extensions[EXTENSION] = FeedbackStore(
            settings.feedback_dir, settings.feedback_max_files, settings.feedback_max_bytes
        )
    app.register_blueprint(feedback)
