"""The HTTP layer's hostile corpus (``http_corpus.py``) against a real gunicorn, on raw sockets.

Each request gets a 4xx with a JSON error body, or its connection closed: never a 5xx, HTML or a
second answer; the server is ready afterwards; the log has a warning for each, and no traceback.
The same corpus runs through the compose project's nginx in ``.ci/compose_check.py hostile``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from http_corpus import CASES, Case, exchange, problem
from reliability_testkit import AUTH, Server, serve, server_environment

#: Short, so that the slow trickle is closed by the server (the worker's timeout) within the test.
TIMEOUT = 3


@pytest.fixture(scope="module", params=["1", "2"], ids=["sync", "gthread"])
def server(
    model_dir: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Server]:
    """Both worker classes (service/workers.py): sync, and gthread with WORKER_THREADS=2."""
    # auth off: the corpus must reach the framing and the body, not stop at a 401
    env = server_environment(model_dir, TIMEOUT=str(TIMEOUT), WORKER_THREADS=request.param)
    del env["AUTH_TOKEN"]
    yield from serve(env, tmp_path_factory.mktemp("http-corpus") / "gunicorn.log")


def test_the_corpus_ids_are_unique() -> None:
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_each_hostile_request_gets_a_json_4xx_or_a_closed_connection(server: Server, case: Case) -> None:
    answer = exchange("127.0.0.1", server.port, case, trickle_for=TIMEOUT + 3)
    assert problem(case, answer) is None, (case.why, problem(case, answer))
    ready = requests.get(server.url + "/readyz", timeout=10)
    assert ready.status_code == 200, ready.text


def test_the_http_servers_answers_carry_a_request_id(server: Server) -> None:
    """The client's X-Request-ID when gunicorn read the headers (a framing error), else a new one;
    the warning in the log carries the same."""
    case = next(c for c in CASES if c.id == "two-content-lengths")
    sent = Case(
        case.id,
        case.request.replace(b"Host: x\r\n", b"Host: x\r\nX-Request-ID: corpus-rid-1\r\n"),
        case.statuses,
        case.why,
    )
    assert exchange("127.0.0.1", server.port, sent).headers["x-request-id"] == "corpus-rid-1"
    fresh = exchange("127.0.0.1", server.port, next(c for c in CASES if c.id == "path-9k"))
    assert len(fresh.headers["x-request-id"]) == 32
    lines = [json.loads(line) for line in server.log_text().splitlines() if line.startswith("{")]
    warned = {line.get("request_id") for line in lines if line["level"] == "warning"}
    assert {"corpus-rid-1", fresh.headers["x-request-id"]} <= warned


def test_bodies_that_do_not_arrive_are_warnings_in_the_log(server: Server) -> None:
    """After the corpus: each body that did not arrive whole is one warning line, no traceback
    (``serve`` checks that at the end), and no 5xx was ever counted."""
    lines = [json.loads(line) for line in server.log_text().splitlines() if line.startswith("{")]
    warnings = [line["message"] for line in lines if line["level"] == "warning"]
    assert sum("request body not received" in message for message in warnings) >= 7, warnings
    assert any("ConnectionResetError" in message for message in warnings), warnings  # the reset
    # (the slow trickle's worker timed out: gunicorn logs that, and kills the worker after it)
    timeout = ("WORKER TIMEOUT", "was sent SIGKILL")
    errors = [line for line in lines if line["level"] in ("error", "critical")]
    assert not [
        line
        for line in errors
        if not line["message"].startswith(timeout) and "SIGKILL" not in line["message"]
    ]
    metrics = requests.get(server.url + "/metrics", headers=AUTH, timeout=10).text
    assert not [
        line
        for line in metrics.splitlines()
        if line.startswith("digits_http_requests_total") and 'status="5' in line
    ]
