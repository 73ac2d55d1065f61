"""gunicorn's own refusals in the JSON error shape (service/workers.py). The answers themselves,
written by a real gunicorn to raw sockets, are checked in
tests/integration/reliability/test_http_corpus.py; here, the table and the bytes."""

from __future__ import annotations

import json

import pytest
from gunicorn.http import errors as http_errors

from service.workers import error_answer, refusal, still_arriving


@pytest.mark.parametrize(
    "exc,status",
    [
        (http_errors.LimitRequestLine(8192, 4094), 414),
        (http_errors.LimitRequestHeaders("limit request headers fields"), 431),
        (http_errors.InvalidRequestLine("PRI * HTTP/2.0"), 400),
        (http_errors.InvalidHTTPVersion((7, 0)), 400),
        (http_errors.InvalidHeader("CONTENT-LENGTH"), 400),
        (http_errors.ObsoleteFolding("X-A"), 400),
        (http_errors.InvalidChunkSize(b"ZZ"), 400),
        (http_errors.ExpectationFailed("x"), 417),
        (http_errors.UnsupportedTransferCoding("br"), 501),
        (SystemExit(1), 408),  # the worker's timeout while the request was still arriving
    ],
)
def test_gunicorns_refusals_keep_its_statuses(exc: BaseException, status: int) -> None:
    found = refusal(exc)
    assert found is not None and found[0] == status


def test_the_apps_own_faults_are_not_the_clients() -> None:
    assert refusal(http_errors.InvalidResponseHeader("X")) is None
    assert refusal(ValueError("boom")) is None


def test_a_timeout_after_the_request_arrived_is_the_servers() -> None:
    class Whole:  # a request whose body has no reader left to wait on
        body = None

    assert not still_arriving(Whole())
    assert refusal(SystemExit(1), Whole()) is None
    assert still_arriving(None)


def test_the_answer_is_http_with_a_json_error_and_the_request_id() -> None:
    raw = error_answer(
        431, "Request Header Fields Too Large", "request_header_fields_too_large", "too big", "rid-1"
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 431 Request Header Fields Too Large"
    assert {"Connection: close", "Content-Type: application/json", "X-Request-ID: rid-1"} <= set(lines)
    assert f"Content-Length: {len(body)}" in lines
    assert json.loads(body) == {
        "error": {"status": 431, "code": "request_header_fields_too_large", "message": "too big"}
    }
