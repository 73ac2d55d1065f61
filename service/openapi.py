"""The OpenAPI 3 document, generated once from the marshmallow schemas with apispec."""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import fields

from service import schemas, v2
from service.demo import PreprocessResponseSchema
from service.images import IMAGE_MIMETYPES
from service.registry import Registry

OPENAPI_VERSION = "3.0.3"
API_VERSION = "1.0.0"
_NUMBER_ROW = {"type": "array", "items": {"type": "number"}}
#: How the custom fields look in OpenAPI (apispec knows only marshmallow's own fields).
CUSTOM_FIELDS: dict[type[fields.Field], dict[str, Any]] = {
    schemas.PixelBatch: {
        "type": "array",
        "items": {"oneOf": [_NUMBER_ROW, {"type": "array", "items": _NUMBER_ROW}]},
        "example": [[0.0] * 4 + [0.5, 1.0]],
    },
    schemas.Labels: {
        "oneOf": [
            {"type": "array", "items": {"type": "integer"}},
            {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
            {"type": "string", "example": "3,1,4"},
        ],
    },
    schemas.ImageData: {"type": "string", "format": "byte"},
    v2.TensorData: {"type": "array", "items": {}, "example": [0.0, 0.0, 0.5, 1.0]},
}
_ERRORS = {
    "400": "Malformed JSON",
    "404": "Unknown model, version or route",
    "413": "Body or image too large",
    "415": "Unsupported Content-Type",
    "422": "Invalid inputs, labels, options or image",
}
_OPERATIONS = {
    "predict": (
        "PredictRequest",
        "PredictResponse",
        "Predict: per input the label, class name and class probabilities.",
    ),
    "loss": ("LossRequest", "LossResponse", "Mean loss over the batch, as TwoLayerNet.loss computes it."),
    "accuracy": (
        "AccuracyRequest",
        "AccuracyResponse",
        "Accuracy, correct count and count, as TwoLayerNet.accuracy computes it.",
    ),
    "preprocess": (
        "PredictRequest",
        "PreprocessResponse",
        "The model's inputs as predict computes them, e.g. the 28x28 field of an image.",
    ),
}


#: Operations under these tags are open whatever the settings; "admin" ones always need the
#: bearer token; all others need it when the server has one (AUTH_TOKEN). See service/auth.py.
OPEN_TAGS = frozenset({"health", "v2-health", "metrics", "demo"})
ADMIN_TAGS = frozenset({"admin"})
_V2_ERRORS = {
    "400": "Bad request: the body, a tensor's datatype, shape or values",
    "404": "Unknown model, version or route",
    "413": "Body too large",
    "415": "Unsupported Content-Encoding",
}


def _custom_fields(self: Any, field: fields.Field, **kwargs: Any) -> dict[str, Any]:
    for cls, props in CUSTOM_FIELDS.items():
        if isinstance(field, cls):
            return dict(props)
    return {}


def build_openapi(registry: Registry) -> dict[str, Any]:
    """The whole document as a dict; model names are listed as the ``name`` parameter's enum."""
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="Digits prediction service",
        version=API_VERSION,
        openapi_version=OPENAPI_VERSION,
        plugins=[plugin],
        info={
            "description": "TwoLayerNet models served over HTTP. Every error has the Error "
            "shape. See docs/API.md for image preprocessing."
        },
    )
    plugin.converter.add_attribute_function(_custom_fields)  # type: ignore[union-attr]
    for name, schema in (
        ("PredictRequest", schemas.PredictRequestSchema),
        ("LossRequest", schemas.LossRequestSchema),
        ("AccuracyRequest", schemas.AccuracyRequestSchema),
        ("PredictResponse", schemas.PredictResponseSchema),
        ("LossResponse", schemas.LossResponseSchema),
        ("AccuracyResponse", schemas.AccuracyResponseSchema),
        ("PreprocessResponse", PreprocessResponseSchema),
        ("ModelInfo", schemas.ModelInfoSchema),
        ("ModelList", schemas.ModelListResponseSchema),
        ("Status", schemas.StatusResponseSchema),
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
    ):
        spec.components.schema(name, schema=schema)
    errors = {code: {"description": text, "content": _json_ref("Error")} for code, text in _ERRORS.items()}
    name_param = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": sorted(registry.models)},
    }
    version_param = {
        "name": "version",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "A version directory's number, or a flat file's hash id "
        "(see GET /v1/models/{name}: versions).",
    }

    for action, (request_ref, response_ref, summary) in _OPERATIONS.items():
        operation = {
            "summary": summary,
            "requestBody": {"required": True, "content": _request_content(request_ref, action)},
            "parameters": _query_parameters(action),
            "responses": {"200": {"description": "OK", "content": _json_ref(response_ref)}, **errors},
        }
        spec.path(
            path=f"/v1/models/{{name}}/{action}",
            operations={
                "post": {
                    **operation,
                    "operationId": action,
                    "tags": ["inference"],
                    "parameters": [name_param, *operation["parameters"]],
                }
            },
        )
        spec.path(
            path=f"/v1/models/{{name}}/versions/{{version}}/{action}",
            operations={
                "post": {
                    **operation,
                    "operationId": f"{action}_version",
                    "tags": ["inference"],
                    "summary": f"{summary} (a given version of the model)",
                    "parameters": [name_param, version_param, *operation["parameters"]],
                }
            },
        )
        spec.path(
            path=f"/{action}",
            operations={
                "post": {
                    **operation,
                    "operationId": f"{action}_default",
                    "tags": ["inference"],
                    "summary": f"{summary} (default model: {registry.default_name})",
                }
            },
        )

    spec.path(
        path="/v1/models",
        operations={
            "get": {
                "summary": "All served models and which one is the default.",
                "tags": ["models"],
                "operationId": "list_models",
                "responses": {"200": {"description": "OK", "content": _json_ref("ModelList")}},
            }
        },
    )
    spec.path(
        path="/v1/models/{name}",
        operations={
            "get": {
                "summary": "A model's metadata: input shape, classes, preprocessing, metrics, version "
                "(the newest, which serves by default), and its ready versions.",
                "tags": ["models"],
                "operationId": "model_info",
                "parameters": [name_param],
                "responses": {
                    "200": {"description": "OK", "content": _json_ref("ModelInfo")},
                    "404": errors["404"],
                },
            }
        },
    )
    spec.path(
        path="/v1/models/{name}/versions/{version}",
        operations={
            "get": {
                "summary": "The metadata of one version of a model.",
                "tags": ["models"],
                "operationId": "model_version_info",
                "parameters": [name_param, version_param],
                "responses": {
                    "200": {"description": "OK", "content": _json_ref("ModelInfo")},
                    "404": errors["404"],
                },
            }
        },
    )
    for path, summary in (
        ("/healthz", "Live: the process answers."),
        ("/readyz", "Ready: a valid model is loaded."),
    ):
        spec.path(
            path=path,
            operations={
                "get": {
                    "summary": summary,
                    "tags": ["health"],
                    "operationId": path.strip("/"),
                    "responses": {"200": {"description": "OK", "content": _json_ref("Status")}},
                }
            },
        )
    spec.path(
        path="/metrics",
        operations={
            "get": {
                "summary": "Prometheus metrics, summed over every worker: requests by route, model and "
                "status, latency histograms, in-flight requests, predictions by class, "
                "model loads and load failures.",
                "tags": ["metrics"],
                "operationId": "metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    )
    spec.path(
        path="/v1/admin/reload",
        operations={
            "post": {
                "summary": "Check MODEL_DIR now in the worker that answers (the others follow within "
                "MODEL_POLL_SECONDS): what was loaded, failed and removed, and what serves.",
                "tags": ["admin"],
                "operationId": "reload_models",
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "changed": {"type": "boolean"},
                                        "loaded": {"type": "array", "items": {"type": "object"}},
                                        "failed": {"type": "array", "items": {"type": "object"}},
                                        "removed": {"type": "array", "items": {"type": "object"}},
                                        "serving": {
                                            "type": "object",
                                            "additionalProperties": {
                                                "type": "object",
                                                "properties": {
                                                    "version": {"type": "string"},
                                                    "versions": {
                                                        "type": "array",
                                                        "items": {"type": "string"},
                                                    },
                                                },
                                            },
                                        },
                                        "pid": {"type": "integer"},
                                        "workers_restarting": {
                                            "type": "boolean",
                                            "description": (
                                                "MODEL_POLL_SECONDS=0: gunicorn restarts every worker"
                                            ),
                                        },
                                    },
                                }
                            }
                        },
                    }
                },
            }
        },
    )
    spec.path(
        path="/",
        operations={
            "get": {
                "summary": "The browser demo: draw a digit, see the prediction.",
                "tags": ["demo"],
                "operationId": "demo_page",
                "responses": {
                    "200": {
                        "description": "An HTML page",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    )
    _v2_paths(spec, name_param, version_param)
    spec.components.security_scheme(
        "bearerAuth",
        {
            "type": "http",
            "scheme": "bearer",
            "description": "Needed when the server sets AUTH_TOKEN (or AUTH_TOKEN_FILE): then every "
            "operation but health, metrics and the demo page needs "
            "'Authorization: Bearer <token>'. Admin operations always need it.",
        },
    )
    document = spec.to_dict()
    _add_security(document)
    return document


def _v2_paths(spec: APISpec, name_param: dict[str, Any], version_param: dict[str, Any]) -> None:
    """The Open Inference Protocol's REST routes (service/v2.py); errors are V2Error."""
    errors = {
        code: {"description": text, "content": _json_ref("V2Error")} for code, text in _V2_ERRORS.items()
    }
    spec.path(
        path="/v2",
        operations={
            "get": {
                "summary": "Open Inference Protocol: server metadata (name, version, extensions).",
                "tags": ["v2"],
                "operationId": "v2_server_metadata",
                "responses": {"200": {"description": "OK", "content": _json_ref("V2ServerMetadata")}},
            }
        },
    )
    for path, ref, summary in (
        ("live", "V2Live", "Server live: the process answers."),
        ("ready", "V2Ready", "Server ready: every model is loaded."),
    ):
        spec.path(
            path=f"/v2/health/{path}",
            operations={
                "get": {
                    "summary": summary,
                    "tags": ["v2-health"],
                    "operationId": f"v2_server_{path}",
                    "responses": {"200": {"description": "OK", "content": _json_ref(ref)}},
                }
            },
        )
    binary_header = {
        "name": v2.HEADER_LENGTH,
        "in": "header",
        "required": False,
        "schema": {"type": "integer", "minimum": 0},
        "description": "Binary tensor data extension: the body is this many bytes of JSON, then "
        "the raw little-endian bytes of each input whose parameters give "
        "binary_data_size, in order.",
    }
    binary_body = {"schema": {"type": "string", "format": "binary"}}
    for prefix, params, suffix in (
        ("/v2/models/{name}", [name_param], ""),
        ("/v2/models/{name}/versions/{version}", [name_param, version_param], "_version"),
    ):
        spec.path(
            path=prefix,
            operations={
                "get": {
                    "summary": "Open Inference Protocol: model metadata (its input and outputs).",
                    "tags": ["v2"],
                    "operationId": f"v2_model_metadata{suffix}",
                    "parameters": params,
                    "responses": {
                        "200": {"description": "OK", "content": _json_ref("V2ModelMetadata")},
                        "404": errors["404"],
                    },
                }
            },
        )
        spec.path(
            path=f"{prefix}/ready",
            operations={
                "get": {
                    "summary": "Open Inference Protocol: model ready.",
                    "tags": ["v2-health"],
                    "operationId": f"v2_model_ready{suffix}",
                    "parameters": params,
                    "responses": {
                        "200": {"description": "OK", "content": _json_ref("V2ModelReady")},
                        "404": errors["404"],
                    },
                }
            },
        )
        spec.path(
            path=f"{prefix}/infer",
            operations={
                "post": {
                    "summary": "Open Inference Protocol: inference. Input 'input' (FP32 [N, 784] or "
                    "[N, 28, 28] in [0, 1], or UINT8 0-255); outputs 'probabilities' (FP32 "
                    "[N, C]) and 'label' (INT64 [N]).",
                    "tags": ["v2"],
                    "operationId": f"v2_infer{suffix}",
                    "parameters": [*params, binary_header],
                    "requestBody": {
                        "required": True,
                        "content": {**_json_ref("V2InferenceRequest"), v2.BINARY_MIMETYPE: binary_body},
                    },
                    "responses": {
                        "200": {
                            "description": "OK; with binary outputs, the JSON is followed "
                            "by their bytes and the response has the "
                            f"{v2.HEADER_LENGTH} header.",
                            "content": {**_json_ref("V2InferenceResponse"), v2.BINARY_MIMETYPE: binary_body},
                        },
                        **errors,
                    },
                }
            },
        )


def _add_security(document: dict[str, Any]) -> None:
    """Each operation's security, by its tag: open, always the token, or the token if set
    (``{}``, no security, is the alternative that a server without AUTH_TOKEN accepts)."""
    for operations in document["paths"].values():
        for operation in operations.values():
            tags = set(operation.get("tags", ()))
            if tags & ADMIN_TAGS:
                operation["security"] = [{"bearerAuth": []}]
                operation.setdefault("responses", {}).setdefault("401", _UNAUTHORIZED)
            elif not tags & OPEN_TAGS:
                operation["security"] = [{"bearerAuth": []}, {}]
                operation.setdefault("responses", {}).setdefault("401", _UNAUTHORIZED)


_UNAUTHORIZED = {
    "description": "No bearer token, or not the server's (AUTH_TOKEN); the "
    "WWW-Authenticate header says Bearer"
}


def _json_ref(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}


def _request_content(request_ref: str, action: str) -> dict[str, Any]:
    form: dict[str, Any] = {
        "images": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": "One or more image files, under any field name.",
        },
        "preprocess": {"type": "boolean", "default": True},
    }
    if action != "predict":
        form["labels"] = {"type": "string", "description": "'3,1,4' or a JSON array"}
    if action == "loss":
        form["loss"] = {"type": "string", "enum": ["cross_entropy", "mean_squared_error"]}
    content: dict[str, Any] = _json_ref(request_ref)
    content["multipart/form-data"] = {"schema": {"type": "object", "properties": form}}
    for mimetype in sorted(IMAGE_MIMETYPES):
        content[mimetype] = {"schema": {"type": "string", "format": "binary"}}
    return content


def _query_parameters(action: str) -> list[dict[str, Any]]:
    """Options for a raw image body, which has nowhere else to put them."""
    params = [
        {
            "name": "preprocess",
            "in": "query",
            "schema": {"type": "boolean"},
            "description": "Raw image bodies only: false skips MNIST-style preprocessing.",
        }
    ]
    if action != "predict":
        params.append(
            {
                "name": "labels",
                "in": "query",
                "schema": {"type": "string"},
                "description": "Raw image bodies only: the image's label.",
            }
        )
    if action == "loss":
        params.append(
            {
                "name": "loss",
                "in": "query",
                "schema": {"type": "string"},
                "description": "Raw image bodies only: the loss function.",
            }
        )
    return params
