"""Per-request bookkeeping and Prometheus metrics: request ids, timing, counters, ``GET /metrics``.

Everything a request costs in bookkeeping happens in ``_begin`` and ``_finish`` (Flask's
before/after request hooks) and stays small: the hot path is ~125 µs a request on the no-op floor.

- **Request id**: ``X-Request-ID`` from the client if it is a sane token (at most 128 printable
  ASCII characters, no spaces), else 128 random bits as 32 hex digits (the form of
  ``uuid4().hex``: ``random.getrandbits`` costs a twentieth of ``uuid4`` here, is reseeded in
  each forked worker, and an id must be unique, not secret). Echoed on every response, errors
  included, and kept in the WSGI environ (``REQUEST_ID``) for the access log and log lines.
- **Metrics**, correct across gunicorn workers with prometheus_client's multiprocess mode when
  ``PROMETHEUS_MULTIPROC_DIR`` is set (``gunicorn.conf.py`` sets it), in-process otherwise.
  Labels stay few: ``endpoint`` is the route rule (``/v1/models/<name>/predict``, never the raw
  path; ``unmatched`` when no route matched), ``model`` is a registry name (or ``""`` when the
  request resolved no model, unknown names included), ``status`` the HTTP status.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from flask import Blueprint, Flask, Response, request
from numpy.typing import NDArray
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

#: WSGI environ keys this module and the views fill in (gunicorn's access log reads them).
REQUEST_ID = "service.request_id"
MODEL = "service.model"  # the registry ``Model`` that answered, set by ``views.lookup``
_STARTED = "service.started"
REQUEST_ID_HEADER = "X-Request-ID"
MAX_REQUEST_ID_LENGTH = 128
#: Seconds; a forward pass takes well under a millisecond, an image upload a few.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
UNMATCHED = "unmatched"
NO_MODEL = ""

REQUESTS = Counter("digits_http_requests", "HTTP requests answered, by route, model and status",
                   ("endpoint", "model", "status"))
LATENCY = Histogram("digits_http_request_duration_seconds",
                    "Time from the request's arrival in the app to its response, by route and model",
                    ("endpoint", "model"), buckets=LATENCY_BUCKETS)
IN_FLIGHT = Gauge("digits_http_requests_in_flight", "Requests being handled now",
                  multiprocess_mode="livesum")
PREDICTIONS = Counter("digits_predictions", "Predicted labels, by model and class",
                      ("model", "class_name"))
MODEL_LOADS = Counter("digits_model_loads", "Model files loaded and validated, by model",
                      ("model",))
MODEL_LOAD_FAILURES = Counter("digits_model_load_failures",
                              "Model files that failed validation (and did not replace a serving "
                              "model), by model", ("model",))

metrics = Blueprint("metrics", __name__)
#: Labelled children, cached: ``Counter.labels`` validates and locks on every call.
_children: dict[tuple[Any, ...], Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    key = (metric, *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


def request_id_from(value: str | None) -> str:
    """The client's id if it is a sane token, else a fresh one."""
    if (value and len(value) <= MAX_REQUEST_ID_LENGTH and value.isascii() and value.isprintable()
            and " " not in value):
        return value
    return f"{random.getrandbits(128):032x}"


def _begin() -> None:
    environ = request.environ
    environ[REQUEST_ID] = request_id_from(environ.get("HTTP_X_REQUEST_ID"))
    environ[_STARTED] = time.perf_counter()
    IN_FLIGHT.inc()


def _finish(response: Response) -> Response:
    environ = request.environ
    started = environ.pop(_STARTED, None)
    request_id = environ.get(REQUEST_ID)
    if request_id is None:  # an earlier before_request hook answered before ours ran
        request_id = environ[REQUEST_ID] = request_id_from(environ.get("HTTP_X_REQUEST_ID"))
    response.headers[REQUEST_ID_HEADER] = request_id
    rule = request.url_rule
    endpoint = rule.rule if rule is not None else UNMATCHED
    model = environ.get(MODEL)
    model_name = model.name if model is not None else NO_MODEL
    _child(REQUESTS, endpoint, model_name, str(response.status_code)).inc()
    if started is not None:
        IN_FLIGHT.dec()
        _child(LATENCY, endpoint, model_name).observe(time.perf_counter() - started)
    return response


def _teardown(exc: BaseException | None) -> None:
    """Only if ``_finish`` never ran (an exception past every handler): the gauge must not leak."""
    if request.environ.pop(_STARTED, None) is not None:
        IN_FLIGHT.dec()


def count_predictions(model_name: str, class_names: Sequence[str], labels: NDArray[np.intp]) -> None:
    """Add a batch's predicted labels (N,) to the per-class counter."""
    if len(labels) == 1:
        _child(PREDICTIONS, model_name, class_names[int(labels[0])]).inc()
        return
    for label, count in enumerate(np.bincount(labels, minlength=len(class_names)).tolist()):
        if count:
            _child(PREDICTIONS, model_name, class_names[label]).inc(count)


def count_model_load(model_name: str, ok: bool = True) -> None:
    _child(MODEL_LOADS if ok else MODEL_LOAD_FAILURES, model_name).inc()


@metrics.get("/metrics")
def metrics_page() -> Response:
    """Prometheus' text format: summed over every gunicorn worker in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def register_metrics(app: Flask) -> None:
    """The request hooks (first among the app's before_request hooks) and ``GET /metrics``."""
    app.before_request_funcs.setdefault(None, []).insert(0, _begin)
    app.after_request(_finish)
    app.teardown_request(_teardown)
    app.register_blueprint(metrics)
