"""Blueprints: inference, model metadata, health, and the API documents.

Views stay thin: load the request with the model's schema, call the network, build the body.
Response bodies are plain dicts written with orjson (``PredictResponseSchema`` and friends
document them and the tests check them); dumping through marshmallow would cost more than
the forward pass on the hot path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from importlib import resources
from typing import Any

import orjson
from flask import Blueprint, Flask, Response, current_app, request
from flask.json.provider import JSONProvider

from service import dataplane
from service.inputs import JSON_MIMETYPE, request_payload
from service.metrics import MODEL
from service.registry import Model, Registry
from service.schemas import InputSpec, RequestSchemas
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

    @classmethod
    def for_model(cls, model: Model, settings: Settings) -> Endpoint:
        spec = InputSpec(
            input_shape=model.input_shape,
            image_size=model.image_size,
            image_style=model.image_style,
            num_classes=model.num_classes,
            max_batch_size=settings.max_batch_size,
            max_image_pixels=settings.max_image_pixels,
        )
        return cls(model=model, schemas=RequestSchemas.for_spec(spec))


@dataclass(frozen=True)
class ServiceState:
    """What the views read, kept in ``app.extensions``: built by ``create_app``, replaced whole
    (one assignment) by ``service.reload`` when the models change. A request reads it once."""

    settings: Settings
    registry: Registry
    #: name -> the endpoint of the version that serves by default
    endpoints: dict[str, Endpoint]
    openapi: bytes
    #: name -> version -> endpoint, every loaded version (built from ``endpoints`` if empty)
    versions: Mapping[str, Mapping[str, Endpoint]] = dataclass_field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.versions:
            object.__setattr__(
                self,
                "versions",
                {name: {endpoint.model.version: endpoint} for name, endpoint in self.endpoints.items()},
            )


def build_endpoints(
    registry: Registry,
    settings: Settings,
    previous: ServiceState | None = None,
) -> tuple[dict[str, Endpoint], dict[str, dict[str, Endpoint]]]:
    """``endpoints`` and ``versions`` for a ``ServiceState`` of ``registry``; endpoints of
    models that ``previous`` already serves (the same ``Model`` object) are reused."""
    reuse: dict[int, Endpoint] = {}
    if previous is not None:
        reuse = {id(e.model): e for by_version in previous.versions.values() for e in by_version.values()}
    versions = {
        name: {
            version: reuse.get(id(model)) or Endpoint.for_model(model, settings)
            for version, model in by_version.items()
        }
        for name, by_version in registry.all_versions.items()
    }
    endpoints = {name: versions[name][model.version] for name, model in registry.models.items()}
    return endpoints, versions


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


def _state() -> ServiceState:
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]


def lookup(name: str | None, version: str | None = None) -> Endpoint:
    """The endpoint serving model ``name`` (None: the default model) at ``version`` (None: its
    newest). Unknown model or version: ``ModelNotFound`` / ``VersionNotFound`` (404, with the
    available ones in ``details``). Every route that serves a model finds it here, which also
    names the model and version for the request's metrics and access log line."""
    return _lookup(_state(), name, version)


def _lookup(state: ServiceState, name: str | None, version: str | None) -> Endpoint:
    if name is None:
        name = state.registry.default_name
    by_version = state.versions.get(name)
    endpoint = None
    if by_version is not None:
        endpoint = state.endpoints[name] if version is None else by_version.get(version)
    if endpoint is None:
        state.registry.get(name, version)  # raises the 404 with what is available
    request.environ[MODEL] = endpoint.model  # type: ignore[union-attr]
    return endpoint  # type: ignore[return-value]


def versions(name: str) -> list[str]:
    """The ready versions of model ``name``, oldest first (the last serves by default)."""
    return _state().registry.versions(name)


# --- inference ----------------------------------------------------------------------------
@api.post("/predict")
@api.post("/v1/models/<name>/predict")
@api.post("/v1/models/<name>/versions/<version>/predict")
def predict(name: str | None = None, version: str | None = None) -> Response:
    endpoint = lookup(name, version)
    data = endpoint.schemas.predict.load(request_payload(request))
    model = endpoint.model
    return json_response(
        {
            "model": model.name,
            "version": model.version,
            "predictions": _predictions(model, dataplane.infer(model, data["x"])),
        }
    )


@api.post("/loss")
@api.post("/v1/models/<name>/loss")
@api.post("/v1/models/<name>/versions/<version>/loss")
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


@api.post("/accuracy")
@api.post("/v1/models/<name>/accuracy")
@api.post("/v1/models/<name>/versions/<version>/accuracy")
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
@api.get("/v1/models")
def list_models() -> Response:
    state = _state()
    return json_response(
        {
            "default_model": state.registry.default_name,
            "models": [
                {**endpoint.model.info, "versions": state.registry.versions(name)}
                for name, endpoint in state.endpoints.items()
            ],
        }
    )


@api.get("/v1/models/<name>")
@api.get("/v1/models/<name>/versions/<version>")
def model_info(name: str, version: str | None = None) -> Response:
    """The model's metadata; ``versions`` lists its ready versions, oldest first."""
    state = _state()
    model = _lookup(state, name, version).model
    return json_response({**model.info, "versions": state.registry.versions(model.name)})


# --- health -------------------------------------------------------------------------------
@health.get("/healthz")
def healthz() -> Response:
    """Live: the process answers."""
    return json_response({"status": "ok"})


@health.get("/readyz")
def readyz() -> Response:
    """Ready: the default model is loaded and validated (the app is not built otherwise)."""
    registry = _state().registry
    return json_response(
        {
            "status": "ready",
            "default_model": registry.default_name,
            "models": sorted(registry.models),
        }
    )


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
