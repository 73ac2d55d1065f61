"""The v1 REST protocol (inference, model metadata), health, and the API documents.

Views stay thin: load the request with the model's schema, call the data plane, build the body.
Each route is declared once (``service.routes.route``): its rules, and what the OpenAPI
document and the auth check say of it.
Response bodies are plain dicts written with orjson (``PredictResponseSchema`` and friends
document them and the tests check them); dumping through marshmallow would cost more than
the forward pass on the hot path.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from flask import Blueprint, Flask, Response, request
from flask.json.provider import JSONProvider
from flask_swagger_ui import get_swaggerui_blueprint
from marshmallow import Schema
from numpy.typing import NDArray
from werkzeug.routing import BaseConverter

from service import dataplane
from service.errors import NotAcceptable, NotReady
from service.heatmap import PNG_MIMETYPE, heatmap_png
from service.images import IMAGE_MIMETYPES
from service.inputs import JSON_MIMETYPE, parse_floor, read_body, request_payload
from service.registry import Model
from service.responses import explanation_items
from service.routes import document_only, route
from service.schemas import (
    AccuracyRequestSchema,
    AccuracyResponseSchema,
    ErrorResponseSchema,
    ExplainRequestSchema,
    ExplainResponseSchema,
    LossRequestSchema,
    LossResponseSchema,
    ModelInfoSchema,
    ModelListResponseSchema,
    PredictRequestSchema,
    PredictResponseSchema,
    StatusResponseSchema,
    plain_inputs,
)
from service.settings import Settings
from service.state import Endpoint, current, lookup
from training import LOSSES

api = Blueprint("api", __name__)
health = Blueprint("health", __name__)
docs = Blueprint("docs", __name__)
#: Registered only with ``BENCH_NOOP=1``: the framework floor for bench/serve_load.sh.
bench = Blueprint("bench", __name__)


class OrjsonProvider(JSONProvider):
    """Flask's JSON (``jsonify``, ``request.get_json``) through orjson."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return orjson.loads(s)


def json_response(body: Any, status: int = 200) -> Response:
    """``body`` as JSON; numpy arrays in it are written directly, float32 in its shortest form."""
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status=status, mimetype=JSON_MIMETYPE
    )


#: The errors of the v1 routes, all in the ``Error`` shape.
ERRORS = {
    "400": "Malformed JSON",
    "404": "Unknown model, version or route",
    "413": "Body or image too large",
    "415": "Unsupported Content-Type",
    "422": "Invalid inputs, labels, options or image",
}


def inference(
    action: str, summary: str, request_schema: type[Schema], response: type[Schema]
) -> dict[str, Any]:
    """The declaration of a v1 inference route: JSON, a multipart upload or a raw image body."""
    form: dict[str, Any] = {
        "images": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": "One or more image files, under any field name.",
        },
        "preprocess": {"type": "boolean", "default": True},
    }
    query = [
        {
            "name": "preprocess",
            "in": "query",
            "schema": {"type": "boolean"},
            "description": "Raw image bodies only: false skips MNIST-style preprocessing.",
        }
    ]
    if action in ("loss", "accuracy"):
        form["labels"] = {"type": "string", "description": "'3,1,4' or a JSON array"}
        query.append(
            {
                "name": "labels",
                "in": "query",
                "schema": {"type": "string", "pattern": r"^\d+(,\d+)*$"},
                "description": "Raw image bodies only: the image's label.",
            }
        )
    if action == "loss":
        form["loss"] = {"type": "string", "enum": list(LOSSES)}
        query.append(
            {
                "name": "loss",
                "in": "query",
                "schema": {"type": "string", "enum": list(LOSSES)},
                "description": "Raw image bodies only: the loss function.",
            }
        )
    if action == "explain":
        form["method"] = {"type": "string", "enum": list(dataplane.EXPLAIN_METHODS)}
        form["target"] = {"type": "string", "description": "'3', '3,1,4' or a JSON array"}
        form["steps"] = {"type": "integer", "minimum": 1, "maximum": dataplane.MAX_EXPLAIN_STEPS}
        query += [
            {
                "name": "method",
                "in": "query",
                "schema": {"type": "string", "enum": list(dataplane.EXPLAIN_METHODS)},
                "description": "Raw image bodies only: the explanation method.",
            },
            {
                "name": "target",
                "in": "query",
                "schema": {"type": "integer", "minimum": 0},
                "description": "Raw image bodies only: the class to explain (default: the predicted one).",
            },
            {
                "name": "steps",
                "in": "query",
                "schema": {"type": "integer", "minimum": 1, "maximum": dataplane.MAX_EXPLAIN_STEPS},
                "description": "Raw image bodies only: integrated gradients' steps.",
            },
        ]
    content: dict[str, Any] = {"multipart/form-data": {"schema": {"type": "object", "properties": form}}}
    for mimetype in sorted(IMAGE_MIMETYPES):
        content[mimetype] = {"schema": {"type": "string", "format": "binary"}}
    return {
        "method": "POST",
        "summary": summary,
        "tags": ("inference",),
        "request": request_schema,
        "request_content": content,
        "parameters": tuple(query),
        "response": response,
        "errors": ERRORS,
        "error": ErrorResponseSchema,
    }


# --- inference ----------------------------------------------------------------------------
@route(
    api,
    "/v1/models/<name>/predict",
    "/v1/models/<name>/versions/<version>/predict",
    "/predict",
    **inference(
        "predict",
        "Predict: per input the label, class name and class probabilities.",
        PredictRequestSchema,
        PredictResponseSchema,
    ),
)
def predict(name: str | None = None, version: str | None = None) -> Response:
    endpoint = lookup(name, version)
    return _predict_response(endpoint.model, _predict_batch(endpoint))


def _predict_batch(endpoint: Endpoint) -> NDArray[np.float32]:
    """A predict request's inputs, read and checked: the model's batch (N, D)."""
    payload = request_payload(request)
    x = plain_inputs(payload, endpoint.spec)
    if x is None:
        x = endpoint.schemas.predict.load(payload)["x"]
    return x


def _predict_response(model: Model, x: NDArray[np.float32]) -> Response:
    return json_response(
        {
            "model": model.name,
            "version": model.version,
            "predictions": _predictions(model, dataplane.infer(model, x)),
        }
    )


@route(
    api,
    "/v1/models/<name>/loss",
    "/v1/models/<name>/versions/<version>/loss",
    "/loss",
    **inference(
        "loss",
        "Mean loss over the batch, as TwoLayerNet.loss computes it.",
        LossRequestSchema,
        LossResponseSchema,
    ),
)
def loss(name: str | None = None, version: str | None = None) -> Response:
    endpoint = lookup(name, version)
    data = endpoint.schemas.loss.load(request_payload(request))
    model = endpoint.model
    value = model.net.loss(data["x"], data["labels"], loss_name=data["loss"])
    return json_response(
        {
            "model": model.name,
            "version": model.version,
            "loss_name": data["loss"],
            "loss": value,
            "count": len(data["x"]),
        }
    )


@route(
    api,
    "/v1/models/<name>/accuracy",
    "/v1/models/<name>/versions/<version>/accuracy",
    "/accuracy",
    **inference(
        "accuracy",
        "Accuracy, correct count and count, as TwoLayerNet.accuracy computes it.",
        AccuracyRequestSchema,
        AccuracyResponseSchema,
    ),
)
def accuracy(name: str | None = None, version: str | None = None) -> Response:
    endpoint = lookup(name, version)
    data = endpoint.schemas.accuracy.load(request_payload(request))
    model = endpoint.model
    value = model.net.accuracy(data["x"], data["labels"])
    count = len(data["x"])
    return json_response(
        {
            "model": model.name,
            "version": model.version,
            "accuracy": value,
            "correct": round(value * count),
            "count": count,
        }
    )


@route(
    api,
    "/v1/models/<name>/explain",
    "/v1/models/<name>/versions/<version>/explain",
    "/explain",
    **{
        **inference(
            "explain",
            "Why: per input, the attributions of its pixels to a class's probability (integrated "
            "gradients or the gradient, by the network's own backpropagation). With Accept: image/png "
            "and one input, a heatmap of them over the input.",
            ExplainRequestSchema,
            ExplainResponseSchema,
        ),
        "response_content": {
            PNG_MIMETYPE: {
                "schema": {"type": "string", "format": "binary"},
                "example": "(a 280x280 PNG: red raised the target's probability, blue lowered it)",
            }
        },
        "errors": {**ERRORS, "406": "Accept: image/png with more than one input"},
    },
)
def explain(name: str | None = None, version: str | None = None) -> Response:
    endpoint = lookup(name, version)
    data = endpoint.schemas.explain.load(request_payload(request))
    model = endpoint.model
    x = data["x"]
    want_png = _wants_png()
    if want_png and len(x) != 1:
        raise NotAcceptable(
            f"a heatmap shows one input, got {len(x)}: send one input, or Accept: application/json"
        )
    result = dataplane.explain(model, x, *data["options"])
    shape = model.image_size or model.input_shape
    if want_png:
        return _heatmap_response(model, result, x[0].reshape(shape), shape)
    body: dict[str, Any] = {"model": model.name, "version": model.version, "method": result.method}
    if result.steps is not None:
        body["steps"] = result.steps
    body["explanations"] = explanation_items(model, result, x if data["from_images"] else None)
    return json_response(body)


def _wants_png() -> bool:
    """Accept prefers image/png to JSON (a browser's ``*/*`` and no Accept at all mean JSON)."""
    accept = request.accept_mimetypes
    return accept.quality(PNG_MIMETYPE) > accept.quality(JSON_MIMETYPE) if accept else False


def _heatmap_response(
    model: Model, result: dataplane.Explanation, image: NDArray[np.floating], shape: tuple[int, ...]
) -> Response:
    if len(shape) != 2:
        raise NotAcceptable(
            f"model {model.name!r} takes inputs of shape {list(shape)}, not images: no heatmap"
        )
    response = Response(heatmap_png(result.attributions[0].reshape(shape), image), mimetype=PNG_MIMETYPE)
    headers = response.headers
    headers["X-Model"], headers["X-Model-Version"] = model.name, model.version
    headers["X-Label"] = str(int(result.inference.labels[0]))
    headers["X-Target"] = str(int(result.targets[0]))
    headers["X-Method"] = result.method
    if result.convergence_delta is not None:
        headers["X-Convergence-Delta"] = f"{float(result.convergence_delta[0]):.6g}"
    return response


def _predictions(model: Model, result: dataplane.Inference) -> list[dict[str, Any]]:
    """Rows stay numpy: orjson writes a float32 row in its shortest exact form, a third
    shorter than the float64 digits ``tolist()`` would give, and reading it back as float32
    gives the model's numbers exactly."""
    names = model.class_names
    return [
        {"label": label, "class_name": names[label], "probabilities": row}
        for label, row in zip(result.labels.tolist(), result.probabilities, strict=True)
    ]


# --- models -------------------------------------------------------------------------------
#: From the list of models to the operations that take a model's name.
_MODEL_LINKS = {
    operation: {
        "operationId": operation,
        "parameters": {"name": "$response.body#/models/0/name"},
        "description": f"{operation} with the first model listed",
    }
    for operation in ("predict", "loss", "accuracy", "explain", "model_info", "preprocess")
}


@route(
    api,
    "/v1/models",
    summary="All served models and which one is the default.",
    tags=("models",),
    response=ModelListResponseSchema,
    links=_MODEL_LINKS,
)
def list_models() -> Response:
    state = current()
    return json_response(
        {
            "default_model": state.default_name,
            "feedback": state.settings.feedback_dir is not None,
            "models": [
                {**endpoint.model.info, "versions": list(state.models[name])}
                for name, endpoint in state.serving().items()
            ],
        }
    )


class NoVerbConverter(BaseConverter):
    """A path segment that does not end in one of TF Serving's verbs (``mnist:predict``), so
    ``GET /v1/models/mnist:predict`` is that route's 405, not a lookup of a model named so."""

    regex = r"[^/]+(?<!:predict)(?<!:explain)"


@route(
    api,
    "/v1/models/<noverb:name>",
    "/v1/models/<name>/versions/<noverb:version>",
    summary="A model's metadata: input shape, classes, preprocessing, metrics, version (the newest, "
    "which serves by default), and its ready versions.",
    tags=("models",),
    response=ModelInfoSchema,
    errors={"404": ERRORS["404"]},
    error=ErrorResponseSchema,
)
def model_info(name: str, version: str | None = None) -> Response:
    """The model's metadata; ``versions`` lists its ready versions, oldest first."""
    model = lookup(name, version).model
    versions = current().versions(model.name)
    return json_response(
        {
            **model.info,
            "versions": versions,
            "model_version_status": [
                {"version": v, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
                for v in ([model.version] if version is not None else reversed(versions))
            ],
        }
    )


# --- health -------------------------------------------------------------------------------
@route(
    health,
    "/healthz",
    summary="Live: the process answers.",
    tags=("health",),
    access="open",
    response=StatusResponseSchema,
)
def healthz() -> Response:
    """Live: the process answers."""
    return json_response({"status": "ok"})


@route(
    health,
    "/readyz",
    summary="Ready: a valid default model is loaded.",
    tags=("health",),
    access="open",
    response=StatusResponseSchema,
    errors={"503": "Not ready: no valid default model"},
    error=ErrorResponseSchema,
)
def readyz() -> Response:
    """Ready: a valid default model is loaded (the app is not built otherwise, and a reload
    never drops it: this reads the state all the same)."""
    state = current()
    if not state.ready:
        raise NotReady(f"the default model {state.default_name!r} is not loaded")
    return json_response(
        {
            "status": "ready",
            "default_model": state.default_name,
            "models": sorted(state.models),
        }
    )


# --- documents ----------------------------------------------------------------------------
@document_only(docs, "/openapi.json")
def openapi() -> Response:
    return Response(current().openapi, mimetype=JSON_MIMETYPE)


@route(
    bench,
    "/_bench/noop",
    method="POST",
    summary="Benchmarks only (BENCH_NOOP=1): reads the body and answers a constant, the "
    "framework's floor for bench/serve_load.py.",
    tags=("bench",),
    request_content={"application/json": {"schema": {}}},
)
def bench_noop() -> Response:
    request.get_data(cache=False)  # read the body, as every real endpoint must
    return json_response({"ok": True})


#: The steps of a JSON predict, in order: ``POST /_bench/stages/STEP`` stops after STEP (and
#: answers a constant), so a benchmark sees what each one adds to the request's cost. ``parse``
#: is simdjson alone (the numbers of ``inputs`` into numpy, nothing checked): the floor of any
#: JSON reader built on it. Then ``checks`` (our reader and every check: the model's batch),
#: ``forward`` (the network), ``infer`` (labels, confidence and their metrics).
BENCH_STAGES = ("parse", "checks", "forward", "infer")


@route(
    bench,
    *(f"/_bench/stages/{step}" for step in BENCH_STAGES),
    method="POST",
    summary="Benchmarks only (BENCH_NOOP=1): a predict of the default model that stops after "
    "the step named (parse, checks, forward or infer) and answers a constant.",
    tags=("bench",),
    request_content={"application/json": {"schema": {}}},
)
def bench_stages() -> Response:
    step = request.path.rpartition("/")[2]
    if step == "parse":
        parse_floor(read_body(request))
        return json_response({"ok": True})
    endpoint = lookup(None, None)
    x = _predict_batch(endpoint)
    if step == "forward":
        endpoint.model.predict(x)
    elif step == "infer":
        dataplane.infer(endpoint.model, x)
    return json_response({"ok": True})


#: Swagger UI's page and assets, served from flask-swagger-ui's package (no CDN). The page itself
#: is ``templates/index.template.html`` (it overrides the package's), whose URLs are relative,
#: so it also works under a path prefix.
DOCS_URL = "/docs"


def register_views(app: Flask, settings: Settings) -> None:
    app.json = OrjsonProvider(app)
    app.url_map.converters["noverb"] = NoVerbConverter
    app.register_blueprint(
        get_swaggerui_blueprint(
            DOCS_URL,
            "../openapi.json",
            config={
                "app_name": "Digits prediction service - API",
                "persistAuthorization": True,  # the bearer token outlives a reload of the page
                "oauth2RedirectUrl": "oauth2-redirect.html",  # (relative, as every URL here)
            },
        )
    )
    app.register_blueprint(api)
    app.register_blueprint(health)
    app.register_blueprint(docs)
    if settings.bench_noop:
        app.register_blueprint(bench)
