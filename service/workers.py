"""gunicorn's workers, with its own error answers in the API's JSON error shape.

gunicorn answers a request it cannot parse itself, before the app sees it: a garbage request line,
an unknown HTTP version or method, bad framing (``Content-Length`` with chunked, two lengths, a
negative one, an unknown transfer coding), a request line over ``limit_request_line`` (414),
headers over ``limit_request_field_size`` or ``limit_request_fields`` (431). Its own answer is an
HTML page. ``JsonErrors.handle_error`` keeps gunicorn's decisions (which requests it refuses, its
limits, its statuses, closing the connection) and only writes the answer as the API does::

    {"error": {"status": 431, "code": "request_header_fields_too_large", "message": "..."}}

always in this shape, whatever the path: gunicorn has often not read it (a request line too
long, a bad header name), so it cannot know the route's (the OpenAPI document lists these
answers on every operation, in this shape). It carries an ``X-Request-ID`` (the client's, when
gunicorn got as far as the headers and the id is sane, else a new one) that the log line has too.

Only the error path changes: ``handle`` and ``handle_request``, which every request runs, are
gunicorn's own, so this costs nothing per request (bench/serve_load.py, docs/RELIABILITY.md).
``gunicorn.conf.py`` names these classes as ``worker_class``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from gunicorn import util
from gunicorn.http import errors as http_errors
from gunicorn.http.body import ChunkedReader, LengthReader
from gunicorn.http.message import Message
from gunicorn.http.wsgi import Response, default_environ
from gunicorn.workers.gthread import ThreadWorker as _ThreadWorker
from gunicorn.workers.sync import SyncWorker as _SyncWorker

from service.metrics import REQUEST_ID, REQUEST_ID_HEADER, request_id_from

#: gunicorn's refusals: (exception, status, reason phrase, code), first match wins. The
#: statuses are gunicorn's own (``gunicorn.workers.base.Worker.handle_error``); any other parse
#: error is a 400.
REFUSALS: tuple[tuple[type[BaseException], int, str, str], ...] = (
    (http_errors.LimitRequestLine, 414, "URI Too Long", "uri_too_long"),
    (
        http_errors.LimitRequestHeaders,
        431,
        "Request Header Fields Too Large",
        "request_header_fields_too_large",
    ),
    (http_errors.ExpectationFailed, 417, "Expectation Failed", "expectation_failed"),
    # RFC 9112 6.1: a transfer coding the server does not know (gzip, chunked) is a 501; a
    # framing it cannot tell the length of (chunked not last, identity) gunicorn refuses as a 400
    (http_errors.UnsupportedTransferCoding, 501, "Not Implemented", "unsupported_transfer_coding"),
    (http_errors.ForbiddenProxyRequest, 403, "Forbidden", "forbidden"),
    (http_errors.ConfigurationProblem, 500, "Internal Server Error", "internal_error"),
    (http_errors.ParseException, 400, "Bad Request", "bad_request"),
)
#: A client too slow to send its request within the worker's timeout.
_TIMED_OUT = (408, "Request Timeout", "request_timeout")
#: Not a parse error, but the client's too: a TLS handshake that failed (gunicorn: 403).
_SSL_ERROR = (403, "Forbidden", "forbidden")
#: What gunicorn's messages say, for each status (its own text follows, after a colon).
_MESSAGES = {
    414: "the request line is longer than the server accepts",
    431: "the request's header section is larger than the server accepts",
    417: "the Expect header asks for something the server does not do",
    501: "the request's Transfer-Encoding is not supported",
    403: "the request is forbidden",
    408: "the request did not arrive within the server's timeout",
    400: "the request is not valid HTTP/1.1",
    500: "the server cannot handle this request",
}
#: gunicorn's own text can quote the request line (up to 4,094 bytes): a piece is enough.
MAX_DETAIL = 200


def refusal(exc: BaseException, req: Any = None) -> tuple[int, str, str] | None:
    """gunicorn's status, reason phrase and our code for ``exc``; None if it is not a client error.

    A worker stopped by its timeout (``TIMEOUT``: the arbiter's SIGABRT, a ``SystemExit``) while
    the request or its body was still arriving was held by a slow client: 408 (RFC 9110 15.5.9),
    where gunicorn would answer 500. Once the request is whole, a timeout is the server's (500).
    """
    from ssl import SSLError

    if isinstance(exc, SystemExit):
        return _TIMED_OUT if still_arriving(req) else None
    if isinstance(exc, http_errors.InvalidResponseHeader | http_errors.InvalidResponseHeaderName):
        return None  # a header the app tried to send: the app's fault (gunicorn: 500)
    for cls, status, reason, code in REFUSALS:
        if isinstance(exc, cls):
            return status, reason, code
    if isinstance(exc, SSLError):
        return _SSL_ERROR
    return None


def error_answer(status: int, reason: str, code: str, message: str, request_id: str) -> bytes:
    """The whole HTTP answer, head and JSON body, as gunicorn would write its own (and closing
    the connection, as gunicorn does after any error it answers itself)."""
    error = {"status": status, "code": code, "message": message}
    try:
        body = orjson.dumps({"error": error})
    except orjson.JSONEncodeError:  # a lone surrogate in the quoted request: cannot be, but safe
        body = orjson.dumps({"error": {**error, "message": reason}})
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"{REQUEST_ID_HEADER}: {request_id}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class JsonErrors:
    """``handle_error`` for gunicorn's workers: its own answers in the API's JSON shape."""

    log: Any
    cfg: Any

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        try:
            self._json_error(req, client, addr, exc)
        except Exception:  # noqa: BLE001 - never worse than gunicorn: its own answer, then
            self.log.exception("could not answer in JSON")
            super().handle_error(req, client, addr, exc)  # type: ignore[misc]

    def _json_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        started = datetime.now()
        addr = addr or ("", -1)  # a unix socket
        if not isinstance(req, Message):
            # what the parser got of the request: a Request for header errors (InvalidHeader
            # carries it), the raw line for others
            req = getattr(exc, "req", None)
            if not isinstance(req, Message):
                req = None
        request_id = request_id_from(_header(req, "X-REQUEST-ID"))
        found = refusal(exc, req)
        if found is not None:
            status, reason, code = found
            detail = str(exc)[:MAX_DETAIL]
            message = _MESSAGES.get(status, _MESSAGES[400]) + f": {type(exc).__name__}"
            if detail:
                message += f" ({detail})"
            self.log.warning(
                "invalid request from ip=%s: %s: %s",
                addr[0],
                type(exc).__name__,
                detail,
                extra={"request_id": request_id, "status": status},
            )
        else:  # not the client's doing: gunicorn's 500, with the traceback in the log
            status, reason, code = 500, "Internal Server Error", "internal_error"
            message = "internal server error"
            self.log.exception("error handling request", extra={"request_id": request_id})
        answer = error_answer(status, reason, code, message, request_id)
        if req is not None:  # the access log, as gunicorn writes it for its own answers
            environ = default_environ(req, client, self.cfg)
            environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = addr[0], str(addr[1])
            environ[REQUEST_ID] = request_id
            response = Response(req, client, self.cfg)
            response.status = f"{status} {reason}"
            response.response_length = len(answer)
            self.log.access(response, req, environ, datetime.now() - started)
        try:
            util.write_nonblock(client, answer)
        except Exception:  # noqa: BLE001 - the client may be gone: nothing more to do
            self.log.debug("Failed to send error message.")


def still_arriving(req: Any) -> bool:
    """The request's head, or its body, has not arrived whole yet."""
    if req is None:
        return True
    reader = getattr(getattr(req, "body", None), "reader", None)
    if isinstance(reader, LengthReader):
        return reader.length > 0
    if isinstance(reader, ChunkedReader):
        return reader.parser is not None
    return False


def _header(req: Any, name: str) -> str | None:
    for key, value in getattr(req, "headers", None) or ():
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


class SyncWorker(JsonErrors, _SyncWorker):
    """gunicorn's sync worker (the default: one request at a time per process)."""


class ThreadWorker(JsonErrors, _ThreadWorker):
    """gunicorn's gthread worker (``WORKER_THREADS`` > 1)."""
