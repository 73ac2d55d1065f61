"""Bearer-token auth against a real gunicorn (and browser) with a token file; the settings, the
routes and the 401/403 answers through the test client are in tests/service/test_auth.py."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from gunicorn_testkit import START_TIMEOUT, gunicorn, stop, wait_ready

TOKEN = "s3cret-token-for-tests"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


# --- a real gunicorn ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("secrets") / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def server(
    server_env: dict[str, str],
    token_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    proc = gunicorn({**server_env, "AUTH_TOKEN_FILE": str(token_file)}, log)
    try:
        yield wait_ready(proc, log)
    finally:
        assert stop(proc) == 0
        assert "Traceback" not in log.read_text()


def test_over_http(server: str) -> None:
    x = {"inputs": [[0.0] * 784]}
    assert requests.get(f"{server}/healthz", timeout=5).status_code == 200
    assert requests.get(f"{server}/v2/health/ready", timeout=5).status_code == 200
    assert requests.get(f"{server}/openapi.json", timeout=5).status_code == 200
    refused = requests.post(f"{server}/predict", json=x, timeout=5)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthorized"
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert requests.post(f"{server}/predict", json=x, headers=BEARER, timeout=5).status_code == 200
    v2 = requests.post(f"{server}/v2/models/mnist/infer", json={}, timeout=5)
    assert (v2.status_code, list(v2.json())) == (401, ["error"])
    admin = requests.post(f"{server}/v1/admin/reload", timeout=5)
    assert admin.status_code in (401, 404)  # 404 until the admin blueprint is there


def test_the_demo_page_loads_without_the_token(server: str) -> None:
    page = requests.get(f"{server}/", timeout=5)
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    for asset in ("static/demo/demo.js", "static/demo/demo.css"):
        assert requests.get(f"{server}/{asset}", timeout=5).status_code == 200
    assert requests.get(f"{server}/v1/models", timeout=5).status_code == 401


def test_a_missing_token_file_stops_gunicorn_with_one_line(
    server_env: dict[str, str],
    tmp_path: Path,
) -> None:
    log = tmp_path / "gunicorn.log"
    proc = gunicorn({**server_env, "AUTH_TOKEN_FILE": str(tmp_path / "missing")}, log)
    try:
        code = proc.wait(timeout=START_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    output = log.read_text()
    assert code != 0
    assert [line for line in output.splitlines() if line.startswith("error:")] == [
        f"error: AUTH_TOKEN_FILE {tmp_path / 'missing'}: cannot read it (No such file or directory)"
    ]
    assert "Traceback" not in output


def test_the_demo_in_a_browser_asks_for_the_token_and_then_works(server: str) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).is_file():
        pytest.skip(f"no Chromium at {chromium}")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        try:
            page = browser.new_page()
            page.goto(server + "/")
            sync_api.expect(page.locator("#error")).to_contain_text("This server needs an access token")
            page.fill("#token", TOKEN)
            page.press("#token", "Enter")  # a change event: the models are asked for again
            sync_api.expect(page.locator("#model")).to_be_enabled()
            sync_api.expect(page.locator("#model")).to_have_value("mnist")
            sync_api.expect(page.locator("#error")).to_be_hidden()
        finally:
            browser.close()
