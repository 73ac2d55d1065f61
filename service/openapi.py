"""The OpenAPI 3 document, generated from the routes the app serves (``service.routes``).

``build_openapi`` walks the app's URL map: every rule becomes an operation, described by the
``Operation`` its view was declared with, so the document lists exactly the routes served. The
schemas come from marshmallow through apispec; the custom fields (pixels, labels, tensor data)
are described with the limits of the default model (input shapes, batch size, value ranges,
class count), and the ``name`` and ``version`` path parameters list the models and versions that
exist, so a client or a fuzzer generating requests from the document reaches the models.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask
from marshmallow import Schema, fields
from werkzeug.routing import Rule

from service import schemas, v2
from service.dataplane import InputSpec
from service.demo import PreprocessResponseSchema
from service.errors import StartupError
from service.feedback import ClassLabel, ClassLabels, FeedbackRequestSchema, FeedbackResponseSchema
from service.routes import Operation, is_document, operation_of
from service.state import ServiceState

OPENAPI_VERSION = "3.0.3"
API_VERSION = "1.0.0"


def _custom_fields(spec: InputSpec) -> Callable[..., dict[str, Any]]:
    """apispec's description of the custom fields, with the limits of ``spec`` (the default
    model's: one document describes every model, and the shipped ones share their shapes)."""
    pixel = {"type": "number", "minimum": 0, "maximum": 1}
    one_input = []
    for shape in spec.accepted_shapes:
        item: dict[str, Any] = pixel
        for size in reversed(shape):
            item = {"type": "array", "items": item, "minItems": size, "maxItems": size}
        one_input.append(item)
    batch: dict[str, Any] = {
        "type": "array",
        "minItems": 1,
        "maxItems": spec.max_batch_size,
        "items": one_input[0] if len(one_input) == 1 else {"oneOf": one_input},
    }
    if one_input:
        batch["example"] = [[0.0] * math.prod(spec.accepted_shapes[0])]
    top = max((spec.num_classes or 2) - 1, 0)
    _class = {
        "oneOf": [{"type": "integer", "minimum": 0, "maximum": top}, {"type": "string", "minLength": 1}]
    }
    size = spec.input_size or 1
    described: dict[type[fields.Field], dict[str, Any]] = {
        schemas.PixelBatch: batch,
        schemas.Labels: {
            "oneOf": [
                {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0, "maximum": top}},
                {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "array",
                        "minItems": top + 1,
                        "maxItems": top + 1,
                        "items": {"type": "integer", "enum": [0, 1]},
                    },
                },
                {"type": "string", "pattern": r"^\d+(,\d+)*$", "example": "3,1,4"},
            ],
        },
        schemas.ImageData: {"type": "string", "format": "byte"},
        ClassLabels: {
            "oneOf": [
                {"type": "array", "minItems": 1, "items": _class},
                {"type": "string", "example": "3,1,4"},
            ],
        },
        ClassLabel: _class,
        v2.Shape: {
            "type": "array",
            "items": {"type": "integer", "minimum": 0},
            "minItems": 2,
            "maxItems": 1 + max((len(shape) for shape in spec.accepted_shapes), default=2),
            "example": [1, size],
        },
        v2.TensorData: {
            "type": "array",
            "items": {"type": "number", "minimum": 0, "maximum": 1},
            "minItems": size,
            "maxItems": size * spec.max_batch_size,
            "description": "Row-major values, flat or nested: FP16/FP32/FP64 in [0, 1], integer "
            f"datatypes 0-{schemas.dataplane.PIXEL_MAX}.",
        },
    }

    def describe(self: Any, field: fields.Field, **kwargs: Any) -> dict[str, Any]:
        for cls, props in described.items():
            if isinstance(field, cls):
                return dict(props)
        return {}

    return describe


#: Component names of the schemas (others are named by apispec after their class).
COMPONENTS: tuple[tuple[str, type[Schema]], ...] = (
    ("PredictRequest", schemas.PredictRequestSchema),
    ("LossRequest", schemas.LossRequestSchema),
    ("AccuracyRequest", schemas.AccuracyRequestSchema),
    ("PredictResponse", schemas.PredictResponseSchema),
    ("LossResponse", schemas.LossResponseSchema),
    ("AccuracyResponse", schemas.AccuracyResponseSchema),
    ("PreprocessResponse", PreprocessResponseSchema),
    ("FeedbackRequest", FeedbackRequestSchema),
    ("FeedbackResponse", FeedbackResponseSchema),
    ("ModelInfo", schemas.ModelInfoSchema),
    ("ModelList", schemas.ModelListResponseSchema),
    ("Status", schemas.StatusResponseSchema),
    ("ReloadReport", schemas.ReloadReportSchema),
    ("Error", schemas.ErrorResponseSchema),
    ("V2RequestInput", v2.RequestInputSchema),  # (nested ones first: named, not guessed)
    ("V2RequestOutput", v2.RequestOutputSchema),
    ("V2ResponseOutput", v2.ResponseOutputSchema),
    ("V2MetadataTensor", v2.MetadataTensorSchema),
    ("V2InferenceRequest", v2.InferenceRequestSchema),
    ("V2InferenceResponse", v2.InferenceResponseSchema),
    ("V2ModelMetadata", v2.ModelMetadataSchema),
    ("V2ServerMetadata", v2.ServerMetadataSchema),
    ("V2Live", v2.LiveSchema),
    ("V2Ready", v2.ReadySchema),
    ("V2ModelReady", v2.ModelReadySchema),
    ("V2Error", v2.V2ErrorSchema),
)
_UNAUTHORIZED = {
    "description": "No bearer token, or not the server's (AUTH_TOKEN); WWW-Authenticate says Bearer"
}
#: What the HTTP server (gunicorn, service/workers.py) answers itself, for any path, before the
#: app: a request it cannot parse, or over its limits. Always in the Error shape (it may not
#: have read the path, so it cannot know the route's).
SERVER_ERRORS = {
    "400": "Malformed HTTP (request line, version, method, header, framing, chunked body), "
    "answered by the HTTP server before the route when the request cannot be parsed",
    "414": "Request line over 4,094 bytes (HTTP server, before the route)",
    "417": "An Expect header other than 100-continue (HTTP server, before the route)",
    "431": "Over 100 header fields or a field over 8,190 bytes (HTTP server, before the route)",
    "501": "A Transfer-Encoding the server does not implement (HTTP server, before the route)",
}
_RULE_ARGUMENT = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


class UndocumentedRoute(StartupError):
    """A served route has no declaration (``service.routes.route``): nothing may serve unlisted."""


def build_openapi(app: Flask, state: ServiceState) -> dict[str, Any]:
    """The whole document, generated from the app's URL map and each view's ``Operation``; the
    ``name`` and ``version`` parameters list the models and versions that ``state`` serves."""
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="Digits prediction service",
        version=API_VERSION,
        openapi_version=OPENAPI_VERSION,
        plugins=[plugin],
        # relative to where the document is served: calls from Swagger UI (and any client that
        # resolves it) keep a path prefix a proxy put in front
        servers=[{"url": "."}],
        info={
            "description": "TwoLayerNet models served over HTTP. Every error of /v1 routes has the "
            "Error shape, of /v2 routes the V2Error shape. See docs/API.md for image preprocessing."
        },
    )
    default = state.models.get(state.default_name)
    spec_of_default = next(reversed(default.values())).spec if default else InputSpec()
    plugin.converter.add_attribute_function(_custom_fields(spec_of_default))  # type: ignore[union-attr]
    for name, schema in COMPONENTS:
        spec.components.schema(name, schema=schema)
    spec.components.security_scheme(
        "bearerAuth",
        {
            "type": "http",
            "scheme": "bearer",
            "description": "Needed when the server sets AUTH_TOKEN (or AUTH_TOKEN_FILE): then every "
            "operation but health, metrics and the demo page needs 'Authorization: Bearer <token>'. "
            "Admin operations always need it.",
        },
    )
    versions = sorted({v for by_version in state.models.values() for v in by_version}, key=_version_order)
    path_parameters = {
        "name": {
            "name": "name",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "enum": sorted(state.models)},
        },
        "version": {
            "name": "version",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "enum": versions},
            "description": "A version directory's number, or a flat file's hash id "
            "(see GET /v1/models/{name}: versions).",
        },
    }
    by_endpoint: dict[str, list[Rule]] = {}
    for rule in app.url_map.iter_rules():
        if not is_document(app, rule.endpoint):
            by_endpoint.setdefault(rule.endpoint, []).append(rule)
    for endpoint, rules in by_endpoint.items():
        operation = operation_of(app, endpoint)
        if operation is None:
            raise UndocumentedRoute(
                f"route {rules[0].rule} ({endpoint}) is not declared with service.routes.route"
            )
        takes_name = any("name" in rule.arguments for rule in rules)
        for rule in rules:
            path = _RULE_ARGUMENT.sub(r"{\1}", rule.rule)
            methods = sorted(rule.methods - {"HEAD", "OPTIONS"})  # type: ignore[operator]
            spec.path(
                path=path,
                operations={
                    method.lower(): _operation(
                        operation, endpoint, rule, takes_name, state.default_name, path_parameters
                    )
                    for method in methods
                },
            )
    document = spec.to_dict()
    for name in ("PredictRequest", "LossRequest", "AccuracyRequest", "ExplainRequest", "FeedbackRequest"):
        # exactly one source of inputs (schemas.PredictRequestSchema._check_batch), which
        # marshmallow says in a validator that apispec cannot see
        document["components"]["schemas"][name]["oneOf"] = [
            {"required": ["inputs"]},
            {"required": ["images"]},
        ]
    return document


def _operation(
    operation: Operation,
    endpoint: str,
    rule: Rule,
    takes_name: bool,
    default_name: str,
    path_parameters: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """One rule's OpenAPI operation, from its view's declaration."""
    operation_id = operation.operation_id or endpoint.rpartition(".")[2]
    summary = operation.summary
    if "version" in rule.arguments:
        operation_id += "_version"
        summary += " (a given version of the model)"
    elif takes_name and "name" not in rule.arguments:
        operation_id += "_default"
        summary += f" (default model: {default_name})"
    parameters = [path_parameters[arg] for arg in ("name", "version") if arg in rule.arguments]
    ok: dict[str, Any] = {"description": operation.response_description}
    content = dict(operation.response_content)
    if operation.response is not None:
        content = {"application/json": {"schema": operation.response}, **content}
    if content:
        ok["content"] = content
    if operation.response_headers:
        ok["headers"] = dict(operation.response_headers)
    if operation.links:
        ok["links"] = dict(operation.links)
    responses: dict[str, Any] = {str(operation.status): ok}
    for code, description in operation.errors.items():
        if code == "404" and not parameters and description.startswith("Unknown model"):
            continue  # no model named in the path: nothing to be unknown (feedback's other 404 stays)
        responses[code] = {"description": description}
        if operation.error is not None:
            responses[code]["content"] = {"application/json": {"schema": operation.error}}
    # gunicorn's own refusals (service/workers.py), before any route: every operation can get
    # them, always in the Error shape
    for code, description in SERVER_ERRORS.items():
        documented = responses.get(code)
        if documented is None:
            responses[code] = {"description": description, "content": _json(schemas.ErrorResponseSchema)}
        elif operation.error is not None and operation.error is not schemas.ErrorResponseSchema:
            documented["description"] += f"; or, in the Error shape: {description}"
            documented["content"] = _json({"oneOf": [operation.error, schemas.ErrorResponseSchema]})
    result: dict[str, Any] = {
        "summary": summary,
        "tags": list(operation.tags),
        "operationId": operation_id,
        "responses": responses,
    }
    if parameters or operation.parameters:
        result["parameters"] = [*parameters, *map(dict, operation.parameters)]
    if operation.request is not None or operation.request_content:
        body = dict(operation.request_content)
        if operation.request is not None:
            body = {"application/json": {"schema": operation.request}, **body}
        result["requestBody"] = {"required": True, "content": body}
    if operation.access == "admin":
        result["security"] = [{"bearerAuth": []}]
    elif operation.access == "token":
        result["security"] = [{"bearerAuth": []}, {}]  # {}: a server without AUTH_TOKEN
    if operation.access != "open":
        responses["401"] = _UNAUTHORIZED
    return result


def _json(schema: Any) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _version_order(version: str) -> tuple[int, int, str]:
    """Version directories by number, then flat files' hash ids."""
    return (0, int(version), "") if version.isdigit() else (1, 0, version)
