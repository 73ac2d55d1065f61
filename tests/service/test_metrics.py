"""Request ids and Prometheus metrics in one process (the Flask test client)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from flask.testing import FlaskClient
from numpy.typing import NDArray
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from service.metrics import CONFIDENCE_BUCKETS, count_predictions, flush, request_id_from
from training import TwoLayerNet

ONE_INPUT = {"inputs": [[0.0] * 784]}
Sample = tuple[NDArray[np.uint8], NDArray[np.intp]]


def value(name: str, **labels: str) -> float:
    """A metric's value now: what this process counted, moved into the metrics first."""
    flush()
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    "sent,kept",
    [
        ("abc-123", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("a b", False),
        ("a\tb", False),
        ("", False),
        (None, False),
        ("é", False),
    ],
)
def test_request_id_from(sent: str | None, kept: bool) -> None:
    request_id = request_id_from(sent)
    assert (request_id == sent) is kept
    if not kept:
        assert re.fullmatch(r"[0-9a-f]{32}", request_id)


def test_every_response_carries_the_request_id(client: FlaskClient) -> None:
    assert (
        client.post("/predict", json=ONE_INPUT, headers={"X-Request-ID": "r-1"}).headers["X-Request-ID"]
        == "r-1"
    )
    for answer in (
        client.get("/nope"),
        client.get("/predict"),
        client.post("/predict", data="{", content_type="application/json"),
        client.get("/healthz"),
    ):
        assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["X-Request-ID"])


def test_requests_are_counted_by_route_model_and_status(client: FlaskClient) -> None:
    rule = "/v1/models/<name>/predict"
    ok = value("digits_http_requests_total", endpoint=rule, model="mnist", status="200")
    bad = value("digits_http_requests_total", endpoint=rule, model="mnist", status="422")
    unknown = value("digits_http_requests_total", endpoint=rule, model="", status="404")
    unmatched = value("digits_http_requests_total", endpoint="unmatched", model="", status="404")
    timed = value("digits_http_request_duration_seconds_count", endpoint=rule, model="mnist")
    client.post("/v1/models/mnist/predict", json=ONE_INPUT)
    client.post("/v1/models/mnist/predict", json={"inputs": [[2.0] * 784]})
    client.post("/v1/models/digits/predict", json=ONE_INPUT)
    client.get("/no/such/route")
    assert value("digits_http_requests_total", endpoint=rule, model="mnist", status="200") == ok + 1
    assert value("digits_http_requests_total", endpoint=rule, model="mnist", status="422") == bad + 1
    assert value("digits_http_requests_total", endpoint=rule, model="", status="404") == unknown + 1
    assert value("digits_http_requests_total", endpoint="unmatched", model="", status="404") == unmatched + 1
    assert value("digits_http_request_duration_seconds_count", endpoint=rule, model="mnist") == timed + 2
    assert value("digits_http_requests_in_flight") == 0


def test_predictions_are_counted_by_class(client: FlaskClient) -> None:
    answer = client.post(
        "/v1/models/fashion-mnist/predict",
        json={"inputs": np.random.default_rng(0).random((5, 784)).tolist()},
    )
    names = [p["class_name"] for p in answer.get_json()["predictions"]]
    before = {
        name: value("digits_predictions_total", model="fashion-mnist", class_name=name) for name in set(names)
    }
    client.post(
        "/v1/models/fashion-mnist/predict",
        json={"inputs": np.random.default_rng(0).random((5, 784)).tolist()},
    )
    for name in set(names):
        assert value("digits_predictions_total", model="fashion-mnist", class_name=name) == before[
            name
        ] + names.count(name)


def test_v2_infer_predictions_are_counted_too(client: FlaskClient) -> None:
    x = np.random.default_rng(1).random((4, 784))
    v1 = client.post("/v1/models/fashion-mnist/predict", json={"inputs": x.tolist()})
    names = [p["class_name"] for p in v1.get_json()["predictions"]]
    before = {
        name: value("digits_predictions_total", model="fashion-mnist", class_name=name) for name in set(names)
    }
    body = {"inputs": [{"name": "input", "shape": [4, 784], "datatype": "FP32", "data": x.ravel().tolist()}]}
    assert client.post("/v2/models/fashion-mnist/infer", json=body).status_code == 200
    for name in set(names):
        assert value("digits_predictions_total", model="fashion-mnist", class_name=name) == before[
            name
        ] + names.count(name)


def test_count_predictions_single_and_batch() -> None:
    classes = ["a", "b", "c"]
    before = [value("digits_predictions_total", model="unit", class_name=c) for c in classes]
    count_predictions("unit", classes, np.array([2]))
    count_predictions("unit", classes, np.array([0, 2, 2, 0, 0]))
    after = [value("digits_predictions_total", model="unit", class_name=c) for c in classes]
    assert [a - b for a, b in zip(after, before, strict=True)] == [3, 0, 3]


def test_the_histogram_gets_what_observe_would_give(client: FlaskClient) -> None:
    """flush adds many observations at once: buckets, sum and count as Histogram.observe."""
    rule = "/healthz"
    before = {
        le: value("digits_http_request_duration_seconds_bucket", endpoint=rule, model="", le=le)
        for le in ("0.0005", "10.0", "+Inf")
    }
    total = value("digits_http_request_duration_seconds_sum", endpoint=rule, model="")
    for _ in range(5):
        client.get(rule)
    after = {
        le: value("digits_http_request_duration_seconds_bucket", endpoint=rule, model="", le=le)
        for le in before
    }
    assert after["+Inf"] - before["+Inf"] == 5 and after["10.0"] - before["10.0"] == 5
    assert 0 <= after["0.0005"] - before["0.0005"] <= 5  # cumulative buckets
    assert 0 < value("digits_http_request_duration_seconds_sum", endpoint=rule, model="") - total < 1
    assert value("digits_http_request_duration_seconds_count", endpoint=rule, model="") == after["+Inf"]


def test_metrics_page_is_prometheus_text(client: FlaskClient) -> None:
    client.get("/healthz")
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain; version=")
    names = {family.name for family in text_string_to_metric_families(answer.get_data(as_text=True))}
    assert {
        "digits_http_requests",
        "digits_http_request_duration_seconds",
        "digits_http_requests_in_flight",
        "digits_predictions",
        "digits_prediction_confidence",
        "digits_model_loads",
        "digits_model_load_failures",
    } <= names


def confidence_buckets(text: str, model: str) -> dict[str, float]:
    """le -> cumulative count of ``digits_prediction_confidence`` for ``model``, plus its
    "sum" and "count", read from the /metrics text."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "digits_prediction_confidence":
            continue
        for sample in family.samples:
            if sample.labels.get("model") != model:
                continue
            key = sample.labels.get("le") or sample.name.rsplit("_", 1)[1]
            found[key] = sample.value
    return found


def test_each_answers_top_probability_is_in_the_confidence_histogram(
    client: FlaskClient, mnist_net: TwoLayerNet, mnist_sample: Sample
) -> None:
    """Read from the /metrics page after real predictions through v1 and v2: one observation per
    input, in the bucket of its top probability (the first bound at or above it)."""
    images = mnist_sample[0][:6]
    x = images.reshape(6, -1).astype(np.float32) / 255
    x[4:] *= 0.3  # faint digits: less sure answers, in the lower buckets
    top = mnist_net.predict(x).max(axis=1).astype(np.float64)
    before = confidence_buckets(client.get("/metrics").get_data(as_text=True), "mnist")
    assert client.post("/predict", json={"inputs": x[:1].tolist()}).status_code == 200
    assert client.post("/v1/models/mnist/predict", json={"inputs": x[1:3].tolist()}).status_code == 200
    tensor = {"name": "input", "shape": [3, 784], "datatype": "FP32", "data": x[3:].ravel().tolist()}
    assert client.post("/v2/models/mnist/infer", json={"inputs": [tensor]}).status_code == 200
    after = confidence_buckets(client.get("/metrics").get_data(as_text=True), "mnist")
    assert after["count"] - before.get("count", 0) == 6
    assert after["sum"] - before.get("sum", 0) == pytest.approx(top.sum(), rel=1e-6)
    bounds = [*map(str, CONFIDENCE_BUCKETS), "+Inf"]
    for le in bounds:
        expected = int((top <= float(le)).sum())
        assert after[le] - before.get(le, 0) == expected, (le, top)
    assert len({int((top <= float(le)).sum()) for le in bounds}) > 2  # the digits spread over buckets


def test_count_predictions_confidence_single_and_batch() -> None:
    """A bound itself counts in its bucket (le: less than or equal), as Histogram.observe."""
    classes = ["a", "b"]
    bucket = "digits_prediction_confidence_bucket"
    before = {le: value(bucket, model="unit-c", le=le) for le in ("0.5", "0.9")}
    count_predictions("unit-c", classes, np.array([0]), np.array([0.5], np.float64))
    count_predictions("unit-c", classes, np.array([0, 1, 1]), np.array([0.45, 0.91, 1.0], np.float64))
    after = {le: value(bucket, model="unit-c", le=le) for le in before}
    assert after["0.5"] - before["0.5"] == 2 and after["0.9"] - before["0.9"] == 2
    assert value("digits_prediction_confidence_count", model="unit-c") >= 4
