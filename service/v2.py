"""The Open Inference Protocol ("KServe V2") over REST, so clients written for Triton, MLServer,
KServe or TorchServe can call this service unchanged.

The routes, as kserve/open-inference-protocol ``specification/protocol/inference_rest.md`` has them::

    GET  /v2                                          server metadata
    GET  /v2/health/live, GET /v2/health/ready        server health
    GET  /v2/models/<name>[/versions/<v>]             model metadata
    GET  /v2/models/<name>[/versions/<v>]/ready       model health
    POST /v2/models/<name>[/versions/<v>]/infer       inference

Every model has one input, ``input``: a batch of images, as FP32 (or FP16, FP64) values in
[0, 1] or as UINT8 (or another integer type) pixel values 0-255, which are divided by 255. Its
shape is ``[N, 784]``, or ``[N, 28, 28]``: the model's input shape, flat or as its image grid.
Two outputs: ``probabilities`` (FP32 ``[N, C]``) and ``label`` (INT64 ``[N]``); a third,
``attributions`` (FP32 ``[N, 784]``), only when ``outputs`` asks for it: why the network chose,
per input value (``service.dataplane.explain``), with ``method``, ``target`` and ``steps`` as
request parameters.

Tensors travel as JSON (``data`` flat or nested, row-major) or, with the binary tensor data
extension that Triton's and KServe's clients use by default, as raw little-endian bytes after
the JSON (``Inference-Header-Content-Length`` says where the JSON ends). The classification
extension (``"parameters": {"classification": k}`` on ``probabilities``) answers the top k as
``"<probability>:<index>:<class name>"`` strings. Errors are ``{"error": "<message>"}``: 400 for
a bad request, 404 for an unknown model or version, as the protocol says; ``service.errors``
gives routing errors under ``/v2`` (404, 405) the same shape.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
from flask import Blueprint, Flask, Response, current_app, request
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema
from numpy.typing import NDArray
from werkzeug.exceptions import RequestEntityTooLarge

from service import dataplane, oip
from service.errors import APIError, UnsupportedMediaType, describe_messages, plain_error
from service.inputs import JSON_MIMETYPE, V2_NUMBERS, loads_json, read_body
from service.oip import (
    ATTRIBUTIONS,
    DATATYPES,
    DEFAULT_OUTPUTS,
    EXPLAIN_PARAMETERS,
    EXTENSIONS,
    FLOAT_DTYPES,
    INPUT_NAME,
    INTEGER_DTYPES,
    LABEL,
    MESSAGES,
    OUTPUT_NAMES,
    PROBABILITIES,
    SERVER_NAME,
    SERVER_VERSION,
    SUPPORTED,
)
from service.routes import route
from service.schemas import InputSpec
from service.state import Endpoint, current, lookup

v2 = Blueprint("v2", __name__, url_prefix="/v2")

#: Request and response header: the length of the JSON that binary tensor data follows.
HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_MIMETYPE = "application/octet-stream"
_SUPPORTED = SUPPORTED


# --- schemas: structure by marshmallow, numbers by numpy -----------------------------------
class TensorData(fields.Raw):
    """A tensor's ``data``: numbers, flat or nested in row-major order (or strings for BYTES).

    Left as the parser gave it: the data plane reads it into numpy once the shape is checked."""


class Shape(fields.Field):
    """A tensor's shape: a list of non-negative integers (``true`` is not 1 here). One field,
    not a list of integer fields: a third of the schema's cost on the hot path."""

    default_error_messages = {"invalid": "Must be a list of non-negative integers."}

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> list[int]:
        if not isinstance(value, list) or not all(
            type(dim) is int and dim >= 0
            for dim in value  # (type, not isinstance: bool is an int)
        ):
            raise self.make_error("invalid")
        return value


_PARAMETERS = {"description": "Key/value parameters (the protocol's $parameters)."}


class RequestInputSchema(Schema):
    """One input tensor of an inference request (``$request_input``)."""

    class Meta:
        unknown = EXCLUDE  # what other servers accept must not fail here

    name = fields.String(required=True, metadata={"description": f"'{INPUT_NAME}'"})
    shape = Shape(
        required=True, metadata={"description": "[N, 784] or [N, 28, 28]: the whole batch's shape."}
    )
    datatype = fields.String(required=True, validate=validate.OneOf(DATATYPES))
    parameters = fields.Dict(
        keys=fields.String(),
        metadata={"description": "binary_data_size: the tensor is that many bytes after the JSON."},
    )
    data = TensorData(metadata={"description": "Row-major values, flat or nested."})

    @validates_schema
    def _data_or_binary(self, data: dict[str, Any], **kwargs: Any) -> None:
        size = data.get("parameters", {}).get("binary_data_size")
        if size is None and "data" not in data:
            raise ValidationError(
                "Send 'data', or the tensor's bytes after the JSON with 'binary_data_size' in 'parameters'.",
                "data",
            )
        if size is not None:
            if "data" in data:
                raise ValidationError("Send either 'data' or binary_data_size, not both.", "data")
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise ValidationError("binary_data_size must be a non-negative integer.", "parameters")


class RequestOutputSchema(Schema):
    """An output the client wants back (``$request_output``)."""

    class Meta:
        unknown = EXCLUDE

    name = fields.String(required=True, validate=validate.OneOf(OUTPUT_NAMES))
    parameters = fields.Dict(
        keys=fields.String(),
        metadata={
            "description": "binary_data: true sends the tensor as raw bytes after the JSON; "
            "classification: k (probabilities only) sends the top k classes."
        },
    )


def _echoable(text: str) -> None:
    """A string the response can carry: Unicode without lone surrogates (the json module reads
    ``"\\ud800"``; no UTF-8 writer can send it back)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        raise ValidationError("Must be valid Unicode (no lone surrogates).") from None


class InferenceRequestSchema(Schema):
    """``$inference_request``: the body of POST /v2/models/<name>[/versions/<v>]/infer."""

    class Meta:
        unknown = EXCLUDE

    id = fields.String(validate=_echoable, metadata={"description": "Echoed in the response."})
    parameters = fields.Dict(
        keys=fields.String(),
        metadata={
            "description": "binary_data_output: true sends every output as raw bytes; method, "
            "target and steps: what the attributions output explains."
        },
    )
    inputs = fields.Nested(RequestInputSchema, many=True, required=True, validate=validate.Length(min=1))
    outputs = fields.Nested(
        RequestOutputSchema,
        many=True,
        metadata={"description": "Which outputs to send (default: probabilities and label)."},
    )


class ResponseOutputSchema(Schema):
    name = fields.String(required=True, validate=validate.OneOf(OUTPUT_NAMES))
    shape = fields.List(fields.Integer(), required=True)
    datatype = fields.String(required=True, validate=validate.OneOf(("FP32", "INT64", "BYTES")))
    parameters = fields.Dict(
        keys=fields.String(),
        metadata={"description": "binary_data_size: the tensor is that many bytes after the JSON."},
    )
    data = TensorData(metadata={"description": "Row-major values, flat (absent when binary)."})


class InferenceResponseSchema(Schema):
    """``$inference_response``."""

    model_name = fields.String(required=True)
    model_version = fields.String(required=True)
    id = fields.String(metadata={"description": "The request's id, if it had one."})
    parameters = fields.Dict(keys=fields.String())
    outputs = fields.List(fields.Nested(ResponseOutputSchema), required=True)


class MetadataTensorSchema(Schema):
    name = fields.String(required=True)
    datatype = fields.String(required=True)
    shape = fields.List(fields.Integer(), required=True, metadata={"description": "-1: any size"})
    parameters = fields.Dict(
        keys=fields.String(),
        metadata={"description": "What else the tensor takes or means (datatypes, shapes, class names)."},
    )


class ModelMetadataSchema(Schema):
    """``$metadata_model_response``."""

    name = fields.String(required=True)
    versions = fields.List(
        fields.String(), required=True, metadata={"description": "Ready versions, oldest first."}
    )
    platform = fields.String(required=True)
    inputs = fields.List(fields.Nested(MetadataTensorSchema), required=True)
    outputs = fields.List(fields.Nested(MetadataTensorSchema), required=True)


class ServerMetadataSchema(Schema):
    name = fields.String(required=True)
    version = fields.String(required=True)
    extensions = fields.List(fields.String(), required=True)


class LiveSchema(Schema):
    live = fields.Boolean(required=True)


class ReadySchema(Schema):
    ready = fields.Boolean(required=True)


class ModelReadySchema(Schema):
    name = fields.String(required=True)
    ready = fields.Boolean(required=True)


class V2ErrorSchema(Schema):
    """The protocol's error: ``{"error": "<message>"}``."""

    error = fields.String(required=True)


INFERENCE_REQUEST = InferenceRequestSchema()
_REQUEST_KEYS = frozenset({"id", "parameters", "inputs", "outputs"})
_INPUT_KEYS = frozenset({"name", "shape", "datatype", "parameters", "data"})
_OUTPUT_KEYS = frozenset({"name", "parameters"})


def load_request(doc: Any) -> dict[str, Any]:
    """The request, as ``InferenceRequestSchema`` loads it (``ValidationError`` otherwise).

    Most requests have the plain form the clients send; ``plain_request`` checks exactly that
    form in a few dict lookups and gives what the schema would give (a property test holds the
    two together), and the schema, the reference, reads everything else and words the errors.
    The schema's generic walk was a tenth of a single-image request's CPU time.
    """
    return plain_request(doc) or INFERENCE_REQUEST.load(doc)  # type: ignore[return-value]


def plain_request(doc: Any) -> dict[str, Any] | None:
    """``doc`` when it is a valid request of the plain form, else None: every key known, ids
    ASCII, inputs and outputs with their fields of the right types, data or binary_data_size."""
    if type(doc) is not dict or not doc.keys() <= _REQUEST_KEYS:
        return None
    if "id" in doc and not (type(doc["id"]) is str and doc["id"].isascii()):
        return None
    if type(doc.get("parameters", {})) is not dict:
        return None
    inputs = doc.get("inputs")
    if type(inputs) is not list or not inputs or not all(map(_plain_input, inputs)):
        return None
    outputs = doc.get("outputs", [])
    if type(outputs) is not list or not all(map(_plain_output, outputs)):
        return None
    return doc


def _plain_input(tensor: Any) -> bool:
    if type(tensor) is not dict or not tensor.keys() <= _INPUT_KEYS:
        return False
    shape = tensor.get("shape")
    if (
        type(tensor.get("name")) is not str
        or type(shape) is not list
        or not all(type(dim) is int and dim >= 0 for dim in shape)
        or tensor.get("datatype") not in DATATYPES
    ):
        return False
    parameters = tensor.get("parameters", {})
    if type(parameters) is not dict:
        return False
    size = parameters.get("binary_data_size")
    if size is None:
        return tensor.get("data") is not None
    return "data" not in tensor and type(size) is int and size >= 0


def _plain_output(output: Any) -> bool:
    return (
        type(output) is dict
        and output.keys() <= _OUTPUT_KEYS
        and output.get("name") in OUTPUT_NAMES
        and type(output.get("parameters", {})) is dict
    )


# --- routes -------------------------------------------------------------------------------
#: The errors of the protocol's routes, all in the ``V2Error`` shape.
ERRORS = {
    "400": "Bad request: the body, a tensor's datatype, shape or values",
    "404": "Unknown model, version or route",
    "413": "Body too large",
    "415": "Unsupported Content-Encoding",
}
_BINARY_BODY = {BINARY_MIMETYPE: {"schema": {"type": "string", "format": "binary"}}}
_BINARY_HEADER = {
    "name": HEADER_LENGTH,
    "in": "header",
    "required": False,
    "schema": {"type": "integer", "minimum": 0},
    "description": "Binary tensor data extension: the body is this many bytes of JSON, then the raw "
    "little-endian bytes of each input whose parameters give binary_data_size, in order.",
}


@route(
    v2,
    "",
    summary="Open Inference Protocol: server metadata (name, version, extensions).",
    tags=("v2",),
    response=ServerMetadataSchema,
    operation_id="v2_server_metadata",
)
def server_metadata() -> Response:
    return _json({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS})


@route(
    v2,
    "/health/live",
    summary="Server live: the process answers.",
    tags=("v2-health",),
    access="open",
    response=LiveSchema,
    operation_id="v2_server_live",
)
def server_live() -> Response:
    return _json({"live": True})


@route(
    v2,
    "/health/ready",
    summary="Server ready: the default model is loaded (else 400, as the protocol says).",
    tags=("v2-health",),
    access="open",
    response=ReadySchema,
    errors={"400": "Not ready"},
    error=ReadySchema,
    operation_id="v2_server_ready",
)
def server_ready() -> Response:
    """Ready when the default model is loaded: the protocol answers 200 for ready and a 4xx
    for not ready."""
    ready = current().ready
    return Response(orjson.dumps({"ready": ready}), status=200 if ready else 400, mimetype=JSON_MIMETYPE)


@route(
    v2,
    "/models/<name>",
    "/models/<name>/versions/<version>",
    summary="Open Inference Protocol: model metadata (its input and outputs).",
    tags=("v2",),
    response=ModelMetadataSchema,
    errors={"404": ERRORS["404"]},
    error=V2ErrorSchema,
    operation_id="v2_model_metadata",
)
def model_metadata(name: str, version: str | None = None) -> Response:
    endpoint = lookup(name, version)
    return _json(oip.model_metadata(endpoint, current().versions(endpoint.model.name)))


@route(
    v2,
    "/models/<name>/ready",
    "/models/<name>/versions/<version>/ready",
    summary="Open Inference Protocol: model ready.",
    tags=("v2-health",),
    access="open",
    response=ModelReadySchema,
    errors={"404": ERRORS["404"]},
    error=V2ErrorSchema,
    operation_id="v2_model_ready",
)
def model_ready(name: str, version: str | None = None) -> Response:
    """A model is ready once it is in the registry: it is loaded and validated before that."""
    return _json({"name": lookup(name, version).model.name, "ready": True})


@route(
    v2,
    "/models/<name>/infer",
    "/models/<name>/versions/<version>/infer",
    method="POST",
    summary="Open Inference Protocol: inference. Input 'input' (FP32 [N, 784] or [N, 28, 28] in "
    "[0, 1], or UINT8 0-255); outputs 'probabilities' (FP32 [N, C]) and 'label' (INT64 [N]).",
    tags=("v2",),
    request=InferenceRequestSchema,
    request_content=_BINARY_BODY,
    parameters=(_BINARY_HEADER,),
    response=InferenceResponseSchema,
    response_content=_BINARY_BODY,
    response_description="OK; with binary outputs, the JSON is followed by their bytes and the "
    f"response has the {HEADER_LENGTH} header.",
    errors=ERRORS,
    error=V2ErrorSchema,
    operation_id="v2_infer",
)
def infer(name: str, version: str | None = None) -> Response:
    endpoint = lookup(name, version)
    header, binary = _split_body(_body())
    try:
        req = load_request(loads_json(header, V2_NUMBERS))
    except ValidationError as exc:
        raise APIError(describe_messages(exc.messages)) from None
    x = _input_batch(req, endpoint.spec, binary)
    outputs = _requested_outputs(req, endpoint.model.num_classes)
    options = _explain_options(req, outputs, len(x), endpoint.spec)
    if options is None:
        return _infer_response(endpoint, req.get("id"), outputs, dataplane.infer(endpoint.model, x))
    explanation = dataplane.explain(endpoint.model, x, *options)
    return _infer_response(endpoint, req.get("id"), outputs, explanation.inference, explanation.attributions)


def _explain_options(
    req: dict[str, Any], outputs: list[tuple[str, bool, int]], n: int, spec: InputSpec
) -> tuple[str, NDArray[np.intp] | None, int | None] | None:
    """What ``attributions`` explains, from the request's parameters; None if not asked for."""
    parameters = req.get("parameters", {})
    given = [name for name in EXPLAIN_PARAMETERS if name in parameters]
    if not any(name == ATTRIBUTIONS for name, _, _ in outputs):
        if given:
            raise APIError(
                f"parameters.{', parameters.'.join(given)}: for the {ATTRIBUTIONS!r} output only; "
                "ask for it in 'outputs'"
            )
        return None
    try:
        return dataplane.explain_options(n, spec, *(parameters.get(name) for name in EXPLAIN_PARAMETERS))
    except dataplane.InputError as exc:
        raise APIError("parameters." + exc.message(_MESSAGES, datatype="")) from None


# --- the request --------------------------------------------------------------------------
def _body() -> bytes:
    """The request body, decompressed if the client compressed it (tritonclient can)."""
    body = read_body(request)
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding == "identity":
        return body
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(encoding)
    if wbits is None:
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not supported; send the body as it is, gzip or deflate"
        )
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    decompressor = zlib.decompressobj(wbits)
    try:
        plain = decompressor.decompress(body, limit + 1)  # no more: a zip bomb stops here
    except zlib.error as exc:
        raise APIError(f"the body is not valid {encoding} data: {exc}") from None
    if len(plain) > limit:
        raise RequestEntityTooLarge(f"the decompressed body is over the limit of {limit} bytes")
    if not decompressor.eof:
        raise APIError(f"the {encoding} data ends early")
    return plain


def _split_body(body: bytes) -> tuple[bytes, memoryview]:
    """(JSON, binary tensor data): the JSON is the whole body unless the header says less."""
    raw_length = request.headers.get(HEADER_LENGTH)
    if raw_length is None:
        return body, memoryview(b"")
    try:
        length = int(raw_length)
    except ValueError:
        length = -1
    if not 0 <= length <= len(body):
        raise APIError(
            f"{HEADER_LENGTH} must be the length of the JSON at the start of the body "
            f"(0 to {len(body)}), got {raw_length!r}"
        )
    view = memoryview(body)
    return bytes(view[:length]), view[length:]


def _input_batch(req: dict[str, Any], spec: InputSpec, binary: memoryview) -> NDArray[np.float32]:
    """The batch (N, D) float32 in [0, 1] that the request's input holds; 400 with why if it
    does not fit the model (datatype, shape, batch size, element count, values)."""
    inputs = req["inputs"]
    if len(inputs) != 1:
        raise APIError(f"the model takes one input, {INPUT_NAME!r}; got {len(inputs)}")
    tensor = inputs[0]
    name = tensor["name"]
    if name != INPUT_NAME:
        raise APIError(f"unexpected input {name!r}: the model's input is {INPUT_NAME!r}")
    datatype = tensor["datatype"]
    dtype = FLOAT_DTYPES.get(datatype) or INTEGER_DTYPES.get(datatype)
    if dtype is None:
        raise APIError(f"input {name!r}: datatype {datatype} is not supported; send {_SUPPORTED}")
    shape = tensor["shape"]
    size = tensor.get("parameters", {}).get("binary_data_size")
    integers = datatype in INTEGER_DTYPES
    try:
        dataplane.check_tensor_shape(shape, spec)
        if size is not None:
            count = math.prod(shape)
            if size != count * dtype.itemsize or size != len(binary):
                raise APIError(
                    f"input {name!r}: {datatype} {list(shape)} is {count * dtype.itemsize}"
                    f" bytes; binary_data_size is {size} and {len(binary)} bytes follow the JSON"
                )
            values = dataplane.tensor_array(shape, np.frombuffer(binary, dtype=dtype))
        else:
            if len(binary):
                raise APIError(f"{len(binary)} bytes follow the JSON but no input has binary_data_size")
            values = dataplane.tensor_array(shape, tensor["data"])
        return dataplane.model_input(
            values,
            spec,
            top=dataplane.PIXEL_MAX if integers else 1.0,
            whole=integers,
            shape_checked=True,
        )
    except dataplane.InputError as exc:
        raise APIError(f"input {name!r}: " + exc.message(_MESSAGES, datatype=datatype)) from None


_MESSAGES = MESSAGES


def _requested_outputs(req: dict[str, Any], num_classes: int) -> list[tuple[str, bool, int]]:
    """(name, as binary?, top k or 0) for each output to send, in the order asked for."""
    parameters = req.get("parameters", {})
    binary_default = parameters.get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise APIError("parameters.binary_data_output must be true or false")
    asked = req.get("outputs") or [{"name": name} for name in DEFAULT_OUTPUTS]
    outputs: list[tuple[str, bool, int]] = []
    for output in asked:
        name = output["name"]
        if any(name == seen for seen, _, _ in outputs):
            raise APIError(f"output {name!r} is asked for twice")
        options = output.get("parameters", {})
        binary = options.get("binary_data", binary_default)
        if not isinstance(binary, bool):
            raise APIError(f"output {name!r}: binary_data must be true or false")
        top = options.get("classification", 0)
        if isinstance(top, bool) or not isinstance(top, int) or top < 0:
            raise APIError(f"output {name!r}: classification must be a non-negative integer")
        if top and name != PROBABILITIES:
            raise APIError(f"output {name!r}: classification applies to {PROBABILITIES!r} only")
        outputs.append((name, binary, min(top, num_classes)))
    return outputs


# --- the response -------------------------------------------------------------------------
def _infer_response(
    endpoint: Endpoint,
    request_id: str | None,
    outputs: list[tuple[str, bool, int]],
    result: dataplane.Inference,
    attributions: NDArray[np.floating] | None = None,
) -> Response:
    model = endpoint.model
    probabilities = result.probabilities.astype("<f4", copy=False)
    batch, num_classes = probabilities.shape
    labels = result.labels
    tensors = []
    chunks = []
    for name, binary, top in outputs:
        tensor: dict[str, Any] = {"name": name}
        if name == LABEL:
            values: Any = labels.astype("<i8", copy=False)
            tensor.update(datatype="INT64", shape=[batch])
        elif name == ATTRIBUTIONS:
            assert attributions is not None  # (asked for: computed)
            values = attributions.astype("<f4", copy=False).ravel()
            tensor.update(datatype="FP32", shape=list(attributions.shape))
        elif top:
            values = oip.top_classes(probabilities, top, model.class_names)
            tensor.update(datatype="BYTES", shape=[batch, top])
        else:
            values = probabilities.ravel()
            tensor.update(datatype="FP32", shape=[batch, num_classes])
        if binary:
            raw = oip.bytes_tensor(values) if top else values.tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = values
        tensors.append(tensor)
    body: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if request_id is not None:
        body["id"] = request_id
    body["outputs"] = tensors
    header = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return Response(header, mimetype=JSON_MIMETYPE)
    response = Response(b"".join([header, *chunks]), mimetype=BINARY_MIMETYPE)
    response.headers[HEADER_LENGTH] = str(len(header))
    return response


def _json(body: Any) -> Response:
    return Response(orjson.dumps(body), mimetype=JSON_MIMETYPE)


# --- errors -------------------------------------------------------------------------------
@v2.errorhandler(Exception)
def _error(exc: Exception) -> Response:
    """Every error of a v2 route as the protocol's ``{"error": "<message>"}``."""
    return plain_error(exc)


def register_v2(app: Flask) -> None:
    app.register_blueprint(v2)
