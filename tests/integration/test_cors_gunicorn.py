"""CORS through a real gunicorn: a browser's preflight, then its request, from a listed origin
and from another; the rules themselves are tested through the test client in
tests/service/test_cors.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from gunicorn_testkit import gunicorn, stop, wait_ready

ORIGIN = "https://app.example.com"
OTHER = "https://evil.example.net"
TOKEN = "cors-test-token"
PREFLIGHT = {
    "Origin": ORIGIN,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type, inference-header-content-length",
}


# --- a real gunicorn ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(
    server_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    proc = gunicorn({**server_env, "CORS_ORIGINS": ORIGIN, "AUTH_TOKEN": TOKEN}, log)
    try:
        yield wait_ready(proc, log)
    finally:
        assert stop(proc) == 0


def test_a_browser_s_preflight_then_request_over_http(server: str) -> None:
    url = f"{server}/v2/models/mnist/infer"
    preflight = requests.options(url, headers=PREFLIGHT, timeout=5)
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    body = {"inputs": [{"name": "input", "shape": [1, 784], "datatype": "UINT8", "data": [0] * 784}]}
    answer = requests.post(
        url, json=body, timeout=5, headers={"Origin": ORIGIN, "Authorization": f"Bearer {TOKEN}"}
    )
    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN
    other = requests.post(
        url, json=body, timeout=5, headers={"Origin": OTHER, "Authorization": f"Bearer {TOKEN}"}
    )
    assert "Access-Control-Allow-Origin" not in other.headers
