"""A real gunicorn on a loopback port: the same contract over HTTP, and start-up failures."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from error_contract import CASES, Case, assert_error_shape
from flask.testing import FlaskClient
from gunicorn_testkit import REPO, failed_start, gunicorn, stop, wait_ready
from service_testkit import TEST_MAX_BATCH, TEST_MAX_REQUEST_BYTES, drawn_digit, png_bytes


@pytest.fixture(scope="module")
def server(server_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    proc = gunicorn(server_env, log)
    try:
        yield wait_ready(proc, log)
    finally:
        if proc.poll() is None:
            assert stop(proc) == 0, log.read_text()
        assert "Traceback" not in log.read_text()


# --- the contract over HTTP ---------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_error_contract_over_http(server: str, case: Case) -> None:
    response = requests.request(
        case.method, server + case.path, data=case.body, headers=case.headers, timeout=10
    )
    assert_error_shape(response.status_code, response.headers.get("Content-Type"), response.json(), case)


def test_same_answers_as_the_test_client(server: str, client: FlaskClient) -> None:
    payload = {"inputs": [[0.0] * 784, [0.5] * 784]}
    over_http = requests.post(f"{server}/predict", json=payload, timeout=10)
    assert over_http.status_code == 200
    assert over_http.headers["Content-Type"] == "application/json"
    assert over_http.json() == client.post("/predict", json=payload).get_json()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_large_body_is_read_whole(server: str, client: FlaskClient, chunked: bool) -> None:
    """gunicorn.conf.py reads bodies in larger steps than gunicorn does: same bytes either way."""
    rng = np.random.default_rng(0)
    x = rng.random((TEST_MAX_BATCH, 784)).round(6)
    body = json.dumps({"inputs": x.tolist()}).encode()
    assert 64 * 1024 < len(body) < TEST_MAX_REQUEST_BYTES
    data = (body[i : i + 5000] for i in range(0, len(body), 5000)) if chunked else body
    response = requests.post(
        f"{server}/predict", data=data, timeout=10, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text
    assert response.json() == client.post("/predict", data=body, content_type="application/json").get_json()


def test_image_uploads_over_http(server: str) -> None:
    png = png_bytes(drawn_digit("7"))
    raw = requests.post(
        f"{server}/v1/models/mnist/predict", data=png, headers={"Content-Type": "image/png"}, timeout=10
    ).json()
    form = requests.post(
        f"{server}/accuracy", files=[("image", ("7.png", png, "image/png"))], data={"labels": "7"}, timeout=10
    ).json()
    encoded = requests.post(
        f"{server}/predict", timeout=10, json={"images": [base64.b64encode(png).decode()]}
    ).json()
    assert raw["predictions"][0]["label"] == 7
    assert (form["accuracy"], form["count"]) == (1.0, 1)
    assert encoded["predictions"] == raw["predictions"]


def test_health_models_and_docs_over_http(server: str) -> None:
    assert requests.get(f"{server}/healthz", timeout=5).json() == {"status": "ok"}
    assert requests.get(f"{server}/v1/models", timeout=5).json()["default_model"] == "mnist"
    assert "paths" in requests.get(f"{server}/openapi.json", timeout=5).json()
    assert requests.get(f"{server}/docs", timeout=5).headers["Content-Type"].startswith("text/html")


# --- start-up and shutdown ----------------------------------------------------------------
def _broken_model_dir(tmp_path: Path, model_dir: Path) -> Path:
    (tmp_path / "mnist.npz").write_bytes((model_dir / "mnist.npz").read_bytes()[:500])
    return tmp_path


@pytest.mark.parametrize(
    "env,line",
    [
        ({"MODEL_DIR": "/nonexistent/models"}, "error: MODEL_DIR /nonexistent/models: no such directory"),
        ({"DEFAULT_MODEL": "digits"}, "error: DEFAULT_MODEL 'digits' is not in"),
        ({"MODEL_DIR": "BROKEN"}, "error: {broken}/mnist.npz: "),
        # (not WEB_CONCURRENCY: gunicorn itself parses that one, with a traceback, before us)
        ({"MAX_BATCH_SIZE": "many"}, "error: MAX_BATCH_SIZE must be an integer, got 'many'"),
    ],
    ids=["missing-dir", "missing-default", "broken-model", "bad-setting"],
)
def test_bad_start_exits_non_zero_with_one_line(
    server_env: dict[str, str], model_dir: Path, tmp_path: Path, env: dict[str, str], line: str
) -> None:
    broken = _broken_model_dir(tmp_path, model_dir)
    env = {k: str(broken) if v == "BROKEN" else v for k, v in env.items()}
    _, output, errors = failed_start({**server_env, **env}, tmp_path / "gunicorn.log")
    assert len(errors) == 1, output
    assert errors[0].startswith(line.format(broken=broken)), output
    assert "Traceback" not in output
    assert "Booting worker" not in output  # stopped in the master, before any worker


def test_the_wsgi_module_exits_4_so_gunicorn_stops_instead_of_respawning(tmp_path: Path) -> None:
    """If a model breaks between the master's check and a worker's load (e.g. on HUP)."""
    result = subprocess.run(
        [sys.executable, "-c", "import service.wsgi"],
        cwd=REPO,
        env={**os.environ, "MODEL_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 4
    assert result.stderr.strip().splitlines() == [f"error: MODEL_DIR {tmp_path}: no .npz model files in it"]


def test_sigterm_stops_gracefully(server_env: dict[str, str], tmp_path: Path) -> None:
    log = tmp_path / "gunicorn.log"
    proc = gunicorn(server_env, log)
    try:
        wait_ready(proc, log)
    finally:
        code = stop(proc)
    assert code == 0
    assert "Shutting down: Master" in log.read_text()


def test_no_control_socket(server_env: dict[str, str], tmp_path: Path) -> None:
    """gunicorn 25+ opens an admin socket (scale, reload, stop) by default; the config turns it off."""
    home, runtime = tmp_path / "home", tmp_path / "run"
    home.mkdir()
    runtime.mkdir(mode=0o700)
    log = tmp_path / "gunicorn.log"
    proc = gunicorn({**server_env, "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)}, log)
    try:
        wait_ready(proc, log)
        deadline = time.monotonic() + 3  # gunicorn opens it in a thread once the workers are up
        while not (opened := sorted(str(p) for p in [*home.rglob("*"), *runtime.rglob("*")])):
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        stop(proc)
    assert opened == [], log.read_text()
