"""Request bodies -> payload dicts: JSON parsing rules and the content types."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from flask import Flask, request
from flask.testing import FlaskClient
from gunicorn.http.errors import ChunkMissingTerminator, InvalidChunkSize, NoMoreData
from werkzeug.exceptions import RequestEntityTooLarge

from service.errors import BodyNotReceived, InvalidJSON, UnsupportedMediaType
from service.inputs import JsonArray, loads_json, read_body, request_payload


def test_inputs_stay_unconverted_and_the_rest_becomes_python() -> None:
    payload = loads_json(b'{"inputs": [[0.5, 1]], "preprocess": false, "labels": [3]}')
    assert isinstance(payload["inputs"], JsonArray)
    assert payload["inputs"].to_list() == [[0.5, 1]]
    assert (payload["preprocess"], payload["labels"]) == (False, [3])


@pytest.mark.parametrize(
    "body,brackets",
    [
        (b'{"inputs": [[0.5, 1], [0, 0]]}', 3),
        (b'{"labels": [[0, 1], [1, 0]], "inputs": [[0.5, 1], [0, 0]]}', 3),
        (b'{"inputs": [[[0.5], [1]]], "loss": "mean_squared_error"}', 4),
        (b'{"inputs": [[0.5, [1]]]}', 3),
        (b'{"inputs": [[0.5]], "loss": "a[b"}', -1),
        (b'{"inputs": [[0.5]], "x[": 1}', -1),
        (b'{"inputs": [[0.5]], "loss": "\\u005b"}', -1),
        (
            b'{"inputs": [' + b",".join([b"[" + b"0.0," * 783 + b"0.0]"] * 30) + b'], "labels": [1]}',
            31,
        ),  # over 64 KiB: counted with numpy
    ],
)
def test_brackets_left_for_the_inputs(body: bytes, brackets: int) -> None:
    """The count PixelBatch compares with the shape it sees; -1 when strings hold a '['."""
    assert loads_json(body)["inputs"].brackets == brackets


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_python_writes_are_read_not_refused(text: str) -> None:
    """So the validator can answer 422 "must be finite" instead of 400 "not JSON"."""
    value = loads_json(f'{{"inputs": [[{text}]]}}'.encode())["inputs"][0][0]
    assert value != value or abs(value) == float("inf")


@pytest.mark.parametrize("lenient", [False, True], ids=["simdjson", "json-fallback"])
def test_booleans_inside_arrays_become_null_but_options_stay_booleans(lenient: bool) -> None:
    payload = {
        "inputs": [[0.5, True], [False, 1]],
        "preprocess": False,
        "nested": {"flag": True, "list": [True]},
        "labels": [True, 0],
    }
    if lenient:
        payload["force_fallback"] = float("nan")
    parsed = loads_json(json.dumps(payload).encode())
    inputs = parsed["inputs"]
    assert (inputs.to_list() if isinstance(inputs, JsonArray) else inputs) == [[0.5, None], [None, 1]]
    assert parsed["preprocess"] is False
    assert parsed["nested"] == {"flag": True, "list": [None]}
    assert parsed["labels"] == [None, 0]


def test_top_level_values_other_than_objects() -> None:
    assert loads_json(b"[1, true]") == [1, None]
    assert loads_json(b'"x"') == "x"


@pytest.mark.parametrize("body", [b"", b"{", b"[1, 2", b"{'a': 1}", b"\xff", b"nul"])
def test_malformed_json_is_a_400_naming_the_problem(body: bytes) -> None:
    with pytest.raises(InvalidJSON) as info:
        loads_json(body)
    assert info.value.status == 400
    assert info.value.message.startswith("the body is not valid JSON")


@pytest.fixture
def bare_app() -> Flask:
    return Flask(__name__)


def test_multipart_collects_every_file_in_order(bare_app: Flask) -> None:
    data = {
        "a": (io.BytesIO(b"first"), "1.png"),
        "b": [(io.BytesIO(b"second"), "2.png"), (io.BytesIO(b"third"), "3.png")],
        "labels": "1,2,3",
    }
    with bare_app.test_request_context("/", method="POST", data=data, content_type="multipart/form-data"):
        assert request_payload(request) == {"labels": "1,2,3", "images": [b"first", b"second", b"third"]}


def test_raw_image_body_with_query_options(bare_app: Flask) -> None:
    with bare_app.test_request_context(
        "/?preprocess=false&labels=3", method="POST", data=b"\x89PNG...", content_type="image/png"
    ):
        assert request_payload(request) == {"preprocess": "false", "labels": "3", "images": [b"\x89PNG..."]}


def test_json_with_a_charset_parameter_is_json(bare_app: Flask) -> None:
    with bare_app.test_request_context(
        "/", method="POST", data=b'{"a": 1}', content_type="application/json; charset=utf-8"
    ):
        assert request_payload(request) == {"a": 1}


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/xml", "image/tiff", "application/x-www-form-urlencoded"]
)
def test_other_content_types_are_415(bare_app: Flask, content_type: str) -> None:
    with bare_app.test_request_context("/", method="POST", data=b"x", content_type=content_type):
        with pytest.raises(UnsupportedMediaType) as info:
            request_payload(request)
        assert content_type in info.value.message


@pytest.mark.parametrize("content_type", ["application/json", "multipart/form-data"])
def test_query_options_beside_a_body_that_has_room_for_them_are_refused(
    app: Flask, content_type: str
) -> None:
    """The document's query parameters are for raw image bodies; beside JSON or a form they
    would be ignored, so a client that puts them there hears so (found by schemathesis)."""
    client = app.test_client()
    body = {"inputs": [[0.0] * 784]}
    answer = (
        client.post("/predict?preprocess=nope", json=body)
        if content_type == "application/json"
        else client.post("/predict?preprocess=false", data={"images": (io.BytesIO(b"x"), "x.png")})
    )
    assert answer.status_code == 422
    error = answer.get_json()["error"]
    assert error["code"] == "validation_error" and "preprocess" in error["details"]
    assert client.post("/predict?", json=body).status_code == 200  # an empty query is no option


@pytest.mark.parametrize("terminated", [False, True], ids=["werkzeug", "server-terminated"])
def test_the_body_is_read_whole_and_a_body_over_the_limit_is_413(bare_app: Flask, terminated: bool) -> None:
    """Under gunicorn (``wsgi.input_terminated``) a body with a Content-Length within the limit
    is read straight from the server's stream; either way the body is the same, and one over
    the limit is refused."""
    limit = 64
    bare_app.config["MAX_CONTENT_LENGTH"] = limit
    extra = {"wsgi.input_terminated": True} if terminated else {}
    for body in (b"", b"x" * 10, b"y" * limit):
        with bare_app.test_request_context("/", method="POST", data=body, environ_overrides=extra):
            assert read_body(request) == body
    too_long = bare_app.test_request_context(
        "/", method="POST", data=b"z" * (limit + 1), environ_overrides=extra
    )
    with too_long, pytest.raises(RequestEntityTooLarge):
        read_body(request)


@pytest.mark.parametrize("terminated", [False, True], ids=["werkzeug", "server-terminated"])
def test_a_body_shorter_than_its_content_length_is_a_400_and_one_warning(
    bare_app: Flask, terminated: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """The client stopped early: 400 ``body_not_received``, logged as a warning, no traceback."""
    extra = {"CONTENT_LENGTH": "100", **({"wsgi.input_terminated": True} if terminated else {})}
    context = bare_app.test_request_context("/", method="POST", data=b"x" * 10, environ_overrides=extra)
    with context, pytest.raises(BodyNotReceived) as raised:
        read_body(request)
    assert (raised.value.status, raised.value.code) == (400, "body_not_received")
    warnings = [r for r in caplog.records if r.name == "service.errors"]
    assert [r.levelname for r in warnings] == ["WARNING"] and warnings[0].exc_info is None


class _BrokenStream(io.RawIOBase):
    """A server's input stream that fails as gunicorn's does on a malformed chunked body."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        InvalidChunkSize(b"ZZ"),
        ChunkMissingTerminator(b"XX"),
        NoMoreData(b""),
        ConnectionResetError(104, "reset"),
    ],
    ids=["chunk-size", "chunk-terminator", "no-more-data", "reset"],
)
@pytest.mark.parametrize(
    "path,shape",
    [("/predict", "v1"), ("/v2/models/mnist/infer", "plain"), ("/v1/models/mnist:predict", "plain")],
    ids=["v1", "v2", "tfserving"],
)
def test_every_protocol_answers_a_body_that_did_not_arrive_with_its_400(
    client: FlaskClient, error: BaseException, path: str, shape: str
) -> None:
    """Where the body is read, once for every protocol: each route's own shape."""
    for content_type in (
        ("application/json", "multipart/form-data; boundary=b") if shape == "v1" else ("application/json",)
    ):
        answer = client.post(
            path,
            headers={"Content-Type": content_type, "Transfer-Encoding": "chunked"},
            environ_overrides={"wsgi.input": _BrokenStream(error), "wsgi.input_terminated": True},
        )
        assert answer.status_code == 400, answer.get_data()
        body = answer.get_json()["error"]
        if shape == "v1":
            assert body["code"] == "body_not_received" and body["status"] == 400
        else:
            assert isinstance(body, str) and "body" in body
