"""Property tests for requests: any JSON value gives loaded data or a client error, never a 500.

On the schemas: arbitrary JSON values (None, booleans, integers of any size, floats with NaN,
infinities and 1e308, strings with lone surrogates, nested lists and objects) for ``inputs``,
``images``, ``labels``, ``loss``, ``pixel_range``, ``preprocess`` and unknown fields, mixed with
nearly valid values, load into a valid batch or raise marshmallow's ``ValidationError`` or one of
our ``APIError`` s; never a TypeError, ValueError or OverflowError. Through the Flask test client
(the session app of ``tests/service_fixtures.py``): every answer is 200 with the documented body,
or a 4xx with the one error shape.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import numpy as np
import pytest
from flask import Flask
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis_profiles import examples
from marshmallow import ValidationError
from service_testkit import TEST_MAX_BATCH, drawn_digit, png_bytes

from service.errors import APIError
from service.inputs import MAX_JSON_DEPTH, loads_json
from service.schemas import (
    AccuracyRequestSchema,
    AccuracyResponseSchema,
    ErrorResponseSchema,
    InputSpec,
    LossRequestSchema,
    LossResponseSchema,
    PredictRequestSchema,
    PredictResponseSchema,
    plain_inputs,
)
from training import LOSSES

MNIST = InputSpec(input_shape=(28, 28), image_size=(28, 28), num_classes=10, max_batch_size=4)
FLAT = InputSpec(input_shape=(6,), image_size=None, num_classes=3, max_batch_size=4)
SCHEMAS = {"predict": PredictRequestSchema, "loss": LossRequestSchema, "accuracy": AccuracyRequestSchema}
RESPONSES = {
    "predict": PredictResponseSchema(),
    "loss": LossResponseSchema(),
    "accuracy": AccuracyResponseSchema(),
}
_PNG = base64.b64encode(png_bytes(drawn_digit("7", size=40))).decode()

# --- arbitrary JSON -------------------------------------------------------------------------
_strings = st.text(max_size=8) | st.sampled_from(
    [
        "",
        "0.5",
        "3,1",
        "[1, 2]",
        "[[",
        "1e999",
        "NaN",
        "\ud800",
        "data:image/png;base64,",
        "0-1",
        "0-255",
        "true",
        "cross_entropy",
        "aGVsbG8=",
    ]
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63),
    st.sampled_from([10**400, -(2**64), 2**64 - 1]),
    st.floats(),
    st.sampled_from([1e308, -1e308, 1e-320, 3.5e38, 255.0, 256.0]),
    _strings,
)
json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_strings, inner, max_size=4),
    max_leaves=15,
)


# --- valid requests, and each field's mistakes ---------------------------------------------
def sometimes(draw: st.DrawFn) -> bool:
    """True about one time in five: how often each field of a request is spoiled."""
    return draw(st.integers(0, 4)) == 0


@st.composite
def batches(draw: st.DrawFn, n: int, size: int, top: int) -> list[Any]:
    """``n`` inputs of ``size`` numbers in [0, top] (flat, or a 28x28 grid when size is 784);
    sometimes with cells replaced by any value, or a row lengthened or cut."""
    fill = draw(st.sampled_from([0, top / 2, top]))
    rows = [[fill] * size for _ in range(n)]
    for _ in range(draw(st.integers(0, 2))):
        value = draw(_scalars | json_values) if sometimes(draw) else draw(st.floats(0, top))
        rows[draw(st.integers(0, n - 1))][draw(st.integers(0, size - 1))] = value
    if sometimes(draw):
        row = rows[draw(st.integers(0, n - 1))]
        row.append(0.0) if draw(st.booleans()) else row.pop()
    if size == 784 and draw(st.booleans()):
        return [[row[r * 28 : (r + 1) * 28] for r in range(28)] for row in rows]
    return rows


@st.composite
def labels(draw: st.DrawFn, n: int, classes: int) -> Any:
    """``n`` labels, integers or one-hot rows or a form string; sometimes wrong or anything."""
    if sometimes(draw):
        return draw(
            st.one_of(
                st.lists(st.integers(-2, classes + 1), min_size=1, max_size=5),
                st.lists(
                    st.lists(st.integers(0, 1), min_size=classes, max_size=classes), min_size=n, max_size=n
                ),
                st.lists(st.floats(), min_size=n, max_size=n),
                st.sampled_from(["1,", "[1e999]", "9" * 30, "[[0, 1]]", ""]),
                json_values,
            )
        )
    ints = draw(st.lists(st.integers(0, classes - 1), min_size=n, max_size=n))
    form = draw(st.sampled_from(["ints", "floats", "one-hot", "text", "json-text"]))
    if form == "floats":
        return [float(t) for t in ints]
    if form == "one-hot":
        return np.eye(classes, dtype=int)[ints].tolist()
    if form == "text":
        return ",".join(map(str, ints))
    return json.dumps(ints) if form == "json-text" else ints


def maybe_spoiled(draw: st.DrawFn, valid: st.SearchStrategy[Any]) -> Any:
    return draw(json_values) if sometimes(draw) else draw(valid)


@st.composite
def payloads(draw: st.DrawFn, kind: str, size: int, classes: int, images: bool) -> Any:
    """A ``kind`` request body for a model with ``size`` inputs and ``classes`` classes: valid
    about one time in five, else with fields spoiled, missing or extra, or any JSON value."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    n = draw(st.integers(1, 4))
    body: dict[str, Any] = {}
    if images and draw(st.integers(0, 3)) == 0:
        body["images"] = maybe_spoiled(
            draw, st.lists(st.sampled_from([_PNG, "data:image/png;base64," + _PNG]), min_size=n, max_size=n)
        )
        if draw(st.booleans()):
            body["preprocess"] = maybe_spoiled(draw, st.sampled_from([True, False, "false"]))
    else:
        pixel_range = draw(st.sampled_from([None, "0-1", "0-255"]))
        body["inputs"] = draw(batches(n, size, 255 if pixel_range == "0-255" else 1))
        if pixel_range is not None:
            body["pixel_range"] = maybe_spoiled(draw, st.just(pixel_range))
    if (kind != "predict") != sometimes(draw):  # labels where needed, with a few exceptions
        body["labels"] = draw(labels(n, classes))
    if draw(st.booleans()) and (kind == "loss") != sometimes(draw):
        body["loss"] = maybe_spoiled(draw, st.sampled_from(LOSSES))
    if draw(st.integers(0, 9)) == 0:
        body.update(draw(st.dictionaries(_strings, json_values, min_size=1, max_size=2)))
    return body


def encode(payload: Any) -> bytes:
    """JSON as Python writes it: NaN and Infinity included, which clients really send."""
    return json.dumps(payload, allow_nan=True).encode()


# --- on the schemas -------------------------------------------------------------------------
def check_loaded(data: dict[str, Any], spec: InputSpec, kind: str) -> None:
    x = data["x"]
    assert isinstance(x, np.ndarray) and x.dtype == np.float32 and x.ndim == 2
    assert 1 <= len(x) <= spec.max_batch_size and x.shape[1] == spec.input_size
    assert np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1
    if kind != "predict":
        assert len(data["labels"]) == len(x)
    if kind == "loss":
        assert data["loss"] in LOSSES


@settings(max_examples=examples(300))
@given(
    spec=st.sampled_from([MNIST, FLAT]),
    kind=st.sampled_from(sorted(SCHEMAS)),
    data=st.data(),
    through_json=st.booleans(),
)
def test_schemas_load_or_refuse(spec: InputSpec, kind: str, data: st.DataObject, through_json: bool) -> None:
    """Python values straight in, or the body as the server reads it (``loads_json``)."""
    payload = data.draw(
        payloads(kind, spec.input_size, spec.num_classes, spec.image_size is not None), label="payload"
    )
    schema = SCHEMAS[kind](spec=spec)
    try:
        loaded = schema.load(loads_json(encode(payload)) if through_json else payload)
    except (ValidationError, APIError) as exc:
        event(type(exc).__name__)
        return
    event("loaded")
    check_loaded(loaded, spec, kind)


@settings(max_examples=examples(300))
@given(spec=st.sampled_from([MNIST, FLAT]), data=st.data())
def test_plain_inputs_give_what_the_schema_gives(spec: InputSpec, data: st.DataObject) -> None:
    """The hot path's reader of v1 predict bodies (``plain_inputs``) stands in for the schema: it
    gives exactly the schema's batch, or steps aside (None) and lets the schema answer."""
    payload = data.draw(payloads("predict", spec.input_size, spec.num_classes, spec.image_size is not None))
    doc = loads_json(encode(payload))
    plain = plain_inputs(doc, spec)
    try:
        expected = PredictRequestSchema(spec=spec).load(doc)["x"]
    except (ValidationError, APIError):
        assert plain is None
        event("refused")
        return
    event("stepped aside" if plain is None else "plain")
    if plain is not None:
        assert plain.dtype == expected.dtype and plain.shape == expected.shape
        np.testing.assert_array_equal(plain, expected)


def test_plain_inputs_read_the_plain_forms() -> None:
    """The bodies clients send are read by ``plain_inputs`` itself, not left to the schema."""
    row = [0.5] * 6
    for payload in ({"inputs": [row]}, {"inputs": [row, row], "pixel_range": "0-1"}):
        x = plain_inputs(loads_json(encode(payload)), FLAT)
        assert x is not None and x.shape == (len(payload["inputs"]), 6)
    x = plain_inputs(loads_json(encode({"inputs": [[255] * 6], "pixel_range": "0-255"})), FLAT)
    assert x is not None and (x == 1).all()
    for other in ({"inputs": [row], "extra": 1}, {"inputs": [row], "pixel_range": "0-2"}, {"images": []}):
        assert plain_inputs(loads_json(encode(other)), FLAT) is None


# --- through the app ------------------------------------------------------------------------
PATHS = ["/predict", "/loss", "/accuracy", "/v1/models/nope/predict"] + [
    f"/v1/models/{name}/{kind}"
    for name in ("mnist", "fashion-mnist")
    for kind in ("predict", "loss", "accuracy")
]


def check_answer(response: Any, path: str) -> None:
    """200 with the documented body, or 4xx with the one error shape; never 5xx."""
    status = response.status_code
    body = response.get_json()
    assert status == 200 or 400 <= status < 500, (status, body)
    assert response.content_type.startswith("application/json")
    if status == 200:
        kind = path.rsplit("/", 1)[1]
        assert RESPONSES[kind].validate(body) == {}, body
        if kind == "loss":
            assert isinstance(body["loss"], float) and math.isfinite(body["loss"])
        return
    assert ErrorResponseSchema().validate(body) == {}, body
    assert set(body) == {"error"} and body["error"]["status"] == status
    assert "Traceback" not in response.get_data(as_text=True)


@settings(max_examples=examples(300))
@given(path=st.sampled_from(PATHS), data=st.data())
def test_any_json_body_is_answered_200_or_4xx(app: Flask, path: str, data: st.DataObject) -> None:
    kind = path.rsplit("/", 1)[1]
    payload = data.draw(payloads(kind, 784, 10, images="fashion" not in path), label="payload")
    response = app.test_client().post(
        path, data=encode(payload), headers={"Content-Type": "application/json"}
    )
    event(f"HTTP {response.status_code}")  # pytest --hypothesis-show-statistics shows the mix
    check_answer(response, path)


_raw_bodies = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    st.builds(lambda d, tail: (b"[" * d) + tail, st.integers(0, 2000), st.binary(max_size=20)),
    st.builds(lambda d: b'{"inputs": ' + b"[" * d + b"]" * d + b"}", st.integers(0, 1500)),
    st.builds(lambda digits: b'{"inputs": [[' + b"9" * digits + b"]]}", st.integers(1, 5000)),
)


@settings(max_examples=examples(150))
@given(
    path=st.sampled_from(PATHS),
    body=_raw_bodies,
    content_type=st.sampled_from(
        ["application/json", "image/png", "image/jpeg", "multipart/form-data; boundary=x", "text/plain", ""]
    ),
    query=st.sampled_from(
        [
            "",
            "?preprocess=false",
            "?labels=3",
            "?labels=[1e999]",
            "?labels=3,1&preprocess=maybe",
            "?pixel_range=0-255",
        ]
    ),
)
def test_any_bytes_with_any_content_type(
    app: Flask, path: str, body: bytes, content_type: str, query: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = app.test_client().post(path + query, data=body, headers=headers)
    event(f"HTTP {response.status_code}")
    check_answer(response, path)


# --- regressions: each was a 500 before its fix --------------------------------------------
def post_json(app: Flask, body: bytes, path: str = "/predict") -> tuple[int, dict[str, Any]]:
    response = app.test_client().post(path, data=body, headers={"Content-Type": "application/json"})
    check_answer(response, path)
    return response.status_code, response.get_json()


ROW = [0.0] * 784


@pytest.mark.parametrize("value", [[], {}, ["0-255"]])
def test_pixel_range_of_the_wrong_type(app: Flask, value: Any) -> None:
    """PixelBatch looked the raw value up in a dict: TypeError (unhashable) -> 500."""
    status, body = post_json(app, encode({"inputs": [ROW], "pixel_range": value}))
    assert status == 422 and "pixel_range" in body["error"]["details"]


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 500, 1100, 50_000])
@pytest.mark.parametrize("template", [b"%s", b'{"inputs": %s}', b'{"labels": %s}'])
def test_json_nested_too_deep(app: Flask, depth: int, template: bytes) -> None:
    """Deep nesting made RecursionError (json, our converter) or simdjson's DEPTH_ERROR -> 500;
    which one depended on the depth and on how deep the stack already was."""
    nested = b"[" * depth + b"]" * depth
    status, body = post_json(app, template.replace(b"%s", nested))
    assert (status, body["error"]["code"]) == (400, "invalid_json")
    assert "nested more than" in body["error"]["message"]


def test_json_nested_to_the_limit_is_read(app: Flask) -> None:
    nested = b"[" * (MAX_JSON_DEPTH - 1) + b"]" * (MAX_JSON_DEPTH - 1)
    status, body = post_json(app, b'{"inputs": ' + nested + b"}")
    assert status == 422 and "inputs" in body["error"]["details"]


@pytest.mark.parametrize(
    ("number", "status"),
    [
        (b"9" * 20, 422),  # over 64 bits: simdjson's BIGINT_ERROR (a RuntimeError) was a 500
        (b"9" * 5000, 400),  # over Python's 4300-digit limit for int(): not read at all
    ],
)
def test_integers_simdjson_cannot_hold(app: Flask, number: bytes, status: int) -> None:
    row = b", ".join([number] + [b"0"] * 783)
    got, body = post_json(app, b'{"inputs": [[' + row + b"]]}")
    assert got == status


@pytest.mark.parametrize("value", [1e308, -1e308, 3.5e38])
def test_numbers_beyond_float32(app: Flask, value: float) -> None:
    """The cast to float32 warned "overflow encountered in cast" (a 500 with warnings as
    errors, log noise without); such a number is refused as not finite."""
    for extra in ({}, {"pixel_range": "0-255"}):
        status, body = post_json(app, encode({"inputs": [[value] + ROW[1:]], **extra}))
        assert status == 422 and body["error"]["details"]["inputs"] == [
            "Must not contain NaN or infinite values."
        ]


def test_lone_surrogate_echoed_in_an_error(app: Flask) -> None:
    """json.loads reads "\\ud800"; the unknown-field error names it and orjson refused to write
    it: the error handler itself failed -> 500. Now it is written as "?"."""
    status, body = post_json(app, b'{"inputs": [[0]], "\\ud800": 1}')
    assert status == 422 and "?" in body["error"]["details"]


def test_batch_limit_is_the_app_setting(app: Flask) -> None:
    """(The app's own limit, which the generated bodies stay under or just over.)"""
    status, _ = post_json(app, encode({"inputs": [ROW] * (TEST_MAX_BATCH + 1)}))
    assert status == 422


@pytest.mark.parametrize("body", [b'{"\\u0000": null}', b'{"a\\u0000b": 1, "inputs": [[0]]}'])
def test_key_holding_nul(app: Flask, body: bytes) -> None:
    """simdjson lists such a key but cannot look it up: KeyError -> 500 (found by Hypothesis)."""
    status, _ = post_json(app, body)
    assert status == 422
