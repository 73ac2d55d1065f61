"""Structured logs: one JSON object per line, each with the request id of the request it is about.

``gunicorn.conf.py`` names ``GunicornLogger`` as gunicorn's ``logger_class``: gunicorn's error log
(start-up, workers) and the app's own loggers (``service.*``: unhandled errors, model reloads)
become JSON lines on stderr, and the access log (when ``ACCESS_LOG=1``) JSON lines on stdout::

    {"time": "2025-01-01T12:00:00.123+00:00", "level": "info", "logger": "access",
     "request_id": "3f2a...", "method": "POST", "path": "/predict", "status": 200,
     "duration_ms": 0.84, "model": "mnist", "version": "3", ...}
"""

from __future__ import annotations

import logging
import os
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson
from flask import has_request_context, request
from gunicorn.glogging import Logger

from service.metrics import MODEL, REQUEST_ID

#: Attributes every LogRecord has; anything else on a record came from ``extra=`` and is logged.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


#: The request id of the gRPC call this thread is answering (Flask's request context is HTTP's).
RPC_REQUEST_ID: ContextVar[str | None] = ContextVar("rpc_request_id", default=None)


def _now(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")


def dumps(line: dict[str, Any]) -> str:
    return orjson.dumps(line, default=str).decode()


def access_line(
    request_id: str | None, path: str, status: Any, seconds: float, model: str | None, version: str | None
) -> dict[str, Any]:
    """A gRPC call's access log line: the fields of HTTP's (``GunicornLogger.access``) that a
    call has, with the gRPC status code's name as ``status``."""
    return {
        "time": _now(datetime.now().timestamp()),
        "level": "info",
        "logger": "access",
        "pid": os.getpid(),
        "request_id": request_id,
        "path": path,
        "status": status,
        "duration_ms": round(seconds * 1000, 3),
        "model": model,
        "version": version,
    }


class JsonFormatter(logging.Formatter):
    """A log record as one JSON line: time, level, logger, pid, message, request id (inside a
    request), the record's ``extra`` fields and, for exceptions, the traceback as one string."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _now(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        if has_request_context():
            line["request_id"] = request.environ.get(REQUEST_ID)
        elif (rpc_request_id := RPC_REQUEST_ID.get()) is not None:
            line["request_id"] = rpc_request_id
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return dumps(line)


class GunicornLogger(Logger):
    """gunicorn's logger with JSON lines for the error log, the app's logs and the access log."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        handler = self._get_gunicorn_handler(self.error_log)
        if handler is not None:
            handler.setFormatter(JsonFormatter())
            app_log = logging.getLogger("service")
            app_log.handlers = [handler]
            app_log.setLevel(self.loglevel)
            app_log.propagate = False

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if not self.cfg.accesslog:
            return
        status = resp.status
        model = environ.get(MODEL)
        line = {
            "time": _now(datetime.now().timestamp()),
            "level": "info",
            "logger": "access",
            "pid": os.getpid(),
            "request_id": environ.get(REQUEST_ID),
            "remote_addr": environ.get("REMOTE_ADDR"),
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),
            "query": environ.get("QUERY_STRING") or None,
            "status": int(status.split(None, 1)[0]) if isinstance(status, str) else status,
            "duration_ms": round(request_time.total_seconds() * 1000, 3),
            "bytes": getattr(resp, "sent", None),
            "user_agent": environ.get("HTTP_USER_AGENT"),
            "model": model.name if model is not None else None,
            "version": model.version if model is not None else None,
        }
        try:
            self.access_log.info(dumps(line))
        except Exception:
            self.exception("could not write the access log")
