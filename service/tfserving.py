"""TF Serving's REST protocol, which KServe adopted as its V1: clients written for either call
this service unchanged.

The routes, as TF Serving's REST API and KServe's V1 protocol have them::

    GET  /v1/models/<name>[/versions/<v>]              model status (``service.views``)
    GET  /v1/models/<name>[/versions/<v>]/metadata     the signature: inputs, outputs, dtypes
    POST /v1/models/<name>[/versions/<v>]:predict      inference
    POST /v1/models/<name>[/versions/<v>]:explain      explanations (KServe V1)

A request is a JSON object with ``instances`` (row format: one item per input) or ``inputs``
(columnar format: the batch tensor, or ``{"input": <the batch>}``), and an optional
``signature_name`` (``serving_default``, the only signature). An input is 784 numbers in
[0, 1], 28x28 nested lists, or an image file as ``{"b64": "<base64>"}`` (TF Serving's
convention for binary values), which gets the same MNIST-style preprocessing as an upload.
Rows answer rows, ``{"predictions": [{"label", "class_name", "probabilities"}, ...]}``;
columns answer columns, ``{"outputs": {"label": [...], "class_name": [...], "probabilities":
[[...], ...]}}``, as TF Serving does for a signature with several outputs. ``:explain`` takes
the same body plus ``method``, ``target`` and ``steps`` (as ``POST .../explain`` does) and
answers ``{"explanations": [...]}``.

Errors are TF Serving's: ``{"error": "<message>"}``, 400 for a bad request, 404 for an
unknown model or version. TF Serving reads the body as JSON whatever its Content-Type (its
documentation's ``curl -d`` sends a form type), and so does this module, except for types that
are plainly something else.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
import orjson
from flask import Blueprint, Flask, Response, request
from marshmallow import Schema, ValidationError, fields, validate, validates_schema
from numpy.typing import NDArray

from service import dataplane
from service.dataplane import InputError, InputSpec
from service.errors import APIError, UnsupportedMediaType, describe_messages, plain_error
from service.inputs import JSON_MIMETYPE, TFSERVING_NUMBERS, JsonArray, loads_json, read_body
from service.responses import explanation_items
from service.routes import route
from service.schemas import TargetClasses
from service.state import lookup

tfserving = Blueprint("tfserving", __name__)

#: The one signature every model has.
SIGNATURE = "serving_default"
#: The name of the model's one input, for named instances and columnar ``inputs``.
INPUT_NAME = "input"
#: Content types read as JSON: JSON itself, none, and what ``curl -d`` and plain clients send.
JSON_TYPES = frozenset({"application/json", "", "text/plain", "application/x-www-form-urlencoded"})
_FORMATS = '784 numbers in [0, 1], 28x28 nested lists, or an image as {"b64": "<base64>"}'
_FORMATS_TEMPLATE = _FORMATS.replace("{", "{{").replace("}", "}}")


# --- the request --------------------------------------------------------------------------
class TFPredictRequestSchema(Schema):
    """TF Serving's predict request: exactly one of ``instances`` or ``inputs``."""

    signature_name = fields.String(
        validate=validate.OneOf([SIGNATURE]),
        metadata={"description": f"Absent or {SIGNATURE!r}: the one signature."},
    )
    instances = fields.Raw(
        metadata={
            "description": "Row format: one item per input, each " + _FORMATS + ".",
            "type": "array",
            "items": {},
        }
    )
    inputs = fields.Raw(
        metadata={
            "description": 'Columnar format: the batch (a list, as instances), or {"input": <the batch>}.',
        }
    )

    @validates_schema
    def _one_source(self, data: dict[str, Any], **kwargs: Any) -> None:
        if ("instances" in data) == ("inputs" in data):
            raise ValidationError("send exactly one of 'instances' (rows) or 'inputs' (columns)")


class TFExplainRequestSchema(TFPredictRequestSchema):
    """``:explain``: predict's body, plus what to explain."""

    method = fields.String(
        metadata={
            "description": "integrated_gradients (the default) or gradient.",
            "enum": list(dataplane.EXPLAIN_METHODS),
        }
    )
    target = TargetClasses(
        metadata={"description": "The class to explain: one for all inputs, or one per input."}
    )
    steps = fields.Integer(
        strict=True,
        metadata={"description": f"integrated_gradients only: 1 to {dataplane.MAX_EXPLAIN_STEPS}."},
    )


_PREDICT = TFPredictRequestSchema()
_EXPLAIN = TFExplainRequestSchema()

#: How the data plane's refusals read here (``{where}``: ``instances`` or ``inputs``).
_MESSAGES = {
    "type": "{where} must be a list of inputs, each " + _FORMATS_TEMPLATE,
    "ragged": "{where}: every input must have the same shape",
    "numbers": "{where} must be all numbers or all images (each input " + _FORMATS_TEMPLATE + ")",
    "empty": "{where} is empty",
    "unbatched": "{where} must be a list of inputs, all of one kind, each " + _FORMATS_TEMPLATE,
    "too_many": "at most {max} inputs per request, got {n}",
    "shape": "{where}: each input must be {accepted}; got {got}",
    "finite": "{where}: values must be finite (no NaN or infinity)",
    "range": '{where}: values must be in [0, 1]; send an image as {{"b64": "<base64>"}}',
    "not_images": "{where}: this model's inputs are not images",
    "image": "{where}[{index}]: {problem}",
    "method": "method must be one of: {methods}; got {got!r}",
    "target": "target must be a class in [0, {top}], or a list of one per input",
    "targets": "got {got} targets for {n} inputs: send one class for all, or one per input",
    "steps": "steps must be an integer in [1, {max}]",
    "steps_unused": "steps applies to integrated_gradients only",
    "explain_rows": "inputs x steps must be at most {max}, got {n} x {steps}: send fewer steps or "
    "fewer inputs",
}


def _request(schema: Schema) -> dict[str, Any]:
    mimetype = request.mimetype
    if mimetype not in JSON_TYPES:
        raise UnsupportedMediaType(f"Content-Type {mimetype!r} is not supported; send a JSON body")
    payload = loads_json(read_body(request), TFSERVING_NUMBERS)
    if not isinstance(payload, dict):
        raise APIError("the body must be a JSON object with 'instances' or 'inputs'")
    try:
        return schema.load(payload)  # type: ignore[no-any-return]
    except ValidationError as exc:
        raise APIError(describe_messages(exc.messages)) from None


def _batch(data: dict[str, Any], spec: InputSpec) -> tuple[NDArray[np.float32], bool]:
    """The model's batch (N, D) from ``instances`` or ``inputs``, and whether it was images."""
    where = "instances" if "instances" in data else "inputs"
    values = data[where]
    if where == "inputs" and isinstance(values, dict):
        if set(values) != {INPUT_NAME}:
            raise APIError(f"inputs must be the batch, or {{{INPUT_NAME!r}: <the batch>}}: the one input")
        values = values[INPUT_NAME]
    try:
        try:
            arr = dataplane.batch_from_rows(values, spec)
        except InputError as exc:
            files = _images(values.to_list() if isinstance(values, JsonArray) else values)
            if files is None:
                raise exc from None
            return dataplane.batch_from_images(files, spec, preprocess=True), True
        return dataplane.model_input(arr, spec), False
    except InputError as exc:
        raise APIError(exc.message(_MESSAGES, where=where)) from None


def _images(items: Any) -> list[bytes] | None:
    """Image files from a list whose every item is ``{"b64": ...}`` (or ``{"input": {"b64":
    ...}}``, a named instance); None if the items are not all images."""
    if not isinstance(items, list) or not items:
        return None
    files = []
    for i, item in enumerate(items):
        if isinstance(item, dict) and set(item) == {INPUT_NAME}:
            item = item[INPUT_NAME]
        if not (isinstance(item, dict) and set(item) == {"b64"}):
            return None
        text = item["b64"]
        if not isinstance(text, str):
            raise APIError(f"[{i}].b64 must be a base64 string")
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            try:  # TF Serving also takes the URL-safe alphabet
                data = base64.b64decode(text, altchars=b"-_", validate=True)
            except (binascii.Error, ValueError):
                raise APIError(f"[{i}].b64 is not valid base64") from None
        if not data:
            raise APIError(f"[{i}].b64 is empty")
        files.append(data)
    return files


# --- the routes ---------------------------------------------------------------------------
_ERRORS = {
    "400": "Invalid request: malformed JSON, inputs, options or image",
    "404": "Unknown model or version",
    "413": "Body or image too large",
    "415": "Unsupported Content-Type",
}


class TFErrorSchema(Schema):
    error = fields.String(required=True)


class TFPredictionSchema(Schema):
    label = fields.Integer(required=True)
    class_name = fields.String(required=True)
    probabilities = fields.List(fields.Float(), required=True)


class TFPredictResponseSchema(Schema):
    predictions = fields.List(
        fields.Nested(TFPredictionSchema), metadata={"description": "Row format (instances)."}
    )
    outputs = fields.Dict(
        metadata={
            "description": "Columnar format (inputs): label, class_name and probabilities, each a list."
        }
    )


class TFExplainResponseSchema(Schema):
    explanations = fields.List(
        fields.Dict(),
        required=True,
        metadata={"description": "Per input, as POST /v1/models/{name}/explain answers them."},
    )


@route(
    tfserving,
    "/v1/models/<name>:predict",
    "/v1/models/<name>/versions/<version>:predict",
    method="POST",
    summary="TF Serving / KServe V1 predict: instances (rows) or inputs (columns); each input 784 "
    'numbers, 28x28 nested lists or {"b64": image}.',
    tags=("tf-serving",),
    request=TFPredictRequestSchema,
    response=TFPredictResponseSchema,
    errors=_ERRORS,
    error=TFErrorSchema,
    operation_id="tfserving_predict",
)
def predict(name: str, version: str | None = None) -> Response:
    endpoint = lookup(name, version)
    data = _request(_PREDICT)
    x, _ = _batch(data, endpoint.spec)
    model = endpoint.model
    result = dataplane.infer(model, x)
    names = model.class_names
    labels = result.labels.tolist()
    if "instances" in data:
        return _json(
            {
                "predictions": [
                    {"label": label, "class_name": names[label], "probabilities": row}
                    for label, row in zip(labels, result.probabilities, strict=True)
                ]
            }
        )
    return _json(
        {
            "outputs": {
                "label": labels,
                "class_name": [names[label] for label in labels],
                "probabilities": result.probabilities,
            }
        }
    )


@route(
    tfserving,
    "/v1/models/<name>:explain",
    "/v1/models/<name>/versions/<version>:explain",
    method="POST",
    summary="KServe V1 explain: predict's body plus method, target and steps; per input the "
    "attributions of its pixels to the target class's probability.",
    tags=("tf-serving",),
    request=TFExplainRequestSchema,
    response=TFExplainResponseSchema,
    errors=_ERRORS,
    error=TFErrorSchema,
    operation_id="tfserving_explain",
)
def explain(name: str, version: str | None = None) -> Response:
    endpoint = lookup(name, version)
    data = _request(_EXPLAIN)
    x, from_images = _batch(data, endpoint.spec)
    try:
        options = dataplane.explain_options(
            len(x), endpoint.spec, data.get("method"), data.get("target"), data.get("steps")
        )
    except InputError as exc:
        raise APIError(exc.message(_MESSAGES, where="")) from None
    result = dataplane.explain(endpoint.model, x, *options)
    return _json({"explanations": explanation_items(endpoint.model, result, x if from_images else None)})


class TFMetadataResponseSchema(Schema):
    model_spec = fields.Dict(
        required=True, metadata={"description": "name, signature_name (empty: the default) and version."}
    )
    metadata = fields.Dict(
        required=True,
        metadata={
            "description": "signature_def.signature_def.serving_default: inputs and outputs, each "
            "with dtype, tensor_shape (-1: the batch) and tensor name; method_name."
        },
    )


@route(
    tfserving,
    "/v1/models/<name>/metadata",
    "/v1/models/<name>/versions/<version>/metadata",
    summary="TF Serving metadata: the model's version and its one signature (serving_default): "
    "the input tensor and the label, class_name and probabilities outputs.",
    tags=("tf-serving",),
    response=TFMetadataResponseSchema,
    errors={"404": _ERRORS["404"]},
    error=TFErrorSchema,
    operation_id="tfserving_metadata",
)
def metadata(name: str, version: str | None = None) -> Response:
    model = lookup(name, version).model
    signature = {
        "inputs": {INPUT_NAME: _tensor(INPUT_NAME, "DT_FLOAT", -1, model.input_size)},
        "outputs": {
            "label": _tensor("label", "DT_INT64", -1),
            "class_name": _tensor("class_name", "DT_STRING", -1),
            "probabilities": _tensor("probabilities", "DT_FLOAT", -1, model.num_classes),
        },
        "method_name": "tensorflow/serving/predict",
    }
    return _json(
        {
            "model_spec": {"name": model.name, "signature_name": "", "version": model.version},
            "metadata": {"signature_def": {"signature_def": {SIGNATURE: signature}}},
        }
    )


def _tensor(name: str, dtype: str, *dims: int) -> dict[str, Any]:
    """A TensorInfo as TF Serving writes it in JSON (its int64 sizes as strings; -1: any)."""
    return {
        "dtype": dtype,
        "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in dims], "unknown_rank": False},
        "name": f"{name}:0",
    }


def _json(body: Any) -> Response:
    """``body`` as JSON; numpy arrays in it are written directly, float32 in its shortest form."""
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), mimetype=JSON_MIMETYPE)


@tfserving.errorhandler(Exception)
def _error(exc: Exception) -> Response:
    """Every error of these routes as TF Serving's ``{"error": "<message>"}``."""
    return plain_error(exc)


def register_tfserving(app: Flask) -> None:
    app.register_blueprint(tfserving)
