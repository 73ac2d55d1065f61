"""Request bodies -> payload dicts: JSON parsing rules and the content types."""

from __future__ import annotations

import io
import json

import pytest
from flask import Flask, request

from service.errors import InvalidJSON, UnsupportedMediaType
from service.inputs import loads_json, request_payload


def test_plain_json() -> None:
    assert loads_json(b'{"inputs": [[0.5, 1]], "preprocess": false}') == {
        "inputs": [[0.5, 1]], "preprocess": False}


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_python_writes_are_read_not_refused(text: str) -> None:
    """So the validator can answer 422 "must be finite" instead of 400 "not JSON"."""
    value = loads_json(f'{{"inputs": [[{text}]]}}'.encode())["inputs"][0][0]
    assert value != value or abs(value) == float("inf")


def test_booleans_inside_arrays_become_null_but_options_stay_booleans() -> None:
    body = json.dumps({"inputs": [[0.5, True], [False, 1]], "preprocess": False,
                       "nested": {"flag": True, "list": [True]}}).encode()
    assert loads_json(body) == {"inputs": [[0.5, None], [None, 1]], "preprocess": False,
                                "nested": {"flag": True, "list": [None]}}


def test_a_true_inside_a_string_changes_nothing() -> None:
    body = b'{"images": ["true+false/base64=="], "preprocess": true}'
    assert loads_json(body) == {"images": ["true+false/base64=="], "preprocess": True}


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
    data = {"a": (io.BytesIO(b"first"), "1.png"), "b": [(io.BytesIO(b"second"), "2.png"),
                                                        (io.BytesIO(b"third"), "3.png")],
            "labels": "1,2,3"}
    with bare_app.test_request_context("/", method="POST", data=data,
                                       content_type="multipart/form-data"):
        assert request_payload(request) == {"labels": "1,2,3",
                                            "images": [b"first", b"second", b"third"]}


def test_raw_image_body_with_query_options(bare_app: Flask) -> None:
    with bare_app.test_request_context("/?preprocess=false&labels=3", method="POST",
                                       data=b"\x89PNG...", content_type="image/png"):
        assert request_payload(request) == {"preprocess": "false", "labels": "3",
                                            "images": [b"\x89PNG..."]}


def test_json_with_a_charset_parameter_is_json(bare_app: Flask) -> None:
    with bare_app.test_request_context("/", method="POST", data=b'{"a": 1}',
                                       content_type="application/json; charset=utf-8"):
        assert request_payload(request) == {"a": 1}


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "image/tiff",
                                          "application/x-www-form-urlencoded"])
def test_other_content_types_are_415(bare_app: Flask, content_type: str) -> None:
    with bare_app.test_request_context("/", method="POST", data=b"x",
                                       content_type=content_type):
        with pytest.raises(UnsupportedMediaType) as info:
            request_payload(request)
        assert content_type in info.value.message
