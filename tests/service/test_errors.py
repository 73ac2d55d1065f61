"""The error contract through the Flask test client: every mistake, one JSON shape, never 500."""

from __future__ import annotations

import re
from typing import Any

import jsonschema
import pytest
from error_contract import CASES, Case, assert_error_shape
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.exceptions import HTTPException, InternalServerError

from service.errors import APIError, StartupError, error_response


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_error_contract(client: FlaskClient, case: Case) -> None:
    response = client.open(case.path, method=case.method, data=case.body, headers=case.headers)
    assert_error_shape(response.status_code, response.content_type, response.get_json(), case)


def test_case_ids_are_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))


def test_405_names_the_allowed_methods(client: FlaskClient) -> None:
    response = client.get("/v1/models/mnist/accuracy")
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]


def test_validation_details_are_marshmallow_messages(client: FlaskClient) -> None:
    response = client.post("/predict", json={"inputs": [[0.0] * 10]})
    details = response.get_json()["error"]["details"]
    assert list(details) == ["inputs"]
    assert details["inputs"] == ["Each input must be 28x28 nested lists or 784 numbers; got 10 numbers."]


def test_an_image_error_names_the_image(client: FlaskClient) -> None:
    import base64

    from service_testkit import drawn_digit, png_bytes

    good = base64.b64encode(png_bytes(drawn_digit("1"))).decode()
    response = client.post("/predict", json={"images": [good, good, "aGVsbG8="]})
    assert response.status_code == 422
    assert response.get_json()["error"]["details"] == {
        "images": {"2": ["not a PNG, JPEG, GIF, BMP or WebP image"]}
    }


@pytest.fixture
def failing_app(settings: Any) -> Flask:
    """The real app plus routes that fail the ways a bug would."""
    from service import create_app

    app = create_app(settings)

    @app.get("/_test/bug")
    def bug() -> None:
        raise RuntimeError("a bug")

    @app.get("/_test/abort")
    def abort_500() -> None:
        raise InternalServerError()

    @app.get("/_test/domain")
    def domain() -> None:
        raise APIError("a teapot refused", {"why": ["tea"]})

    return app


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/_test/bug", 500, "internal_error"),
        ("/_test/abort", 500, "internal_error"),
        ("/_test/domain", 400, "bad_request"),
    ],
)
def test_server_faults_use_the_same_shape(
    failing_app: Flask, path: str, status: int, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    response = failing_app.test_client().get(path)
    body = response.get_json()
    assert (response.status_code, body["error"]["code"]) == (status, code)
    assert body["error"]["status"] == status
    if path == "/_test/bug":
        assert "a bug" not in response.get_data(as_text=True)  # no internals leak out
        assert "unhandled error" in caplog.text


def test_error_response_writes_integer_keys() -> None:
    response = error_response(422, "validation_error", "bad", {"images": {0: ["x"]}})
    assert response.get_json()["error"]["details"] == {"images": {"0": ["x"]}}


def test_startup_error_is_not_an_api_error() -> None:
    assert not issubclass(StartupError, APIError)


#: Errors of the protocols that answer {"error": "..."}, beside the v1 contract above.
_JSON = {"Content-Type": "application/json"}
PLAIN_CASES = [
    Case("v2-unknown-model", "GET", "/v2/models/nope", status=404),
    Case("v2-malformed", "POST", "/v2/models/mnist/infer", b"{", _JSON, 400),
    Case("tfserving-unknown-model", "POST", "/v1/models/nope:predict", b'{"instances": []}', _JSON, 404),
    Case("tfserving-malformed", "POST", "/v1/models/mnist:predict", b"{", _JSON, 400),
    Case("tfserving-explain-bad", "POST", "/v1/models/mnist:explain", b'{"instances": "x"}', _JSON, 400),
    Case("tfserving-metadata-unknown", "GET", "/v1/models/nope/metadata", status=404),
    Case("tfserving-metadata-colon", "GET", "/v1/models/mnist/versions/a:b/metadata", status=404),
]
_RULE_ARGUMENT = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


@pytest.mark.parametrize("case", CASES + PLAIN_CASES, ids=[c.id for c in CASES + PLAIN_CASES])
def test_each_error_matches_the_schema_the_document_gives_it(
    client: FlaskClient, app: Flask, case: Case
) -> None:
    """One shape per route (issue 22): every error answer of a documented route has a status its
    operation lists, and a body that validates against that response's schema. (Routes that
    are not served, 404 and 405, have no operation.)"""
    document = client.get("/openapi.json").get_json()
    response = client.open(case.path, method=case.method, data=case.body, headers=case.headers)
    status = case.status
    assert response.status_code == status, response.get_data()
    try:
        rule, _ = app.url_map.bind("localhost").match(case.path, method=case.method, return_rule=True)
    except HTTPException:
        return  # not a route: nothing documents it
    rule_path = _RULE_ARGUMENT.sub(r"{\1}", rule.rule)  # type: ignore[union-attr]
    documented = document["paths"][rule_path][case.method.lower()]["responses"]
    assert str(status) in documented, (rule_path, status, sorted(documented))
    schema = documented[str(status)]["content"]["application/json"]["schema"]
    jsonschema.validate(response.get_json(), {**schema, "components": document["components"]})
