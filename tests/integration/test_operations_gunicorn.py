"""Versions, hot reload, metrics, request ids and JSON logs against a real gunicorn (2 workers)."""

from __future__ import annotations

import json
import re
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from gunicorn_testkit import failed_start, gunicorn, stop, wait_ready
from prometheus_client.parser import text_string_to_metric_families

from service.metrics import CONFIDENCE_BUCKETS
from training.fileio import atomic_write_bytes

TOKEN = "test-admin-token"
POLL_SECONDS = 0.25
#: How long a change may take to reach every worker: a few polls, on a busy machine.
RELOAD_DEADLINE = 10.0
#: How long until every worker's request numbers are in /metrics (each flushes every second).
FLUSH_DEADLINE = 5.0
ONE_INPUT = {"inputs": [[0.0] * 784]}


# --- fixtures -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server_env(model_dir: Path) -> dict[str, str]:
    return {"MODEL_DIR": str(model_dir), "DEFAULT_MODEL": "mnist", "WEB_CONCURRENCY": "2"}


@pytest.fixture(scope="module")
def weights(model_dir: Path) -> dict[str, bytes]:
    """Two valid, different model files and a truncated one."""
    mnist = (model_dir / "mnist.npz").read_bytes()
    return {"a": mnist, "b": (model_dir / "fashion-mnist.npz").read_bytes(), "corrupt": mnist[:500]}


def put(model_dir: Path, name: str, version: int, data: bytes) -> None:
    """Publish ``name/version/model.npz`` as a deploy should: the file appears whole."""
    atomic_write_bytes(model_dir / name / str(version) / "model.npz", data)


@pytest.fixture(scope="module")
def live_dir(tmp_path_factory: pytest.TempPathFactory, weights: dict[str, bytes]) -> Path:
    directory = tmp_path_factory.mktemp("live-models")
    put(directory, "mnist", 1, weights["a"])
    put(directory, "mnist", 2, weights["a"])
    (directory / "fashion-mnist.npz").write_bytes(weights["b"])
    return directory


class Server:
    def __init__(self, url: str, log: Path, proc: Any) -> None:
        self.url, self.log, self.proc = url, log, proc
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {TOKEN}"

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.http.get(self.url + path, timeout=10, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        # a new connection each time, so gunicorn's workers share the requests
        return requests.post(
            self.url + path,
            timeout=10,
            headers={"Authorization": f"Bearer {TOKEN}", **kwargs.pop("headers", {})},
            **kwargs,
        )

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]

    def pids_of(self, request_ids: set[str]) -> set[int]:
        """The workers that answered these requests, from the JSON access log."""
        return {
            line["pid"]
            for line in self.json_lines()
            if line.get("logger") == "access" and line.get("request_id") in request_ids
        }

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        text = requests.get(self.url + "/metrics", timeout=10).text
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, frozenset(labels.items())), 0.0)

    def metric_becomes(self, value: float, name: str, **labels: str) -> None:
        deadline = time.monotonic() + FLUSH_DEADLINE
        while (seen := self.metric(name, **labels)) != value:
            assert time.monotonic() < deadline, (name, labels, seen, value)
            time.sleep(0.1)


def _serve(env: dict[str, str], log: Path) -> Iterator[Server]:
    proc = gunicorn(env, log)
    try:
        yield Server(wait_ready(proc, log), log, proc)
    finally:
        if proc.poll() is None:
            assert stop(proc) == 0, log.read_text()
        assert "Traceback" not in log.read_text()


@pytest.fixture(scope="module")
def server(
    server_env: dict[str, str], live_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    env = {
        **server_env,
        "MODEL_DIR": str(live_dir),
        "MODEL_POLL_SECONDS": str(POLL_SECONDS),
        "ACCESS_LOG": "1",
        "AUTH_TOKEN": TOKEN,
    }
    yield from _serve(env, tmp_path_factory.mktemp("ops") / "gunicorn.log")


def on_every_worker(
    server: Server,
    send: Callable[[str], requests.Response],
    check: Callable[[requests.Response], bool],
    count: int = 16,
) -> None:
    """Until the deadline: ``count`` requests, 4 at a time, all pass ``check`` and were
    answered by both workers (according to the access log)."""
    deadline = time.monotonic() + RELOAD_DEADLINE
    attempt = 0
    while True:
        attempt += 1
        ids = [f"probe-{attempt}-{i}" for i in range(count)]
        with ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(send, ids))
        if all(check(r) for r in responses):
            time.sleep(0.2)  # the access log line is written after the response
            if len(server.pids_of(set(ids))) == 2:
                return
        if time.monotonic() > deadline:
            pytest.fail(f"not every worker got there: {[r.text[:120] for r in responses]}")
        time.sleep(POLL_SECONDS)


def predict_version(server: Server, name: str) -> Callable[[str], requests.Response]:
    return lambda rid: server.post(
        f"/v1/models/{name}/predict", json=ONE_INPUT, headers={"X-Request-ID": rid}
    )


def answered_by(version: str) -> Callable[[requests.Response], bool]:
    return lambda r: r.status_code == 200 and r.json()["version"] == version


# --- versions -----------------------------------------------------------------------------
def test_newest_version_serves_by_default_and_a_version_can_be_named(server: Server) -> None:
    info = server.get("/v1/models/mnist").json()
    assert (info["version"], info["versions"]) == ("2", ["1", "2"])
    assert server.post("/predict", json=ONE_INPUT).json()["version"] == "2"
    named = server.post("/v1/models/mnist/versions/1/predict", json=ONE_INPUT)
    assert (named.status_code, named.json()["version"]) == (200, "1")
    assert server.get("/v1/models/mnist/versions/1").json()["version"] == "1"


def test_a_flat_file_has_one_version_its_hash(server: Server) -> None:
    info = server.get("/v1/models/fashion-mnist").json()
    assert re.fullmatch(r"[0-9a-f]{12}", info["version"]) and info["sha256"].startswith(info["version"])
    assert info["versions"] == [info["version"]]
    answer = server.post(
        f"/v1/models/fashion-mnist/versions/{info['version']}/accuracy", json={**ONE_INPUT, "labels": [0]}
    )
    assert answer.json()["version"] == info["version"]


def test_unknown_version_is_a_404_listing_the_versions(server: Server) -> None:
    answer = server.post("/v1/models/mnist/versions/7/predict", json=ONE_INPUT)
    assert answer.status_code == 404
    assert answer.json() == {
        "error": {
            "status": 404,
            "code": "version_not_found",
            "message": "model 'mnist' has no version '7'",
            "details": {"available": ["1", "2"]},
        }
    }


# --- hot reload ---------------------------------------------------------------------------
def test_a_new_version_reaches_every_worker(
    server: Server, live_dir: Path, weights: dict[str, bytes]
) -> None:
    put(live_dir, "rolling", 1, weights["a"])
    on_every_worker(server, predict_version(server, "rolling"), answered_by("1"))
    put(live_dir, "rolling", 2, weights["a"])
    on_every_worker(server, predict_version(server, "rolling"), answered_by("2"))
    assert server.metric("digits_model_loads_total", model="rolling") == 4  # 2 files x 2 workers


def test_an_invalid_file_never_replaces_a_serving_model(
    server: Server, live_dir: Path, weights: dict[str, bytes]
) -> None:
    put(live_dir, "guarded", 1, weights["a"])
    on_every_worker(server, predict_version(server, "guarded"), answered_by("1"))
    sha = server.get("/v1/models/guarded").json()["sha256"]
    put(live_dir, "guarded", 2, weights["corrupt"])  # a newer version that fails validation
    put(live_dir, "guarded", 1, weights["corrupt"])  # and the serving file overwritten badly
    deadline = time.monotonic() + RELOAD_DEADLINE
    while server.metric("digits_model_load_failures_total", model="guarded") < 4:
        assert time.monotonic() < deadline, server.metrics()
        time.sleep(POLL_SECONDS)
    on_every_worker(server, predict_version(server, "guarded"), answered_by("1"))
    assert server.get("/v1/models/guarded").json()["sha256"] == sha
    time.sleep(3 * POLL_SECONDS)  # a file that failed is not tried (or counted) again until it changes
    assert server.metric("digits_model_load_failures_total", model="guarded") == 4
    failures = [
        line
        for line in server.json_lines()
        if line.get("event") == "model_load_failed" and line["model"] == "guarded"
    ]
    assert len(failures) == 4 and {f["version"] for f in failures} == {"1", "2"}
    assert all(f["level"] == "error" and "not an .npz file" in f["error"] for f in failures)


def test_admin_reload_answers_with_what_it_did(
    server: Server, live_dir: Path, weights: dict[str, bytes]
) -> None:
    put(live_dir, "admin-reloaded", 1, weights["corrupt"])
    answer = server.post("/v1/admin/reload", headers={"X-Request-ID": "reload-1"})
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["serving"]["mnist"] == {"version": "2", "versions": ["1", "2"]}
    assert "admin-reloaded" not in report["serving"]
    time.sleep(0.2)
    lines = [line for line in server.json_lines() if line.get("request_id") == "reload-1"]
    # if this worker had not seen the file yet, the failure is logged inside the request
    assert {line["logger"] for line in lines} <= {"access", "service.reload"}
    assert [line["status"] for line in lines if line["logger"] == "access"] == [200]


# --- metrics ------------------------------------------------------------------------------
def test_metrics_add_up_across_workers(server: Server) -> None:
    before = server.metrics()
    ids = [f"count-{i}" for i in range(30)]
    with ThreadPoolExecutor(4) as pool:
        answers = list(
            pool.map(
                lambda rid: server.post(
                    "/v1/models/fashion-mnist/predict",
                    json={"inputs": [[0.0] * 784] * 2},
                    headers={"X-Request-ID": rid},
                ),
                ids,
            )
        )
        missing = list(pool.map(lambda rid: server.post("/v1/models/nope/predict", json=ONE_INPUT), range(5)))
    assert {a.status_code for a in answers} == {200} and {m.status_code for m in missing} == {404}
    time.sleep(0.2)
    assert len(server.pids_of(set(ids))) == 2  # both workers answered some
    rule = "/v1/models/<name>/predict"
    key = (
        "digits_http_requests_total",
        frozenset({"endpoint": rule, "model": "fashion-mnist", "status": "200"}.items()),
    )
    server.metric_becomes(before.get(key, 0.0) + 30, key[0], **dict(key[1]))
    time.sleep(1.5)  # and no more than that: another flush
    after = server.metrics()

    def added(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert added("digits_http_requests_total", endpoint=rule, model="fashion-mnist", status="200") == 30
    assert added("digits_http_request_duration_seconds_count", endpoint=rule, model="fashion-mnist") == 30
    assert (
        added("digits_http_request_duration_seconds_bucket", endpoint=rule, model="fashion-mnist", le="+Inf")
        == 30
    )
    assert added("digits_http_requests_total", endpoint=rule, model="", status="404") == 5
    predicted = sum(
        after[key] - before.get(key, 0.0)
        for key in after
        if key[0] == "digits_predictions_total" and ("model", "fashion-mnist") in key[1]
    )
    assert predicted == 60
    assert not any("nope" in str(key) for key in after)  # unknown names never become labels
    # each answer's top probability, in the confidence histogram's bucket for it
    tops = [float(np.float32(max(p["probabilities"]))) for a in answers for p in a.json()["predictions"]]
    assert added("digits_prediction_confidence_count", model="fashion-mnist") == 60
    assert added("digits_prediction_confidence_sum", model="fashion-mnist") == pytest.approx(sum(tops))
    for le in (*CONFIDENCE_BUCKETS, float("inf")):
        label = "+Inf" if le == float("inf") else str(le)
        placed = added("digits_prediction_confidence_bucket", model="fashion-mnist", le=label)
        assert placed == sum(top <= le for top in tops), (le, tops[:2])


def test_in_flight_requests(server: Server) -> None:
    release = threading.Event()

    def slow_body() -> Iterator[bytes]:
        yield b'{"inputs": [['
        release.wait(10)
        yield b",".join([b"0"] * 784) + b"]]}"

    slow = ThreadPoolExecutor(1).submit(
        server.post, "/predict", data=slow_body(), headers={"Content-Type": "application/json"}
    )
    try:
        server.metric_becomes(2, "digits_http_requests_in_flight")  # with /metrics itself
    finally:
        release.set()
    assert slow.result().status_code == 200
    server.metric_becomes(1, "digits_http_requests_in_flight")


# --- request ids and logs -----------------------------------------------------------------
@pytest.mark.parametrize(
    "sent,echoed",
    [
        ("client-id-42", True),
        (None, False),
        ("has space", False),
        ("x" * 129, False),
        ("x" * 128, True),
    ],
    ids=["sane", "none", "space", "too-long", "longest"],
)
def test_request_id_is_echoed_or_generated(server: Server, sent: str | None, echoed: bool) -> None:
    headers = {} if sent is None else {"X-Request-ID": sent}
    for answer in (
        server.post("/predict", json=ONE_INPUT, headers=headers),
        server.post("/predict", data=b"{", headers={**headers, "Content-Type": "application/json"}),
        requests.get(server.url + "/no/such/route", headers=headers, timeout=10),
    ):
        request_id = answer.headers["X-Request-ID"]
        if echoed:
            assert request_id == sent
        else:
            assert re.fullmatch(r"[0-9a-f]{32}", request_id)


def test_access_log_is_json_with_the_request_id(server: Server) -> None:
    server.post("/v1/models/mnist/versions/1/predict", json=ONE_INPUT, headers={"X-Request-ID": "logged-1"})
    server.post("/v1/models/nope/predict", json=ONE_INPUT, headers={"X-Request-ID": "logged-2"})
    time.sleep(0.2)
    lines = {
        line["request_id"]: line
        for line in server.json_lines()
        if line.get("logger") == "access" and line.get("request_id", "").startswith("logged-")
    }
    ok, missing = lines["logged-1"], lines["logged-2"]
    assert (ok["method"], ok["path"], ok["status"], ok["model"], ok["version"]) == (
        "POST",
        "/v1/models/mnist/versions/1/predict",
        200,
        "mnist",
        "1",
    )
    assert ok["duration_ms"] > 0 and ok["time"].endswith("+00:00")
    assert (missing["status"], missing["model"], missing["version"]) == (404, None, None)
    # gunicorn's own lines are JSON too
    assert any(
        line.get("logger") == "gunicorn.error" and "Booting worker" in line["message"]
        for line in server.json_lines()
    )


# --- SIGHUP, admin reload without polling, start-up ---------------------------------------
def test_without_polling_admin_reload_and_sighup_restart_the_workers(
    server_env: dict[str, str], tmp_path: Path, weights: dict[str, bytes]
) -> None:
    models = tmp_path / "models"
    put(models, "mnist", 1, weights["a"])
    env = {
        **server_env,
        "MODEL_DIR": str(models),
        "MODEL_POLL_SECONDS": "0",
        "ACCESS_LOG": "1",
        "AUTH_TOKEN": TOKEN,
    }
    for srv in _serve(env, tmp_path / "gunicorn.log"):
        on_every_worker(srv, predict_version(srv, "mnist"), answered_by("1"))  # both booted
        put(models, "mnist", 2, weights["a"])
        time.sleep(3 * POLL_SECONDS)
        on_every_worker(srv, predict_version(srv, "mnist"), answered_by("1"))  # nobody looks
        report = srv.post("/v1/admin/reload").json()
        assert report["changed"] and report["workers_restarting"]
        on_every_worker(srv, predict_version(srv, "mnist"), answered_by("2"))

        put(models, "mnist", 3, weights["a"])
        put(models, "mnist", 4, weights["corrupt"])  # a new worker skips it, and says so
        srv.proc.send_signal(signal.SIGHUP)
        on_every_worker(srv, predict_version(srv, "mnist"), answered_by("3"))
        assert srv.proc.poll() is None
        assert srv.metric("digits_model_load_failures_total", model="mnist") == 2


def test_a_restart_on_bad_files_serves_what_is_valid_instead_of_stopping(
    server_env: dict[str, str], tmp_path: Path, weights: dict[str, bytes]
) -> None:
    """SIGHUP starts workers from the files on disk, with no old model in memory. A model whose
    only file has gone bad is then not served (said, counted), rather than stopping gunicorn;
    and the admin route does not restart the workers while the default model has no valid file."""
    models = tmp_path / "models"
    put(models, "mnist", 1, weights["a"])
    atomic_write_bytes(models / "other.npz", weights["b"])
    env = {
        **server_env,
        "MODEL_DIR": str(models),
        "MODEL_POLL_SECONDS": "0",
        "ACCESS_LOG": "1",
        "AUTH_TOKEN": TOKEN,
    }
    for srv in _serve(env, tmp_path / "gunicorn.log"):
        on_every_worker(srv, predict_version(srv, "other"), lambda r: r.status_code == 200)
        atomic_write_bytes(models / "other.npz", weights["corrupt"])
        put(models, "mnist", 2, weights["a"])
        report = srv.post("/v1/admin/reload").json()
        assert report["changed"] and report["workers_restarting"], report
        on_every_worker(srv, predict_version(srv, "mnist"), answered_by("2"))
        on_every_worker(srv, predict_version(srv, "other"), lambda r: r.status_code == 404)
        assert srv.proc.poll() is None
        assert srv.metric("digits_model_load_failures_total", model="other") >= 2  # each new worker

        # the default model's files all go bad: the answering worker keeps serving it from
        # memory, and no restart is sent that would leave nothing to serve it
        for version in (1, 2):
            put(models, "mnist", version, weights["corrupt"])
        atomic_write_bytes(models / "third.npz", weights["b"])
        report = srv.post("/v1/admin/reload").json()
        assert report["changed"] and not report["workers_restarting"], report
        time.sleep(2)  # a SIGHUP would have been handled by now
        assert srv.proc.poll() is None
        assert srv.log.read_text().count("Handling signal: hup") == 1  # the first restart only
        on_every_worker(srv, predict_version(srv, "mnist"), answered_by("2"))
    output = (tmp_path / "gunicorn.log").read_text()
    assert "App failed to load" not in output and "Shutting down: Master" in output


@pytest.mark.parametrize(
    "layout,line",
    [
        (
            {"mnist/1/model.npz": "a", "mnist/2/model.npz": "corrupt"},
            "error: {dir}/mnist/2/model.npz: not an .npz file",
        ),
        (
            {"mnist/1/model.npz": "a", "mnist.npz": "a"},
            "error: {dir}/mnist and {dir}/mnist.npz: one model in two layouts; keep one",
        ),
    ],
    ids=["invalid-version", "two-layouts"],
)
def test_bad_versioned_start_exits_with_one_line(
    server_env: dict[str, str], tmp_path: Path, weights: dict[str, bytes], layout: dict[str, str], line: str
) -> None:
    models = tmp_path / "models"
    for relative, kind in layout.items():
        (models / relative).parent.mkdir(parents=True, exist_ok=True)
        (models / relative).write_bytes(weights[kind])
    proc, output, errors = failed_start({**server_env, "MODEL_DIR": str(models)}, tmp_path / "gunicorn.log")
    assert len(errors) == 1, output
    assert errors[0].startswith(line.format(dir=models)), output
    assert _metrics_dirs(proc.pid) == []  # removed on the way out


def test_the_metrics_directory_is_made_and_removed(server_env: dict[str, str], tmp_path: Path) -> None:
    """PROMETHEUS_MULTIPROC_DIR unset: gunicorn.conf.py makes a directory and removes it at exit."""
    log = tmp_path / "gunicorn.log"
    proc = gunicorn(server_env, log)
    try:
        url = wait_ready(proc, log)
        assert requests.get(url + "/metrics", timeout=5).status_code == 200
        made = _metrics_dirs(proc.pid)
        assert len(made) == 1 and any(made[0].glob("*.db"))
    finally:
        assert stop(proc) == 0
    assert not made[0].exists()


def _metrics_dirs(master_pid: int) -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob(f"digits-metrics-{master_pid}-*"))
