"""The error contract as a table: each client mistake, the request that makes it, the answer.

Run through the Flask test client (tests/service/test_errors.py) and against a real gunicorn
(tests/integration/test_gunicorn.py), both checking each answer with ``assert_error_shape``.
Bodies are bytes with an explicit Content-Type so both clients send exactly the same request.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image
from service_testkit import TEST_MAX_BATCH, TEST_MAX_REQUEST_BYTES, bomb_png
from urllib3 import encode_multipart_formdata

JSON = {"Content-Type": "application/json"}
PNG = {"Content-Type": "image/png"}
ZERO_ROW = [0.0] * 784


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 422
    code: str = "validation_error"
    #: A key that must appear in error.details (a field name), if any.
    detail: str | None = None


def _json(payload: object) -> bytes:
    # allow_nan: Python's json writes NaN/Infinity, which clients really send
    return json.dumps(payload, allow_nan=True).encode()


def _png(size: int = 28) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (size, size), 0).save(buffer, format="PNG")
    return buffer.getvalue()


def _multipart(fields: dict[str, object]) -> tuple[bytes, dict[str, str]]:
    body, content_type = encode_multipart_formdata(fields)
    return body, {"Content-Type": content_type}


def _post_json(id: str, payload: object, path: str = "/predict", **kw: object) -> Case:
    return Case(id, "POST", path, _json(payload), JSON, **kw)  # type: ignore[arg-type]


_two_rows = [ZERO_ROW, ZERO_ROW]
_form_no_files, _form_no_files_headers = _multipart({"labels": "1"})
_form_bad_labels, _form_bad_labels_headers = _multipart(
    {"image": ("a.png", _png(), "image/png"), "labels": "one"}
)

CASES = [
    # --- transport: 400 404 405 413 415 ---
    Case("malformed-json", "POST", "/predict", b'{"inputs": [[0.1,', JSON, 400, "invalid_json"),
    Case("not-utf8-json", "POST", "/predict", b"\xff\xfe{", JSON, 400, "invalid_json"),
    _post_json(
        "unknown-model", {"inputs": [ZERO_ROW]}, "/v1/models/nope/predict", status=404, code="model_not_found"
    ),
    Case("unknown-model-info", "GET", "/v1/models/nope", status=404, code="model_not_found"),
    # a name holding ":" is still v1's model-info route, not TF Serving's NAME:verb (issue 22)
    Case("unknown-model-info-colon", "GET", "/v1/models/a:b", status=404, code="model_not_found"),
    Case(
        "unknown-model-version-colon", "GET", "/v1/models/a:b/versions/1", status=404, code="model_not_found"
    ),
    Case("unknown-route", "GET", "/v1/everything", status=404, code="not_found"),
    Case("wrong-method-get-predict", "GET", "/predict", status=405, code="method_not_allowed"),
    Case("wrong-method-post-models", "POST", "/v1/models", b"{}", JSON, 405, "method_not_allowed"),
    Case(
        "body-too-large",
        "POST",
        "/predict",
        b" " * (TEST_MAX_REQUEST_BYTES + 1024),
        JSON,
        413,
        "payload_too_large",
    ),
    Case(
        "text-plain",
        "POST",
        "/predict",
        b"0.1,0.2",
        {"Content-Type": "text/plain"},
        415,
        "unsupported_media_type",
    ),
    Case("no-content-type", "POST", "/predict", b'{"inputs": []}', {}, 415, "unsupported_media_type"),
    Case(
        "form-urlencoded",
        "POST",
        "/predict",
        b"inputs=1",
        {"Content-Type": "application/x-www-form-urlencoded"},
        415,
        "unsupported_media_type",
    ),
    # --- inputs: 422 ---
    _post_json("top-level-array", [ZERO_ROW], detail="_schema"),
    _post_json("no-inputs-no-images", {}, detail="_schema"),
    _post_json(
        "both-inputs-and-images",
        {"inputs": [ZERO_ROW], "images": [base64.b64encode(_png()).decode()]},
        detail="_schema",
    ),
    _post_json("unknown-field", {"inputs": [ZERO_ROW], "input": 1}, detail="input"),
    _post_json("inputs-not-a-list", {"inputs": "0.1, 0.2"}, detail="inputs"),
    _post_json("empty-batch", {"inputs": []}, detail="inputs"),
    _post_json("batch-over-limit", {"inputs": [[0] * 784] * (TEST_MAX_BATCH + 1)}, detail="inputs"),
    _post_json("unbatched-single-input", {"inputs": ZERO_ROW}, detail="inputs"),
    _post_json("wrong-width", {"inputs": [[0.0] * 783]}, detail="inputs"),
    _post_json("wrong-grid", {"inputs": [[[0.0] * 27] * 28]}, detail="inputs"),
    _post_json("ragged-rows", {"inputs": [ZERO_ROW, [0.0] * 783]}, detail="inputs"),
    _post_json("ragged-grid", {"inputs": [[[0.0] * 28] * 27 + [[0.0] * 27]]}, detail="inputs"),
    _post_json("strings", {"inputs": [["a"] * 784]}, detail="inputs"),
    _post_json("numeric-strings", {"inputs": [["0.5"] * 784]}, detail="inputs"),
    _post_json("booleans", {"inputs": [[True] * 784]}, detail="inputs"),
    _post_json("boolean-among-numbers", {"inputs": [[0.5, True] + [0.0] * 782]}, detail="inputs"),
    _post_json("nulls", {"inputs": [[None] * 784]}, detail="inputs"),
    _post_json("nested-objects", {"inputs": [[{"v": 1}] * 784]}, detail="inputs"),
    _post_json("nan", {"inputs": [[float("nan")] + [0.0] * 783]}, detail="inputs"),
    _post_json("infinity", {"inputs": [[float("inf")] + [0.0] * 783]}, detail="inputs"),
    Case(
        "number-overflows-to-inf",
        "POST",
        "/predict",
        b'{"inputs": [[1e999' + b", 0" * 783 + b"]]}",
        JSON,
        detail="inputs",
    ),
    _post_json("above-one", {"inputs": [[1.5] + [0.0] * 783]}, detail="inputs"),
    _post_json("negative", {"inputs": [[-0.1] + [0.0] * 783]}, detail="inputs"),
    _post_json("0-255-without-pixel-range", {"inputs": [[255] * 784]}, detail="inputs"),
    _post_json("above-255", {"inputs": [[256] * 784], "pixel_range": "0-255"}, detail="inputs"),
    _post_json("bad-pixel-range", {"inputs": [ZERO_ROW], "pixel_range": "0-100"}, detail="pixel_range"),
    _post_json(
        "preprocess-not-bool",
        {"images": [base64.b64encode(_png()).decode()], "preprocess": "maybe"},
        detail="preprocess",
    ),
    # --- images: 413 422 ---
    _post_json("bad-base64", {"images": ["not base64!"]}, detail="images"),
    _post_json("empty-images", {"images": []}, detail="images"),
    _post_json(
        "images-over-limit",
        {"images": [base64.b64encode(_png()).decode()] * (TEST_MAX_BATCH + 1)},
        detail="images",
    ),
    _post_json("base64-of-text", {"images": [base64.b64encode(b"hello").decode()]}, detail="images"),
    Case("undecodable-image", "POST", "/predict", b"\x89PNG not really", PNG, detail="images"),
    Case("truncated-png", "POST", "/predict", _png(64)[:60], PNG, detail="images"),
    Case("empty-image-body", "POST", "/predict", b"", PNG, detail="images"),
    Case(
        "decompression-bomb",
        "POST",
        "/predict",
        bomb_png(50_000, 50_000),
        PNG,
        413,
        "image_too_large",
        detail="images",
    ),
    Case(
        "image-over-pixel-limit",
        "POST",
        "/predict",
        bomb_png(5_000, 5_000),
        PNG,
        413,
        "image_too_large",
        detail="images",
    ),
    Case("bad-query-option", "POST", "/predict?preprocess=maybe", _png(), PNG, detail="preprocess"),
    Case("unknown-query-option", "POST", "/predict?size=28", _png(), PNG, detail="size"),
    Case(
        "multipart-without-files",
        "POST",
        "/accuracy",
        _form_no_files,
        _form_no_files_headers,
        detail="_schema",
    ),
    Case(
        "multipart-bad-labels",
        "POST",
        "/accuracy",
        _form_bad_labels,
        _form_bad_labels_headers,
        detail="labels",
    ),
    # --- labels and loss: 422 ---
    _post_json("labels-missing", {"inputs": _two_rows}, "/loss", detail="labels"),
    _post_json("labels-count-mismatch", {"inputs": _two_rows, "labels": [1]}, "/accuracy", detail="labels"),
    _post_json(
        "labels-out-of-classes", {"inputs": _two_rows, "labels": [1, 10]}, "/accuracy", detail="labels"
    ),
    _post_json("labels-negative", {"inputs": _two_rows, "labels": [-1, 0]}, "/loss", detail="labels"),
    _post_json("labels-fractional", {"inputs": _two_rows, "labels": [1.5, 0]}, "/loss", detail="labels"),
    _post_json("labels-strings", {"inputs": _two_rows, "labels": ["1", "2"]}, "/loss", detail="labels"),
    _post_json("labels-booleans", {"inputs": _two_rows, "labels": [True, False]}, "/loss", detail="labels"),
    _post_json(
        "labels-one-hot-wrong-width",
        {"inputs": _two_rows, "labels": np.eye(9, dtype=int)[:2].tolist()},
        "/loss",
        detail="labels",
    ),
    _post_json(
        "labels-one-hot-two-ones",
        {"inputs": _two_rows, "labels": [[1, 1] + [0] * 8, [1] + [0] * 9]},
        "/loss",
        detail="labels",
    ),
    _post_json("labels-on-predict", {"inputs": _two_rows, "labels": [1, 2]}, detail="labels"),
    _post_json(
        "unknown-loss", {"inputs": _two_rows, "labels": [1, 2], "loss": "hinge"}, "/loss", detail="loss"
    ),
    # --- feedback, on a server without FEEDBACK_DIR ---
    Case("feedback-off", "POST", "/feedback?label=7", _png(), PNG, 404, "feedback_disabled"),
    Case(
        "feedback-off-model",
        "POST",
        "/v1/models/mnist/feedback?label=7",
        _png(),
        PNG,
        404,
        "feedback_disabled",
    ),
    # --- explain's options, and its heatmap ---
    _post_json(
        "explain-unknown-method", {"inputs": _two_rows, "method": "lime"}, "/explain", detail="method"
    ),
    _post_json(
        "explain-target-out-of-classes", {"inputs": _two_rows, "target": 10}, "/explain", detail="target"
    ),
    _post_json(
        "explain-steps-zero", {"inputs": _two_rows, "steps": 0}, "/v1/models/mnist/explain", detail="steps"
    ),
    Case(
        "explain-heatmap-of-two",
        "POST",
        "/explain",
        _json({"inputs": _two_rows}),
        {**JSON, "Accept": "image/png"},
        406,
        "not_acceptable",
    ),
]


def assert_error_shape(status: int, content_type: str | None, body: Any, case: Case) -> None:
    """The one error shape: {"error": {"status", "code", "message"[, "details"]}}."""
    assert (status, body["error"]["code"] if isinstance(body, dict) and "error" in body else body) == (
        case.status,
        case.code,
    )
    assert content_type is not None and content_type.startswith("application/json")
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) <= {"status", "code", "message", "details"}
    assert error["status"] == case.status
    assert isinstance(error["message"], str) and error["message"]
    if case.detail is not None:
        assert case.detail in error["details"], error
