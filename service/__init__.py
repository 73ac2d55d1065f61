"""The HTTP face of the digits models: ``create_app(settings=None)`` builds the Flask app.

Models are loaded and validated here, once per worker; a bad setting or model file raises a
``StartupError`` (one line) before the app serves anything.
"""

from __future__ import annotations

from flask import Flask

from service.auth import register_auth
from service.cors import register_cors
from service.demo import demo
from service.errors import StartupError, register_error_handlers
from service.feedback import register_feedback
from service.metrics import register_metrics
from service.reload import load_models, register_reload
from service.settings import Settings
from service.tfserving import register_tfserving
from service.v2 import register_v2
from service.views import register_views

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
    app = Flask(__name__)
    app.debug = False  # never from FLASK_DEBUG, which Flask reads from the environment by itself
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    register_metrics(app)  # its request hooks run first, so they time and count everything
    register_error_handlers(app)
    register_views(app, settings)
    app.register_blueprint(demo)
    register_feedback(app, settings)
    register_reload(app)
    register_v2(app)
    register_tfserving(app)
    register_auth(app, settings.token)
    register_cors(app, settings.cors_origins)
    load_models(app, settings, strict=strict)  # the routes are known: the OpenAPI document too
    return app
