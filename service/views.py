"""Blueprints: inference, model metadata, health, and the API documents.

Views stay thin: load the request with the model's schema, call the network, build the body.
Response bodies are plain dicts written with orjson (``PredictResponseSchema`` and friends
document them and the tests check them); dumping through marshmallow would cost more than
the forward pass on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import orjson
from flask import Blueprint, Flask, Response, current_app, request
from flask.json.provider import JSONProvider
from numpy.typing import NDArray

from service.inputs import JSON_MIMETYPE, request_payload
from service.registry import Model, Registry
from service.schemas import RequestSchemas
from service.settings import Settings

EXTENSION = "digits_service"

api = Blueprint("api", __name__)
health = Blueprint("health", __name__)
docs = Blueprint("docs", __name__)
#: Registered only with ``BENCH_NOOP=1``: the framework floor for bench/serve_load.sh.
bench = Blueprint("bench", __name__)


@dataclass(frozen=True)
class Endpoint:
    """One served model with its request schemas."""

    model: Model
    schemas: RequestSchemas


@dataclass(frozen=True)
class ServiceState:
    """What the views read, built once by ``create_app`` and kept in ``app.extensions``."""

    settings: Settings
    registry: Registry
    endpoints: dict[str, Endpoint]
    openapi: bytes


class OrjsonProvider(JSONProvider):
    """Flask's JSON (``jsonify``, ``request.get_json``) through orjson."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return orjson.loads(s)


def json_response(body: Any, status: int = 200) -> Response:
    """``body`` as JSON; numpy arrays in it are written directly, float32 in its shortest form."""
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status=status,
                    mimetype=JSON_MIMETYPE)


def _state() -> ServiceState:
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]


def _endpoint(name: str | None) -> Endpoint:
    state = _state()
    if name is None:
        return state.endpoints[state.registry.default_name]
    endpoint = state.endpoints.get(name)
    if endpoint is None:
        state.registry.get(name)  # raises ModelNotFound with the list of models
    return endpoint  # type: ignore[return-value]


# --- inference ----------------------------------------------------------------------------
@api.post("/predict")
@api.post("/v1/models/<name>/predict")
def predict(name: str | None = None) -> Response:
    endpoint = _endpoint(name)
    data = endpoint.schemas.predict.load(request_payload(request))
    model = endpoint.model
    probabilities = model.predict(data["x"])
    return json_response({
        "model": model.name,
        "version": model.version,
        "predictions": _predictions(model, probabilities),
    })


@api.post("/loss")
@api.post("/v1/models/<name>/loss")
def loss(name: str | None = None) -> Response:
    endpoint = _endpoint(name)
    data = endpoint.schemas.loss.load(request_payload(request))
    model = endpoint.model
    value = model.net.loss(data["x"], data["labels"], loss_name=data["loss"])
    return json_response({
        "model": model.name,
        "version": model.version,
        "loss_name": data["loss"],
        "loss": value,
        "count": len(data["x"]),
    })


@api.post("/accuracy")
@api.post("/v1/models/<name>/accuracy")
def accuracy(name: str | None = None) -> Response:
    endpoint = _endpoint(name)
    data = endpoint.schemas.accuracy.load(request_payload(request))
    model = endpoint.model
    value = model.net.accuracy(data["x"], data["labels"])
    count = len(data["x"])
    return json_response({
        "model": model.name,
        "version": model.version,
        "accuracy": value,
        "correct": round(value * count),
        "count": count,
    })


def _predictions(model: Model, probabilities: NDArray[np.floating]) -> list[dict[str, Any]]:
    """Rows stay numpy: orjson writes a float32 row in its shortest exact form, a third
    shorter than the float64 digits ``tolist()`` would give, and reading it back as float32
    gives the model's numbers exactly."""
    labels = probabilities.argmax(axis=1).tolist()
    names = model.class_names
    return [
        {"label": label, "class_name": names[label], "probabilities": row}
        for label, row in zip(labels, probabilities, strict=True)
    ]


# --- models -------------------------------------------------------------------------------
@api.get("/v1/models")
def list_models() -> Response:
    state = _state()
    return json_response({
        "default_model": state.registry.default_name,
        "models": [endpoint.model.info for endpoint in state.endpoints.values()],
    })


@api.get("/v1/models/<name>")
def model_info(name: str) -> Response:
    return json_response(_endpoint(name).model.info)


# --- health -------------------------------------------------------------------------------
@health.get("/healthz")
def healthz() -> Response:
    """Live: the process answers."""
    return json_response({"status": "ok"})


@health.get("/readyz")
def readyz() -> Response:
    """Ready: the default model is loaded and validated (the app is not built otherwise)."""
    registry = _state().registry
    return json_response({
        "status": "ready",
        "default_model": registry.default_name,
        "models": sorted(registry.models),
    })


# --- documents ----------------------------------------------------------------------------
@docs.get("/openapi.json")
def openapi() -> Response:
    return Response(_state().openapi, mimetype=JSON_MIMETYPE)


@docs.get("/docs")
def docs_page() -> Response:
    html = resources.files("service").joinpath("static/docs.html").read_bytes()
    return Response(html, mimetype="text/html")


@bench.post("/_bench/noop")
def bench_noop() -> Response:
    request.get_data(cache=False)  # read the body, as every real endpoint must
    return json_response({"ok": True})


def register_views(app: Flask, settings: Settings) -> None:
    app.json = OrjsonProvider(app)
    app.register_blueprint(api)
    app.register_blueprint(health)
    app.register_blueprint(docs)
    if settings.bench_noop:
        app.register_blueprint(bench)
