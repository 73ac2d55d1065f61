"""Bearer-token auth (service/auth.py): settings, which routes need the token, and the 401/403
answers in each API's error shape. A real gunicorn (and browser) with a token file:
tests/integration/test_auth_gunicorn.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from flask import Blueprint, Flask
from flask.testing import FlaskClient

from service import create_app
from service.settings import Settings, SettingsError

TOKEN = "s3cret-token-for-tests"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
#: Every route that answers without the token when one is set (rules as Flask writes them).
OPEN_RULES = {
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/docs/",
    "/docs/<path:path>",
    "/",
    "/static/<path:filename>",
    "/v2/health/live",
    "/v2/health/ready",
    "/v2/models/<name>/ready",
    "/v2/models/<name>/versions/<version>/ready",
}


def with_admin(app: Flask) -> Flask:
    """The app with an ``admin`` blueprint: the service's own, or a stand-in until it is there."""
    if "admin" not in app.blueprints:
        stand_in = Blueprint("admin", __name__)
        stand_in.add_url_rule("/v1/admin/reload", "reload", lambda: {"reloaded": True}, methods=["POST"])
        app.register_blueprint(stand_in)
    return app


@pytest.fixture(scope="module")
def auth_app(settings: Settings) -> Flask:
    return with_admin(create_app(dataclasses.replace(settings, auth_token=TOKEN)))


@pytest.fixture
def auth_client(auth_app: Flask) -> FlaskClient:
    return auth_app.test_client()


@pytest.fixture(scope="module")
def open_app(settings: Settings) -> Flask:
    return with_admin(create_app(settings))


def _fill(rule: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        rule = rule.replace(f"<{key}>", value).replace(f"<path:{key}>", value)
    return rule


def _routes(app: Flask) -> list[tuple[str, str, str]]:
    """(rule, method, url) for every route of the app."""
    version = app.test_client().get("/v1/models/mnist", headers=BEARER).get_json()["version"]
    routes = []
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            routes.append(
                (
                    rule.rule,
                    method,
                    _fill(
                        rule.rule,
                        {
                            "name": "mnist",
                            "version": version,
                            "filename": "demo/demo.js",
                            "path": "swagger-ui.css",
                        },
                    ),
                )
            )
    return routes


# --- settings -----------------------------------------------------------------------------
def test_token_from_the_environment_or_a_file(tmp_path: Path) -> None:
    assert Settings.from_env({}).token is None
    assert Settings.from_env({"AUTH_TOKEN": " abc "}).token == "abc"
    secret = tmp_path / "token"
    secret.write_text("from-a-file\n")  # echo adds the newline
    settings = Settings.from_env({"AUTH_TOKEN_FILE": str(secret)})
    assert settings.token == "from-a-file"
    assert "from-a-file" not in repr(settings)
    assert TOKEN not in repr(Settings(auth_token=TOKEN))


@pytest.mark.parametrize(
    "env,message",
    [
        ({"AUTH_TOKEN": ""}, "AUTH_TOKEN is set but empty"),
        ({"AUTH_TOKEN": "two words"}, "AUTH_TOKEN must be printable ASCII without spaces"),
        ({"AUTH_TOKEN": "naïve"}, "AUTH_TOKEN must be printable ASCII without spaces"),
        ({"AUTH_TOKEN": "a", "AUTH_TOKEN_FILE": "FILE"}, "set AUTH_TOKEN or AUTH_TOKEN_FILE, not both"),
        (
            {"AUTH_TOKEN_FILE": "/nonexistent/token"},
            "AUTH_TOKEN_FILE /nonexistent/token: cannot read it (No such file or directory)",
        ),
        ({"AUTH_TOKEN_FILE": "EMPTY"}, "AUTH_TOKEN_FILE is empty"),
        ({"AUTH_TOKEN_FILE": "DIR"}, "AUTH_TOKEN_FILE DIR: cannot read it (Is a directory)"),
    ],
    ids=["empty", "space", "not-ascii", "both", "missing-file", "empty-file", "directory"],
)
def test_bad_token_settings_stop_start_up_with_one_line(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    (tmp_path / "file").write_text("tok")
    (tmp_path / "empty").write_text("\n")
    paths = {"FILE": str(tmp_path / "file"), "EMPTY": str(tmp_path / "empty"), "DIR": str(tmp_path)}
    env = {k: paths.get(v, v) for k, v in env.items()}
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert str(info.value).startswith(message.replace("DIR", str(tmp_path)))
    assert "\n" not in str(info.value)


# --- which routes need it -----------------------------------------------------------------
def test_every_route_needs_the_token_unless_it_is_open(auth_client: FlaskClient, auth_app: Flask) -> None:
    routes = _routes(auth_app)
    assert {"/v2/models/<name>/infer", "/predict", "/v1/admin/reload"} <= {r for r, _, _ in routes}
    for rule, method, url in routes:
        anonymous = auth_client.open(url, method=method, json={})
        authorized = auth_client.open(url, method=method, json={}, headers=BEARER)
        anonymous.close()  # (a static file's response holds the file open)
        authorized.close()
        assert authorized.status_code not in (401, 403), (rule, method, authorized.get_json())
        if rule in OPEN_RULES:
            assert anonymous.status_code != 401, (rule, method)
        else:
            assert anonymous.status_code == 401, (rule, method, anonymous.status_code)
            assert anonymous.headers["WWW-Authenticate"] == 'Bearer realm="digits-serving"'


def test_without_a_token_everything_but_admin_is_open(open_app: Flask) -> None:
    client = open_app.test_client()
    for rule, method, url in _routes(open_app):
        response = client.open(url, method=method, json={})
        response.close()
        if rule.startswith("/v1/admin/"):
            assert response.status_code == 403
            assert response.get_json()["error"] == {
                "status": 403,
                "code": "forbidden",
                "message": "admin endpoints are disabled: set AUTH_TOKEN (or AUTH_TOKEN_FILE)",
            }
        else:
            assert response.status_code not in (401, 403), (rule, method)


@pytest.mark.parametrize(
    "header,invalid",
    [
        (None, False),
        ("", False),
        ("Bearer", False),
        ("Bearer ", False),
        (f"Basic {TOKEN}", False),
        (f"Token {TOKEN}", False),
        ("Bearer wrong", True),
        (f"Bearer {TOKEN}x", True),
        (f"Bearer {TOKEN[:-1]}", True),
        (f"Bearer {TOKEN.upper()}", True),
        ("Bearer naïve", True),
    ],
)
def test_401_in_each_api_s_error_shape(auth_client: FlaskClient, header: str | None, invalid: bool) -> None:
    headers = {} if header is None else {"Authorization": header}
    challenge = 'Bearer realm="digits-serving"' + (', error="invalid_token"' if invalid else "")
    v1 = auth_client.post("/predict", json={"inputs": [[0.0] * 784]}, headers=headers)
    assert v1.status_code == 401
    assert v1.headers["WWW-Authenticate"] == challenge
    error = v1.get_json()["error"]
    assert (error["status"], error["code"]) == (401, "unauthorized")
    assert "bearer token" in error["message"]
    v2 = auth_client.post("/v2/models/mnist/infer", json={}, headers=headers)
    assert v2.status_code == 401
    assert v2.headers["WWW-Authenticate"] == challenge
    assert set(v2.get_json()) == {"error"} and "bearer token" in v2.get_json()["error"]


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_scheme_is_case_insensitive(auth_client: FlaskClient, scheme: str) -> None:
    response = auth_client.get("/v1/models", headers={"Authorization": f"{scheme} {TOKEN}"})
    assert response.status_code == 200


def test_preflights_and_unknown_routes_need_no_token(auth_client: FlaskClient) -> None:
    assert auth_client.options("/v2/models/mnist/infer").status_code == 200
    assert auth_client.options("/v1/admin/reload").status_code == 200
    assert auth_client.get("/v1/nothing-here").status_code == 404
    missing = auth_client.get("/v2/nothing-here")
    assert missing.status_code == 404 and list(missing.get_json()) == ["error"]
    assert auth_client.get("/predict").status_code == 405


def test_admin_with_the_token(auth_client: FlaskClient) -> None:
    assert auth_client.post("/v1/admin/reload").status_code == 401
    assert auth_client.post("/v1/admin/reload", headers=BEARER).status_code == 200
