"""Loading and hot reload: every worker picks up new, changed and removed model files without a
restart. The first load at start-up is a reload from an empty state (``ModelWatcher.load``).

``service.registry.scan`` looks at ``MODEL_DIR`` and reports what loaded, failed or went; the
watcher decides from that what serves and swaps it in. Three ways in (``ModelWatcher.reload``):

- **polling**: a daemon thread in each gunicorn worker (started after the fork, by the
  ``post_worker_init`` hook) checks ``MODEL_DIR`` every ``MODEL_POLL_SECONDS`` (default 2; 0
  turns it off);
- **``POST /v1/admin/reload``** (blueprint ``admin``): the worker that answers checks now and
  says what it did; the other workers follow at their next poll. With polling off it also sends
  SIGHUP to the gunicorn master, so every worker restarts on the new files (not while the
  default model has no valid file: a new worker could not serve it);
- **SIGHUP** to the gunicorn master: gunicorn starts new workers, which load ``MODEL_DIR`` anew
  (skipping invalid files: ``ModelWatcher.load(strict=False)``), and stops the old ones gracefully.

A check costs a ``stat`` per model file: only files whose (inode, size, mtime) changed are read
and validated with ``training.load_model``, in full, before anything is swapped. A file that
fails validation never replaces a serving model: the old one (if any) keeps serving, the failure
is logged and counted (``digits_model_load_failures_total``), and the file is not retried until
it changes again. The default model cannot disappear: if its files are all gone or invalid, the
loaded one keeps serving. Removing any other model's file (or a version directory) stops serving it.

The swap is one assignment of a new immutable ``service.state.ServiceState`` (models with
their endpoints, OpenAPI document) to ``app.extensions``; a request reads that reference once,
so it sees the old models or the new ones, never a mix.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import orjson
from flask import Blueprint, Flask, Response, current_app

from service.metrics import count_model_load
from service.openapi import build_openapi
from service.registry import (
    MODEL_SUFFIX,
    Loaded,
    Model,
    ModelLoadError,
    ModelSource,
    Signature,
    scan,
    signature,
)
from service.routes import route
from service.schemas import ErrorResponseSchema, ReloadReportSchema
from service.settings import Settings
from service.state import EXTENSION, Endpoint, ServiceState, state_of
from service.views import json_response
from training import ModelFormatError

log = logging.getLogger(__name__)

WATCHER = "digits_service.watcher"

admin = Blueprint("admin", __name__)


class ModelWatcher:
    """Loads one app's models from its ``MODEL_DIR`` and reloads them; one per app, so one per
    worker. The first load is a reload from an empty state (``create_app`` calls it)."""

    def __init__(self, app: Flask, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self._lock = threading.Lock()
        #: What serves from each file, with the file's signature when it was read.
        self._files: dict[Path, Loaded] = {}
        #: Files that failed validation, with the signature they failed at (not read again).
        self._failed: dict[Path, Signature | None] = {}
        #: What is wrong now with the directory or the default model, logged once until it changes.
        self._trouble: set[str] = set()
        self._thread: threading.Thread | None = None
        #: The gunicorn master to send SIGHUP to when polling is off (set by ``start_polling``).
        self.master_pid: int | None = None
        #: Whether the default model had a valid file at the last check (a worker started now
        #: could serve it), or only a copy in memory.
        self.default_on_disk = True

    def note_failure(self, source: ModelSource, exc: ModelFormatError) -> None:
        """Log and count a file that failed validation, once per version of the file."""
        self._failed[source.path] = signature(source.path)
        count_model_load(source.name, ok=False)
        log.error(
            "model file failed validation; not serving it",
            extra={
                "event": "model_load_failed",
                "model": source.name,
                "version": source.version,
                "path": str(source.path),
                "error": exc.problem,
            },
        )

    def load(self, *, strict: bool) -> None:
        """The first load, at start-up: a reload from an empty state that must end serving the
        default model. ``ModelLoadError`` (one line) if it cannot, or, with ``strict``, if any
        file is invalid; without ``strict`` an invalid file is logged, counted and skipped."""
        found = scan(self.settings.model_dir)
        if found.error is not None:
            raise found.error
        if not found.sources:
            raise ModelLoadError(f"MODEL_DIR {self.settings.model_dir}: no {MODEL_SUFFIX} model files in it")
        default = self.settings.default_model
        for source, exc in found.failed:
            if strict or (source.name == default and default not in found.versions()):
                raise ModelLoadError(str(exc))
        versions = found.versions()
        if default not in versions:
            raise ModelLoadError(
                f"DEFAULT_MODEL {default!r} is not in {self.settings.model_dir} "
                f"(found: {', '.join(sorted(versions)) or 'nothing valid'})"
            )
        for source, exc in found.failed:
            self.note_failure(source, exc)
        for model in found.loaded:
            count_model_load(model.name)
        self._files = found.files
        self._swap(versions)

    def reload(self) -> dict[str, Any]:
        """Check ``MODEL_DIR`` now; swap in the new state if anything changed. The report says
        what was loaded, what failed, what was removed, and what serves now. Never raises for
        what is on disk: a file that fails never replaces a serving model, and the default
        model keeps serving whatever happens to its files."""
        with self._lock:
            report: dict[str, Any] = {"changed": False, "loaded": [], "failed": [], "removed": []}
            found = scan(self.settings.model_dir, self._files, self._failed)
            if found.error is not None:  # the directory is gone, or a name is in two layouts
                if self._once(f"dir:{found.error}"):
                    log.error(
                        "model directory unusable; serving what is loaded",
                        extra={"event": "model_dir_failed", "error": str(found.error)},
                    )
                report["failed"].append({"error": str(found.error)})
                return self._finish(report)
            self._trouble = {t for t in self._trouble if not t.startswith("dir:")}
            for source, exc in found.failed:
                self.note_failure(source, exc)
                report["failed"].append({"model": source.name, "version": source.version, "error": str(exc)})
            for model in found.loaded:
                count_model_load(model.name)
                report["loaded"].append({"model": model.name, "version": model.version})
                log.info(
                    "model loaded",
                    extra={
                        "event": "model_loaded",
                        "model": model.name,
                        "version": model.version,
                        "path": str(model.file.path),
                    },
                )
            default = self.settings.default_model
            defaults = [source.path for source in found.sources if source.name == default]
            self.default_on_disk = any(p in found.files and p not in found.stale for p in defaults)
            files = found.files
            if not any(path in files for path in defaults):  # never stop serving the default model
                files = {**files, **{p: v for p, v in self._files.items() if v.model.name == default}}
                found.removed = [m for m in found.removed if m.name != default]
                if self._once("default"):
                    log.error(
                        "default model has no valid file; the loaded one keeps serving",
                        extra={"event": "default_model_kept", "model": default},
                    )
            else:
                self._trouble.discard("default")
            report["removed"] = [{"model": m.name, "version": m.version} for m in found.removed]
            self._files = files
            self._failed = {p: s for p, s in self._failed.items() if p.exists()}
            versions = _versions(files)
            if versions == _models(state_of(self.app)):
                return self._finish(report)
            self._swap(versions)
            report["changed"] = True
            log.info(
                "models reloaded",
                extra={
                    "event": "models_reloaded",
                    "serving": {name: list(v)[-1] for name, v in versions.items()},
                },
            )
            return self._finish(report)

    def _swap(self, versions: dict[str, dict[str, Model]]) -> None:
        """Build the state that serves ``versions`` and swap it in: one reference assignment.
        Endpoints of models already served are reused; the OpenAPI document is rebuilt only
        when the names or versions it lists change."""
        old = self.app.extensions.get(EXTENSION)
        reuse = {} if old is None else {id(e.model): e for v in old.models.values() for e in v.values()}
        models = {
            name: {
                version: reuse.get(id(model)) or Endpoint.for_model(model, self.settings)
                for version, model in by_version.items()
            }
            for name, by_version in sorted(versions.items())
        }
        state = ServiceState(settings=self.settings, default_name=self.settings.default_model, models=models)
        if old is not None and _names(old) == _names(state):
            openapi = old.openapi
        else:
            openapi = orjson.dumps(build_openapi(self.app, state))
        self.app.extensions[EXTENSION] = dataclasses.replace(state, openapi=openapi)

    def _once(self, trouble: str) -> bool:
        """True the first time ``trouble`` is seen since it last went away."""
        new = trouble not in self._trouble
        self._trouble.add(trouble)
        return new

    def _finish(self, report: dict[str, Any]) -> dict[str, Any]:
        state = state_of(self.app)
        report["serving"] = {
            name: {"version": list(by_version)[-1], "versions": list(by_version)}
            for name, by_version in state.models.items()
        }
        report["pid"] = os.getpid()
        return report

    def start(self, interval: float) -> None:
        """Poll every ``interval`` seconds in a daemon thread (call after forking)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self._poll, args=(interval,), daemon=True, name="model-poller")
        self._thread.start()

    def _poll(self, interval: float) -> None:
        stop = threading.Event()  # never set: the thread ends with the worker
        while not stop.wait(interval):
            try:
                self.reload()
            except Exception:  # a bug must not end the polling
                log.exception("model reload failed", extra={"event": "reload_error"})


def watcher(app: Flask) -> ModelWatcher:
    return app.extensions[WATCHER]  # type: ignore[no-any-return]


def start_polling(app: Any, master_pid: int | None = None) -> None:
    """gunicorn's ``post_worker_init``: poll in this worker, if ``MODEL_POLL_SECONDS`` > 0."""
    if not isinstance(app, Flask) or WATCHER not in app.extensions:
        log.warning("not the service's app: no model polling")
        return
    model_watcher = watcher(app)
    model_watcher.master_pid = master_pid
    interval = model_watcher.settings.model_poll_seconds
    if interval > 0:
        model_watcher.start(interval)


@route(
    admin,
    "/v1/admin/reload",
    method="POST",
    summary="Check MODEL_DIR now in the worker that answers (the others follow within "
    "MODEL_POLL_SECONDS): what was loaded, failed and removed, and what serves.",
    tags=("admin",),
    access="admin",
    response=ReloadReportSchema,
    errors={"403": "Admin routes are disabled: the server has no AUTH_TOKEN"},
    error=ErrorResponseSchema,
)
def reload_models() -> Response:
    """Check MODEL_DIR now in this worker (the others follow at their next poll)."""
    model_watcher = watcher(current_app)  # type: ignore[arg-type]
    report = model_watcher.reload()
    master = model_watcher.master_pid
    report["workers_restarting"] = False
    if (
        model_watcher.settings.model_poll_seconds <= 0
        and master is not None
        and report["changed"]
        and model_watcher.default_on_disk
    ):
        # no polling: restart every worker on the new files. Not while the default model has
        # no valid file: a new worker could not serve it, and gunicorn would stop.
        os.kill(master, signal.SIGHUP)
        report["workers_restarting"] = True
    return json_response(report)


def _versions(files: dict[Path, Loaded]) -> dict[str, dict[str, Model]]:
    """name -> version -> model, sorted by name, versions in the order of ``files``."""
    versions: dict[str, dict[str, Model]] = {}
    for loaded in files.values():
        versions.setdefault(loaded.model.name, {})[loaded.model.version] = loaded.model
    return dict(sorted(versions.items()))


def _models(state: ServiceState) -> dict[str, dict[str, Model]]:
    return {name: {v: e.model for v, e in by_version.items()} for name, by_version in state.models.items()}


def _names(state: ServiceState) -> dict[str, list[str]]:
    return {name: list(by_version) for name, by_version in state.models.items()}


def register_reload(app: Flask) -> None:
    """The admin route."""
    app.register_blueprint(admin)


def load_models(app: Flask, settings: Settings, *, strict: bool = True) -> None:
    """The app's first load of its models (``ModelWatcher.load``) and its watcher (not polling
    yet: see ``start_polling``); call once every route is registered."""
    model_watcher = app.extensions[WATCHER] = ModelWatcher(app, settings)
    model_watcher.load(strict=strict)
