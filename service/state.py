"""What a worker serves: one immutable ``ServiceState``, and ``lookup``, which every route uses.

The state is one map, model name -> version -> ``Endpoint`` (the loaded model with the request
schemas and input spec built for it), oldest version first; the newest serves by default. It is
built by ``service.reload.ModelWatcher`` (the first load too: a reload from an empty state) and
replaced whole, in one assignment to ``app.extensions``; a request reads that reference once, so
it sees the old models or the new ones, never a mix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from flask import Flask, current_app, request

from service.dataplane import InputSpec
from service.errors import ModelNotFound, VersionNotFound
from service.metrics import MODEL
from service.registry import Model
from service.schemas import RequestSchemas
from service.settings import Settings

EXTENSION = "digits_service"


@dataclass(frozen=True)
class Endpoint:
    """One loaded version of a model, with what its requests are checked against."""

    model: Model
    spec: InputSpec
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
        return cls(model=model, spec=spec, schemas=RequestSchemas.for_spec(spec))


@dataclass(frozen=True)
class ServiceState:
    """Everything a request reads: never changed once built (a reload builds a new one)."""

    settings: Settings
    default_name: str
    #: name -> version -> endpoint, every loaded version, oldest first (the last serves by default)
    models: Mapping[str, dict[str, Endpoint]]
    #: The OpenAPI document (its enums name the models and versions served), as JSON.
    openapi: bytes = b"{}"

    @property
    def ready(self) -> bool:
        """A valid default model is loaded (the short routes and /readyz need it)."""
        return self.default_name in self.models

    def serving(self) -> dict[str, Endpoint]:
        """name -> the endpoint of the version that serves by default (the newest)."""
        return {name: _newest(by_version) for name, by_version in self.models.items()}

    def lookup(self, name: str | None, version: str | None = None) -> Endpoint:
        """The endpoint serving ``name`` (None: the default model) at ``version`` (None: the
        newest). ``ModelNotFound`` / ``VersionNotFound`` (404) name what is available."""
        if name is None:
            name = self.default_name
        by_version = self.models.get(name)
        if by_version is None:
            raise ModelNotFound(f"no model named {name!r}", {"available": sorted(self.models)})
        if version is None:
            return _newest(by_version)
        endpoint = by_version.get(version)
        if endpoint is None:
            raise VersionNotFound(
                f"model {name!r} has no version {version!r}", {"available": list(by_version)}
            )
        return endpoint

    def versions(self, name: str) -> list[str]:
        """The ready versions of ``name``, oldest first; ``ModelNotFound`` if there is none."""
        return list(self.models[self.lookup(name).model.name])


def _newest(by_version: dict[str, Endpoint]) -> Endpoint:
    return next(reversed(by_version.values()))


def state_of(app: Flask) -> ServiceState:
    """The state ``app`` serves now."""
    return app.extensions[EXTENSION]


def current() -> ServiceState:
    """The state of the app serving this request."""
    return state_of(current_app)


def lookup(name: str | None, version: str | None = None) -> Endpoint:
    """``ServiceState.lookup`` on the current state; every route that serves a model finds it
    here, which also names the model for the request's metrics and access log line."""
    # (the objects behind Flask's proxies, read once: each read through a proxy costs ~1 µs)
    endpoint = state_of(current_app._get_current_object()).lookup(name, version)  # type: ignore[attr-defined]
    request._get_current_object().environ[MODEL] = endpoint.model  # type: ignore[attr-defined]
    return endpoint
