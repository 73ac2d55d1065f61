"""CORS (service/cors.py): off by default; for listed origins, the headers a browser needs on
answers, errors and preflights, with auth on; checked through the test client here and through
gunicorn in tests/integration/test_cors_gunicorn.py."""

from __future__ import annotations

import dataclasses

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service import create_app
from service.settings import Settings, SettingsError

ORIGIN = "https://app.example.com"
OTHER = "https://evil.example.net"
TOKEN = "cors-test-token"
PREFLIGHT = {
    "Origin": ORIGIN,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type, inference-header-content-length",
}


@pytest.fixture(scope="module")
def cors_app(settings: Settings) -> Flask:
    return create_app(
        dataclasses.replace(settings, cors_origins=(ORIGIN, "http://localhost:3000"), auth_token=TOKEN)
    )


@pytest.fixture
def cors(cors_app: Flask) -> FlaskClient:
    return cors_app.test_client()


def test_origins_from_the_environment() -> None:
    assert Settings.from_env({}).cors_origins == ()
    assert Settings.from_env({"CORS_ORIGINS": ""}).cors_origins == ()  # set but empty: off
    assert Settings.from_env({"CORS_ORIGINS": f" {ORIGIN}, HTTP://LocalHost:3000 ,"}).cors_origins == (
        ORIGIN,
        "http://localhost:3000",
    )
    assert Settings.from_env({"CORS_ORIGINS": "*"}).cors_origins == ("*",)


@pytest.mark.parametrize(
    "value",
    [
        "app.example.com",
        "https://app.example.com/",
        "https://app.example.com/path",
        "null",
        "ftp://x.example",
    ],
)
def test_a_value_that_is_not_an_origin_stops_start_up(value: str) -> None:
    with pytest.raises(SettingsError, match="^CORS_ORIGINS: .* is not an origin"):
        Settings.from_env({"CORS_ORIGINS": f"{ORIGIN},{value}"})


def test_off_by_default(client: FlaskClient) -> None:
    response = client.get("/v1/models", headers={"Origin": ORIGIN})
    assert not any(h.startswith("Access-Control-") for h, _ in response.headers)
    preflight = client.options("/v2/models/mnist/infer", headers=PREFLIGHT)
    assert "Access-Control-Allow-Origin" not in preflight.headers


def test_a_listed_origin_may_read_answers_and_errors(cors: FlaskClient) -> None:
    for response in (
        cors.get("/v1/models", headers={"Origin": ORIGIN, "Authorization": f"Bearer {TOKEN}"}),
        cors.get("/v1/models", headers={"Origin": ORIGIN}),  # 401: the page must read it too
        cors.post("/v2/models/mnist/infer", headers={"Origin": ORIGIN}),
        cors.get("/v2/nothing-here", headers={"Origin": ORIGIN}),
        cors.get("/healthz", headers={"Origin": ORIGIN}),
    ):
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert "Origin" in response.headers["Vary"]
        exposed = response.headers["Access-Control-Expose-Headers"]
        assert "X-Request-ID" in exposed and "Inference-Header-Content-Length" in exposed
        assert "Access-Control-Allow-Credentials" not in response.headers


def test_another_origin_gets_no_cors_headers(cors: FlaskClient) -> None:
    response = cors.get("/healthz", headers={"Origin": OTHER})
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Origin" in response.headers["Vary"]  # caches must not serve it to the listed one
    assert (
        "Access-Control-Allow-Origin"
        not in cors.options("/v2/models/mnist/infer", headers={**PREFLIGHT, "Origin": OTHER}).headers
    )


@pytest.mark.parametrize(
    "path,method",
    [
        ("/v2/models/mnist/infer", "POST"),
        ("/v1/models/mnist/predict", "POST"),
        ("/predict", "POST"),
        ("/v2/models/mnist", "GET"),
    ],
)
def test_preflight_answers_without_a_token(cors: FlaskClient, path: str, method: str) -> None:
    response = cors.options(path, headers={**PREFLIGHT, "Access-Control-Request-Method": method})
    assert response.status_code == 200
    headers = response.headers
    assert headers["Access-Control-Allow-Origin"] == ORIGIN
    assert method in headers["Access-Control-Allow-Methods"]
    allowed = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
    assert {
        "authorization",
        "content-type",
        "x-request-id",
        "inference-header-content-length",
        "content-encoding",
    } <= allowed
    assert int(headers["Access-Control-Max-Age"]) > 0


def test_any_origin(settings: Settings) -> None:
    client = create_app(dataclasses.replace(settings, cors_origins=("*",))).test_client()
    response = client.get("/healthz", headers={"Origin": OTHER})
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Vary" not in response.headers
