"""Per-request bookkeeping and Prometheus metrics: request ids, timing, counters, ``GET /metrics``.

Everything a request costs in bookkeeping happens in one WSGI middleware around the Flask app,
``RequestBookkeeping``, and stays small: the no-op floor is ~125 µs a request. Two choices keep
it so, both measured (docs/API.md, Speed):

- a middleware, not Flask's before/after_request hooks, which cost as much again as the
  bookkeeping itself;
- the numbers are counted in plain Python (``_Pending``: one lock, a few dict updates) and moved
  into prometheus_client's metrics by ``flush``: every ``FLUSH_SECONDS`` from a thread in each
  gunicorn worker, when a worker exits, and before ``GET /metrics`` answers. A prometheus_client
  write in multiprocess mode (a lock, a pid check, an mmap'd file) costs ~2-4 µs, and a request
  would make five or six. So ``/metrics`` shows the other workers' numbers as of their last
  flush, at most ``FLUSH_SECONDS`` old; the answering worker's are current.

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
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

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

from service.routes import route

#: WSGI environ keys this module and the views fill in (gunicorn's access log reads them).
REQUEST_ID = "service.request_id"
MODEL = "service.model"  # the ``Model`` that answered, set by ``service.state.lookup``
REQUEST_ID_HEADER = "X-Request-ID"
MAX_REQUEST_ID_LENGTH = 128
#: Seconds; a forward pass takes well under a millisecond, an image upload a few.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
#: Top-class probabilities: one answer's confidence, from a guess among 10 classes (0.1) to sure.
#: Most answers of a good model sit above 0.99; a shift into the lower buckets is drift.
CONFIDENCE_BUCKETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999)
UNMATCHED = "unmatched"
NO_MODEL = ""
#: Seconds between a worker's flushes of its pending numbers into the shared metrics.
FLUSH_SECONDS = 1.0

REQUESTS = Counter(
    "digits_http_requests",
    "HTTP requests answered, by route, model and status",
    ("endpoint", "model", "status"),
)
LATENCY = Histogram(
    "digits_http_request_duration_seconds",
    "Time from the request's arrival in the app to its response, by route and model",
    ("endpoint", "model"),
    buckets=LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge("digits_http_requests_in_flight", "Requests being handled now", multiprocess_mode="livesum")
PREDICTIONS = Counter("digits_predictions", "Predicted labels, by model and class", ("model", "class_name"))
CONFIDENCE = Histogram(
    "digits_prediction_confidence",
    "The top class probability of each answer (one per input), by model",
    ("model",),
    buckets=CONFIDENCE_BUCKETS,
)
RPCS = Counter(
    "digits_grpc_requests",
    "gRPC calls answered, by method, model and status code",
    ("method", "model", "code"),
)
RPC_LATENCY = Histogram(
    "digits_grpc_request_duration_seconds",
    "Time from a gRPC call's arrival in its handler to its answer, by method and model",
    ("method", "model"),
    buckets=LATENCY_BUCKETS,
)
MODEL_LOADS = Counter("digits_model_loads", "Model files loaded and validated, by model", ("model",))
MODEL_LOAD_FAILURES = Counter(
    "digits_model_load_failures",
    "Model files that failed validation (and did not replace a serving model), by model",
    ("model",),
)
FEEDBACK = Counter(
    "digits_feedback_corrections",
    "Corrections received (POST .../feedback), by model, the class predicted (what the client "
    "says it was shown, else the model's answer) and the label: a live confusion matrix",
    ("model", "predicted", "label"),
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

metrics = Blueprint("metrics", __name__)
#: Labelled children, cached: ``Counter.labels`` validates and locks on every call.
_children: dict[tuple[Any, ...], Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    key = (metric, *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


class _Pending:
    """This process's request numbers since the last ``flush``, in plain Python."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_flight = 0
        #: (endpoint, model, status) -> requests
        self.requests: dict[tuple[str, str, str], int] = {}
        #: (endpoint, model) -> [sum of seconds, count per bucket ..., count over the last]
        self.latency: dict[tuple[str, str], list[float]] = {}
        #: (model, class name) -> predictions
        self.predictions: dict[tuple[str, str], int] = {}
        #: model -> [sum of top probabilities, count per bucket ..., count over the last]
        self.confidence: dict[str, list[float]] = {}
        #: gRPC: (method, model, code) -> calls; (method, model) -> as ``latency``
        self.rpcs: dict[tuple[str, str, str], int] = {}
        self.rpc_latency: dict[tuple[str, str], list[float]] = {}


_pending = _Pending()


def flush() -> None:
    """Move the pending numbers into prometheus_client's metrics (its files, across processes)."""
    with _pending.lock:
        requests, _pending.requests = _pending.requests, {}
        latency, _pending.latency = _pending.latency, {}
        predictions, _pending.predictions = _pending.predictions, {}
        confidence, _pending.confidence = _pending.confidence, {}
        rpcs, _pending.rpcs = _pending.rpcs, {}
        rpc_latency, _pending.rpc_latency = _pending.rpc_latency, {}
        in_flight = _pending.in_flight
    for request_labels, count in requests.items():
        _child(REQUESTS, *request_labels).inc(count)
    for latency_labels, observed in latency.items():
        _observe_many(_child(LATENCY, *latency_labels), observed)
    for prediction_labels, count in predictions.items():
        _child(PREDICTIONS, *prediction_labels).inc(count)
    for model_name, observed in confidence.items():
        _observe_many(_child(CONFIDENCE, model_name), observed)
    for rpc_labels, count in rpcs.items():
        _child(RPCS, *rpc_labels).inc(count)
    for rpc_latency_labels, observed in rpc_latency.items():
        _observe_many(_child(RPC_LATENCY, *rpc_latency_labels), observed)
    IN_FLIGHT.set(in_flight)


def _observe_many(histogram: Any, observed: list[float]) -> None:
    """n observations at once (their sum, then the count per bucket), into the histogram's own
    sum and bucket values, as Histogram.observe does one at a time: prometheus_client has no
    public call for it."""
    total, *buckets = observed
    histogram._sum.inc(total)
    for bucket, count in zip(histogram._buckets, buckets, strict=True):
        if count:
            bucket.inc(count)


def start_flushing(interval: float = FLUSH_SECONDS) -> None:
    """Flush every ``interval`` seconds from a daemon thread (gunicorn's ``post_worker_init``)."""

    def run() -> None:
        while not stop.wait(interval):
            flush()

    stop = threading.Event()  # never set: the thread ends with the worker
    threading.Thread(target=run, daemon=True, name="metrics-flush").start()


def request_id_from(value: str | None) -> str:
    """The client's id if it is a sane token, else a fresh one."""
    if (
        value
        and len(value) <= MAX_REQUEST_ID_LENGTH
        and value.isascii()
        and value.isprintable()
        and " " not in value
    ):
        return value
    return f"{random.getrandbits(128):032x}"


class RequestBookkeeping:
    """WSGI middleware: the request id in, the ``X-Request-ID`` header out, and the metrics.

    The response is counted and timed when the app starts it (the app has built the whole body
    by then), while Flask's request context is still there to say which route matched.
    """

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request_id = environ[REQUEST_ID] = request_id_from(environ.get("HTTP_X_REQUEST_ID"))
        started = time.perf_counter()

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers.append((REQUEST_ID_HEADER, request_id))
            try:
                rule = request.url_rule
            except RuntimeError:  # no request context: not through Flask's dispatch
                rule = None
            model = environ.get(MODEL)
            labels = (
                rule.rule if rule is not None else UNMATCHED,
                model.name if model is not None else NO_MODEL,
            )
            seconds = time.perf_counter() - started
            key = (*labels, status[:3])
            with pending.lock:
                pending.requests[key] = pending.requests.get(key, 0) + 1
                latency = pending.latency.get(labels)
                if latency is None:
                    latency = pending.latency[labels] = [0.0] * (len(LATENCY_BUCKETS) + 2)
                latency[0] += seconds
                latency[1 + bisect_left(LATENCY_BUCKETS, seconds)] += 1  # as Histogram.observe
            return start_response(status, headers, exc_info)

        pending = _pending
        with pending.lock:
            pending.in_flight += 1
        try:
            return self.app(environ, start)
        finally:
            with pending.lock:
                pending.in_flight -= 1


def count_rpc(method: str, model: str, code: str, seconds: float) -> None:
    """A gRPC call answered (``service.grpc_server``): counted and timed as requests are."""
    key = (method, model, code)
    labels = (method, model)
    with _pending.lock:
        _pending.rpcs[key] = _pending.rpcs.get(key, 0) + 1
        latency = _pending.rpc_latency.get(labels)
        if latency is None:
            latency = _pending.rpc_latency[labels] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        latency[0] += seconds
        latency[1 + bisect_left(LATENCY_BUCKETS, seconds)] += 1


def count_predictions(
    model_name: str,
    class_names: Sequence[str],
    labels: NDArray[np.intp],
    confidence: NDArray[np.floating] | None = None,
) -> None:
    """Add a batch's predicted labels (N,) to the per-class counter, and each answer's top
    probability (N,), if given, to the confidence histogram: one bucket search for the whole
    batch (the buckets of ``Histogram.observe``: the first bound at or above the value)."""
    if len(labels) == 1:
        counts = {class_names[int(labels[0])]: 1}
    else:
        counts = {
            class_names[label]: count
            for label, count in enumerate(np.bincount(labels, minlength=len(class_names)).tolist())
            if count
        }
    # (sum, [(bucket index, count), ...]) of the top probabilities
    observed: tuple[float, list[tuple[int, int]]] | None = None
    if confidence is not None and len(confidence) == 1:
        top = float(confidence[0])
        observed = (top, [(bisect_left(CONFIDENCE_BUCKETS, top), 1)])
    elif confidence is not None:
        buckets = np.bincount(np.searchsorted(CONFIDENCE_BUCKETS, confidence))  # side="left": as bisect_left
        observed = (float(confidence.sum(dtype=np.float64)), [*enumerate(buckets.tolist())])
    with _pending.lock:
        predictions = _pending.predictions  # (read under the lock: flush swaps it)
        for class_name, count in counts.items():
            key = (model_name, class_name)
            predictions[key] = predictions.get(key, 0) + count
        if observed is not None:
            histogram = _pending.confidence.get(model_name)
            if histogram is None:
                histogram = _pending.confidence[model_name] = [0.0] * (len(CONFIDENCE_BUCKETS) + 2)
            histogram[0] += observed[0]
            for bucket, count in observed[1]:
                histogram[1 + bucket] += count


def count_feedback(model_name: str, pairs: Iterable[tuple[str, str]]) -> None:
    """Count corrections, each a (predicted, label) pair of class names. Written at once: a
    correction is rare, and worth more than the few microseconds a write costs."""
    for predicted, label in pairs:
        _child(FEEDBACK, model_name, predicted, label).inc()


def count_model_load(model_name: str, ok: bool = True) -> None:
    _child(MODEL_LOADS if ok else MODEL_LOAD_FAILURES, model_name).inc()


@route(
    metrics,
    "/metrics",
    summary="Prometheus metrics, summed over every worker: requests by route, model and status, "
    "latency histograms, in-flight requests, predictions by class, the confidence (top probability) "
    "of each answer, corrections by (predicted, label), model loads and load failures.",
    tags=("metrics",),
    access="open",
    response_content={"text/plain": {"schema": {"type": "string"}}},
    response_description="Prometheus text exposition format",
)
def metrics_page() -> Response:
    """Prometheus' text format: summed over every gunicorn worker in multiprocess mode."""
    flush()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def register_metrics(app: Flask) -> None:
    """The bookkeeping middleware around the app, and ``GET /metrics``."""
    app.wsgi_app = RequestBookkeeping(app.wsgi_app)  # type: ignore[method-assign]
    app.register_blueprint(metrics)
