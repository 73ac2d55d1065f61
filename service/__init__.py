"""The HTTP face of the digits models: ``create_app(settings=None)`` builds the Flask app.

Models are loaded and validated here, once per worker; a bad setting or model file raises a
``StartupError`` (one line) before the app serves anything.
"""

from __future__ import annotations

import orjson
from flask import Flask

from service.auth import register_auth
from service.cors import register_cors
from service.demo import demo
from service.errors import StartupError, register_error_handlers
from service.metrics import register_metrics
from service.openapi import build_openapi
from service.registry import load_registry
from service.reload import LoadFailure, register_reload
from service.settings import Settings
from service.v2 import register_v2
from service.views import EXTENSION, ServiceState, build_endpoints, register_views

__all__ = ["Settings", "StartupError", "create_app"]


def create_app(settings: Settings | None = None, *, strict: bool = True) -> Flask:
    """The app for ``settings`` (default: read from the environment).

    ``strict=False`` is for gunicorn workers (``service.wsgi``): an invalid file is logged,
    counted and skipped instead of stopping start-up (a model left with no valid file is not
    served); only the default model having no valid file still stops it. The master checks
    every file strictly before any worker starts, so this matters only when files change later,
    e.g. before a SIGHUP restarts the workers.
    """
    settings = settings if settings is not None else Settings.from_env()
    failures: list[LoadFailure] = []
    registry = load_registry(
        settings.model_dir,
        settings.default_model,
        on_failure=None if strict else lambda *failure: failures.append(failure),
    )
    endpoints, versions = build_endpoints(registry, settings)

    app = Flask(__name__)
    app.debug = False  # never from FLASK_DEBUG, which Flask reads from the environment by itself
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.extensions[EXTENSION] = ServiceState(
        settings=settings,
        registry=registry,
        endpoints=endpoints,
        openapi=orjson.dumps(build_openapi(registry)),
        versions=versions,
    )
    register_metrics(app)  # its request hooks run first, so they time and count everything
    register_error_handlers(app)
    register_views(app, settings)
    app.register_blueprint(demo)
    register_reload(app, failures)
    register_v2(app)
    register_auth(app, settings.token)
    register_cors(app, settings.cors_origins)
    return app
