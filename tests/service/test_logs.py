"""JSON log lines: the formatter, and gunicorn's access and error logs through GunicornLogger."""

from __future__ import annotations

import json
import logging
import sys
from datetime import timedelta
from types import SimpleNamespace

import pytest
from flask import Flask
from gunicorn.config import Config

from service.logs import GunicornLogger, JsonFormatter
from service.metrics import MODEL, REQUEST_ID


def _record(msg: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("service.test", logging.WARNING, __file__, 1, msg, (), None)
    record.__dict__.update(extra)
    return record


def test_a_record_is_one_json_line_with_its_extra_fields() -> None:
    line = JsonFormatter().format(_record("model %s", event="model_loaded", model="mnist"))
    assert "\n" not in line
    body = json.loads(line)
    assert body["level"] == "warning" and body["logger"] == "service.test"
    assert (body["event"], body["model"]) == ("model_loaded", "mnist")
    assert "request_id" not in body  # outside a request


def test_inside_a_request_the_line_has_its_request_id(app: Flask) -> None:
    with app.test_request_context(environ_base={REQUEST_ID: "req-7"}):
        body = json.loads(JsonFormatter().format(_record("hello")))
    assert body["request_id"] == "req-7"


def test_an_exception_is_one_string() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("service", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    body = json.loads(JsonFormatter().format(record))
    assert body["exception"].startswith("Traceback") and "ValueError: boom" in body["exception"]


def _logger(accesslog: str | None) -> GunicornLogger:
    cfg = Config()
    cfg.set("accesslog", accesslog)
    return GunicornLogger(cfg)


def test_the_access_log_is_json(capsys: pytest.CaptureFixture[str]) -> None:
    model = SimpleNamespace(name="mnist", version="2")
    environ = {
        REQUEST_ID: "abc",
        MODEL: model,
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/predict",
        "QUERY_STRING": "",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_USER_AGENT": "curl",
    }
    response = SimpleNamespace(status="200 OK", sent=42)
    _logger("-").access(response, None, environ, timedelta(microseconds=1500))
    body = json.loads(capsys.readouterr().out)
    assert body["logger"] == "access"
    assert {
        k: body[k]
        for k in (
            "request_id",
            "method",
            "path",
            "status",
            "duration_ms",
            "bytes",
            "model",
            "version",
            "query",
        )
    } == {
        "request_id": "abc",
        "method": "POST",
        "path": "/predict",
        "status": 200,
        "duration_ms": 1.5,
        "bytes": 42,
        "model": "mnist",
        "version": "2",
        "query": None,
    }


def test_no_access_log_unless_asked(capsys: pytest.CaptureFixture[str]) -> None:
    _logger(None).access(
        SimpleNamespace(status="200 OK", sent=1), None, {"REQUEST_METHOD": "GET"}, timedelta(0)
    )
    assert capsys.readouterr().out == ""


def test_gunicorn_and_app_errors_are_json(capsys: pytest.CaptureFixture[str]) -> None:
    logger = _logger(None)
    service_log = logging.getLogger("service")
    saved = service_log.handlers[:], service_log.propagate, service_log.level
    try:
        logger.info("Booting worker with pid: %s", 1)
        logging.getLogger("service.reload").error("bad file", extra={"model": "mnist"})
    finally:
        service_log.handlers, service_log.propagate = saved[0], saved[1]
        service_log.setLevel(saved[2])
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(line["logger"], line["message"]) for line in lines] == [
        ("gunicorn.error", "Booting worker with pid: 1"),
        ("service.reload", "bad file"),
    ]
    assert lines[1]["model"] == "mnist"
