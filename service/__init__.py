"""The HTTP face of the digits models: ``create_app(settings=None)`` builds the Flask app.

Models are loaded and validated here, once per worker; a bad setting or model file raises a
``StartupError`` (one line) before the app serves anything.
"""

from __future__ import annotations

import orjson
from flask import Flask

from service.demo import demo
from service.errors import StartupError, register_error_handlers
from service.openapi import build_openapi
from service.registry import load_registry
from service.settings import Settings
from service.views import EXTENSION, ServiceState, build_endpoints, register_views

__all__ = ["Settings", "StartupError", "create_app"]


def create_app(settings: Settings | None = None) -> Flask:
    """The app for ``settings`` (default: read from the environment)."""
    settings = settings if settings is not None else Settings.from_env()
    registry = load_registry(settings.model_dir, settings.default_model)
    endpoints, versions = build_endpoints(registry, settings)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.extensions[EXTENSION] = ServiceState(
        settings=settings,
        registry=registry,
        endpoints=endpoints,
        openapi=orjson.dumps(build_openapi(registry)),
        versions=versions,
    )
    register_error_handlers(app)
    register_views(app, settings)
    app.register_blueprint(demo)
    return app
