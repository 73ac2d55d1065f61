"""Hot reload: every worker picks up new, changed and removed model files without a restart.

Three ways in, one mechanism (``ModelWatcher.reload``):

- **polling**: a daemon thread in each gunicorn worker (started after the fork, by the
  ``post_worker_init`` hook) checks ``MODEL_DIR`` every ``MODEL_POLL_SECONDS`` (default 2; 0
  turns it off);
- **``POST /v1/admin/reload``** (blueprint ``admin``): the worker that answers checks now and
  says what it did; the other workers follow at their next poll. With polling off it also sends
  SIGHUP to the gunicorn master, so every worker restarts on the new files (not while the
  default model has no valid file: a new worker could not serve it);
- **SIGHUP** to the gunicorn master: gunicorn starts new workers, which load ``MODEL_DIR`` anew
  (skipping invalid files: ``service.registry.load_registry``), and stops the old ones gracefully.

A check costs a ``stat`` per model file: only files whose (inode, size, mtime) changed are read
and validated with ``training.load_model``, in full, before anything is swapped. A file that
fails validation never replaces a serving model: the old one (if any) keeps serving, the failure
is logged and counted (``digits_model_load_failures_total``), and the file is not retried until
it changes again. The default model cannot disappear: if its files are all gone or invalid, the
loaded one keeps serving. Removing any other model's file (or a version directory) stops serving it.

The swap is one assignment of a new immutable ``ServiceState`` (registry, endpoints, OpenAPI
document) to ``app.extensions``; a request reads that reference once, so it sees the old models
or the new ones, never a mix.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from flask import Blueprint, Flask, Response, current_app

from service.metrics import count_model_load
from service.openapi import build_openapi
from service.registry import (
    Model,
    ModelLoadError,
    ModelSource,
    Registry,
    find_model_files,
    load_source,
)
from service.views import EXTENSION, ServiceState, build_endpoints, json_response
from training import ModelFormatError

log = logging.getLogger(__name__)

WATCHER = "digits_service.watcher"
#: (inode, size, mtime in ns): a file whose triple is unchanged is not read again.
Signature = tuple[int, int, int]
#: A file that failed validation at start-up, and why (``create_app(strict=False)``).
LoadFailure = tuple[ModelSource, ModelFormatError]

admin = Blueprint("admin", __name__)


def _signature(path: Path) -> Signature | None:
    try:
        st = path.stat()
    except OSError:  # removed between listing and stat
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class ModelWatcher:
    """Reloads one app's models from its ``MODEL_DIR``; one per app, so one per worker."""

    def __init__(self, app: Flask, failures: Sequence[LoadFailure] = ()) -> None:
        self.app = app
        state: ServiceState = app.extensions[EXTENSION]
        self.settings = state.settings
        self._lock = threading.Lock()
        #: Files of the serving models, and of files that failed, with the signature seen then.
        self._loaded: dict[Path, Signature | None] = {}
        self._failed: dict[Path, Signature | None] = {}
        for by_version in state.registry.all_versions.values():
            for model in by_version.values():
                # the file may have changed since it was read: at worst it is read once more
                self._loaded[model.file.path] = _signature(model.file.path)
                count_model_load(model.name)
        for source, exc in failures:
            self.note_failure(source, exc)
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
        self._failed[source.path] = _signature(source.path)
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

    def reload(self) -> dict[str, Any]:
        """Check ``MODEL_DIR`` now; swap in the new state if anything changed. The report says
        what was loaded, what failed, what was removed, and what serves now."""
        with self._lock:
            state: ServiceState = self.app.extensions[EXTENSION]
            report: dict[str, Any] = {"changed": False, "loaded": [], "failed": [], "removed": []}
            try:
                sources = find_model_files(self.settings.model_dir)
            except ModelLoadError as exc:  # the directory is gone, or a name is in two layouts
                if self._once(f"dir:{exc}"):
                    log.error(
                        "model directory unusable; serving what is loaded",
                        extra={"event": "model_dir_failed", "error": str(exc)},
                    )
                report["failed"].append({"error": str(exc)})
                return self._finish(report, state)
            known = {
                model.file.path: model
                for by_version in state.registry.all_versions.values()
                for model in by_version.values()
            }
            versions: dict[str, dict[str, Model]] = {}
            loaded: dict[Path, Signature | None] = {}
            for source in sources:
                model, signature = self._load(source, known.get(source.path), report)
                if model is not None:
                    versions.setdefault(source.name, {})[model.version] = model
                    loaded[source.path] = signature
            default = state.registry.default_name
            # a file is valid on disk if what loaded from it is what is there now
            self.default_on_disk = any(
                source.name == default
                and loaded.get(source.path) is not None
                and loaded[source.path] == _signature(source.path)
                for source in sources
            )
            if default not in versions:  # never stop serving the default model
                versions[default] = dict(state.registry.all_versions[default])
                loaded.update(
                    (m.file.path, self._loaded.get(m.file.path)) for m in versions[default].values()
                )
                if self._once("default"):
                    log.error(
                        "default model has no valid file; the loaded one keeps serving",
                        extra={"event": "default_model_kept", "model": default},
                    )
            else:
                self._trouble.discard("default")
            self._trouble = {t for t in self._trouble if not t.startswith("dir:")}
            for path, model in known.items():
                if path not in loaded:
                    report["removed"].append({"model": model.name, "version": model.version})
            self._loaded = loaded
            self._failed = {p: s for p, s in self._failed.items() if p.exists()}
            if self._same(state.registry, versions):
                return self._finish(report, state)
            registry = Registry.from_versions(versions, default, self.settings.model_dir)
            endpoints, by_version = build_endpoints(registry, self.settings, previous=state)
            openapi = state.openapi
            if sorted(registry.models) != sorted(state.registry.models):
                openapi = orjson.dumps(build_openapi(registry))
            new_state = dataclasses.replace(
                state, registry=registry, endpoints=endpoints, versions=by_version, openapi=openapi
            )
            self.app.extensions[EXTENSION] = new_state  # the swap: one reference assignment
            report["changed"] = True
            log.info(
                "models reloaded",
                extra={
                    "event": "models_reloaded",
                    "serving": {name: m.version for name, m in registry.models.items()},
                },
            )
            return self._finish(report, new_state)

    def _load(
        self, source: ModelSource, serving: Model | None, report: dict[str, Any]
    ) -> tuple[Model | None, Signature | None]:
        """The model for ``source`` and the file signature it was read at: the serving one if
        its file is unchanged or the new file is invalid; the new one if it validates; None if
        the file never validated."""
        signature = _signature(source.path)
        kept = serving, self._loaded.get(source.path)
        if signature is None:
            return None, None
        if serving is not None and self._loaded.get(source.path) == signature:
            return kept
        if self._failed.get(source.path) == signature:  # already reported
            return kept
        try:
            model = load_source(source)
        except ModelFormatError as exc:
            self.note_failure(source, exc)
            report["failed"].append({"model": source.name, "version": source.version, "error": str(exc)})
            return kept
        self._failed.pop(source.path, None)
        count_model_load(source.name)
        report["loaded"].append({"model": model.name, "version": model.version})
        log.info(
            "model loaded",
            extra={
                "event": "model_loaded",
                "model": model.name,
                "version": model.version,
                "path": str(source.path),
            },
        )
        return model, signature

    def _once(self, trouble: str) -> bool:
        """True the first time ``trouble`` is seen since it last went away."""
        new = trouble not in self._trouble
        self._trouble.add(trouble)
        return new

    @staticmethod
    def _same(registry: Registry, versions: dict[str, dict[str, Model]]) -> bool:
        old = registry.all_versions
        return old.keys() == versions.keys() and all(
            list(old[name].items()) == list(versions[name].items()) for name in versions
        )

    @staticmethod
    def _finish(report: dict[str, Any], state: ServiceState) -> dict[str, Any]:
        report["serving"] = {
            name: {"version": model.version, "versions": state.registry.versions(name)}
            for name, model in state.registry.models.items()
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


@admin.post("/v1/admin/reload")
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


def register_reload(app: Flask, failures: Sequence[LoadFailure] = ()) -> None:
    """The app's ``ModelWatcher`` (not polling yet: see ``start_polling``) and the admin route."""
    app.extensions[WATCHER] = ModelWatcher(app, failures)
    app.register_blueprint(admin)
