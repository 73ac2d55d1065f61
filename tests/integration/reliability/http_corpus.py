"""The HTTP layer's hostile corpus: requests that are not valid HTTP/1.1, or whose framing two
servers could read differently (request smuggling), sent on raw sockets.

The promise (docs/RELIABILITY.md, issue 22): each gets a 4xx with a JSON error body, or its
connection closed; never a 5xx, never HTML, never two answers on one connection; and the server
is ready afterwards. ``tests/integration/reliability/test_http_corpus.py`` runs it against
gunicorn itself, ``.ci/compose_check.py hostile`` through the compose project's nginx proxy.

Standard library only: ``.ci/compose_check.py`` imports it with the system's Python.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from dataclasses import dataclass, field

JSON = b"Content-Type: application/json\r\n"
#: A request that would be served if it were smuggled through: its answer would be a second
#: status line on the connection.
SMUGGLED = b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"


@dataclass(frozen=True)
class Case:
    """One hostile request: its bytes, and the 4xx statuses that are right for it."""

    id: str
    request: bytes
    statuses: frozenset[int]
    #: Why these statuses (RFC 9110/9112, or the server's limits).
    why: str
    #: Closing the connection without an answer is right too (the request never ended).
    may_close: bool = False
    #: Send the request a byte at a time, this many seconds apart (a slow client).
    trickle: float = 0.0
    #: Reset the connection (TCP RST) after sending: a client gone mid-body. No answer is read.
    reset: bool = False
    #: Close the sending side after the request (the client stops: the body ends early). Not for
    #: whole requests: nginx takes a client's FIN for a client gone, and answers nothing.
    half_close: bool = False
    #: More statuses that are right through a proxy that reads HTTP more leniently (RFC 9112 2.2
    #: lets a recipient take a bare LF as a line end: the request is then whole and valid).
    lenient: frozenset[int] = field(default_factory=frozenset)


def _post(path: bytes, headers: bytes, body: bytes = b"") -> bytes:
    return b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n" + body


def _chunked(path: bytes, body: bytes, content_type: bytes = JSON) -> bytes:
    return _post(path, content_type + b"Transfer-Encoding: chunked\r\n", body)


B400 = frozenset({400})
CASES = [
    # --- bodies that do not arrive whole (answered by the app, in the route's shape) ---
    Case(
        "chunk-size-invalid",
        _chunked(b"/predict", b"ZZ\r\n{}\r\n0\r\n\r\n"),
        B400,
        "RFC 9112 7.1: chunk-size is hex digits",
    ),
    Case(
        "chunk-size-invalid-v2",
        _chunked(b"/v2/models/mnist/infer", b"ZZ\r\n{}\r\n0\r\n\r\n"),
        B400,
        "the same, v2's shape",
    ),
    Case(
        "chunk-size-invalid-tfserving",
        _chunked(b"/v1/models/mnist:predict", b"ZZ\r\n{}\r\n0\r\n\r\n"),
        B400,
        "the same, TF Serving's shape",
    ),
    Case(
        "chunk-size-invalid-multipart",
        _chunked(
            b"/predict", b"ZZ\r\n--b\r\n0\r\n\r\n", b"Content-Type: multipart/form-data; boundary=b\r\n"
        ),
        B400,
        "the same, read by the form parser",
    ),
    Case(
        "chunk-without-terminator",
        _chunked(b"/predict", b"2\r\n{}XX0\r\n\r\n"),
        B400,
        "RFC 9112 7.1: chunk-data CRLF",
    ),
    Case(
        "chunk-size-overflow",
        _chunked(b"/predict", b"f" * 40 + b"\r\n{}\r\n0\r\n\r\n"),
        frozenset({400, 413}),
        "a chunk size past 64 bits: bad size, or over the body limit (gunicorn waits for it)",
        half_close=True,
    ),
    Case(
        "chunked-body-cut-short",
        _chunked(b"/predict", b'100\r\n{"inputs": ['),
        B400,
        "the client stops (half-close) inside a chunk",
        may_close=True,
        half_close=True,
    ),
    Case(
        "length-body-cut-short",
        _post(b"/predict", b"Content-Type: image/png\r\nContent-Length: 1000\r\n", b"\x89PNG\r\n\x1a\n"),
        B400,
        "RFC 9112 8: fewer bytes than Content-Length is an incomplete message",
        may_close=True,
        half_close=True,
    ),
    Case(
        "multipart-body-cut-short",
        _post(
            b"/predict",
            b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000\r\n",
            b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n\x89PNG',
        ),
        B400,
        "the same for a form: not a form with fewer parts (422)",
        may_close=True,
        half_close=True,
    ),
    Case(
        "client-gone-mid-body",
        _post(b"/predict", JSON + b"Content-Length: 100000\r\n", b'{"inputs": [[' + b"0," * 100),
        B400,
        "a reset in mid-body: nothing to answer; the log has a warning",
        reset=True,
    ),
    # --- framing: ways to smuggle a request (RFC 9112 6.3) ---
    Case(
        "cl-te",
        _post(
            b"/predict",
            JSON + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
            b"0\r\n\r\n" + SMUGGLED,
        ),
        B400,
        "RFC 9112 6.1: Content-Length with Transfer-Encoding may be an attack: refused, connection closed",
    ),
    Case(
        "te-cl",
        _post(
            b"/predict",
            JSON + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
            b"8\r\nSMUGGLED\r\n0\r\n\r\n",
        ),
        B400,
        "the same, the other order",
    ),
    Case(
        "te-chunked-identity",
        _post(b"/predict", JSON + b"Transfer-Encoding: chunked, identity\r\n", b"0\r\n\r\n" + SMUGGLED),
        B400,
        "RFC 9112 6.3: chunked not last: the length cannot be known, MUST 400",
    ),
    Case(
        "te-identity",
        _post(b"/predict", JSON + b"Transfer-Encoding: identity\r\n", b"0\r\n\r\n"),
        B400,
        "the same (identity is no longer a coding)",
    ),
    Case(
        "te-twice",
        _post(
            b"/predict", JSON + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"
        ),
        B400,
        "chunked applied twice (RFC 9112 6.1: MUST NOT)",
    ),
    Case(
        "te-obfuscated",
        _post(b"/predict", JSON + b"Transfer-Encoding : chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"),
        B400,
        "RFC 9112 5.1: no whitespace before the colon, MUST 400",
    ),
    Case(
        "two-content-lengths",
        _post(b"/predict", JSON + b"Content-Length: 5\r\nContent-Length: 50\r\n", b"{}   "),
        B400,
        "RFC 9112 6.3: differing lengths, unrecoverable",
    ),
    Case(
        "content-length-negative",
        _post(b"/predict", JSON + b"Content-Length: -1\r\n"),
        B400,
        "RFC 9110 8.6: 1*DIGIT",
    ),
    Case(
        "content-length-plus", _post(b"/predict", JSON + b"Content-Length: +2\r\n", b"{}"), B400, "the same"
    ),
    Case(
        "obs-fold",
        b"GET /readyz HTTP/1.1\r\nHost: x\r\nX-A: b\r\n Transfer-Encoding: chunked\r\n\r\n",
        B400,
        "RFC 9112 5.2: obs-fold outside message/http: 400",
    ),
    Case(
        "bare-lf",
        b"GET /readyz HTTP/1.1\nHost: x\nX-A: b\n\n",
        B400,
        "RFC 9112 2.2: a bare LF: gunicorn refuses it",
        lenient=frozenset({200}),
    ),
    Case(
        "bare-cr",
        b"GET /readyz HTTP/1.1\r\nHost: x\rX-A: b\r\n\r\n",
        B400,
        "RFC 9112 2.2: a bare CR MUST be refused or replaced",
    ),
    Case(
        "nul-in-header",
        b"GET /readyz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
        B400,
        "RFC 9110 5.5: NUL is never field content",
    ),
    # --- the request line and version ---
    Case(
        "garbage-request-line",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
        B400,
        "RFC 9112 3: not a request line (a TLS hello)",
        may_close=True,
    ),
    Case(
        "http-7.0",
        b"GET /readyz HTTP/7.0\r\nHost: x\r\n\r\n",
        B400,
        "an unknown major version (RFC 9110 15.6.6 allows 505; the promise is a 4xx)",
    ),
    Case("http-0.9", b"GET /readyz\r\n\r\n", B400, "no version: HTTP/0.9, not served", may_close=True),
    Case(
        "invalid-method",
        b"G(T /readyz HTTP/1.1\r\nHost: x\r\n\r\n",
        B400,
        "RFC 9110 9.1: a method is a token",
    ),
    Case(
        "http2-preface",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00",
        B400,
        "HTTP/2 prior knowledge on an HTTP/1.1 port",
        may_close=True,
    ),
    # --- limits: gunicorn's (request line 4,094 bytes, 100 fields, 8,190 bytes a field) ---
    Case(
        "path-9k",
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        frozenset({414}),
        "RFC 9110 15.5.15: over the request line limit",
    ),
    Case(
        "query-5k-explain",
        _post(b"/explain?" + b"a" * 5000, JSON + b"Content-Length: 2\r\n", b"{}"),
        frozenset({414}),
        "the same, a query on a POST route",
    ),
    Case(
        "header-10k",
        b"GET /readyz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n",
        frozenset({431}),
        "RFC 6585 5: a field over the limit",
    ),
    Case(
        "headers-150",
        b"GET /readyz HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 150 + b"\r\n",
        frozenset({431}),
        "over 100 fields",
    ),
    # nginx's own limit (large_client_header_buffers 4 16k): refused by the proxy itself
    Case(
        "path-20k",
        b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        frozenset({414}),
        "over the proxy's buffer for a request line too",
    ),
    Case(
        "header-20k",
        b"GET /readyz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
        frozenset({431}),
        "over the proxy's buffer for a field (nginx's 494)",
    ),
    # --- slow: a byte every 0.2 s of a request line that never ends ---
    Case(
        "slow-trickle",
        b"GET /readyz?" + b"a" * 20,
        frozenset({400, 408}),
        "a client that sends too slowly: the server's timeout closes it",
        may_close=True,
        trickle=0.2,
        half_close=True,
    ),
]


@dataclass
class Answer:
    """What came back: the status line's status (None: nothing), headers, body, and how it ended."""

    status: int | None
    headers: dict[str, str]
    body: bytes
    raw: bytes
    error: str | None = None


def exchange(host: str, port: int, case: Case, timeout: float = 20.0, trickle_for: float = 6.0) -> Answer:
    """Send the case's request (closing the write side after it if the case says so) and read
    the answer: until the server closes, or, once an answer is whole, a further
    ``SECOND_ANSWER_WAIT`` for anything behind it (a server keeping the connection alive)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    received, error = b"", None
    with sock:
        try:
            if case.trickle:
                deadline = time.monotonic() + trickle_for
                for byte in case.request:
                    sock.sendall(bytes([byte]))
                    if time.monotonic() > deadline:
                        break
                    time.sleep(case.trickle)
            else:
                sock.sendall(case.request)
            if case.reset:
                time.sleep(0.2)  # the server is reading the body
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return Answer(None, {}, b"", b"", "reset by the client")
            if case.half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError as exc:  # the server closed first: read what it said
            error = type(exc).__name__
        try:
            while chunk := sock.recv(65536):
                received += chunk
                if _whole(received):
                    sock.settimeout(SECOND_ANSWER_WAIT)
        except TimeoutError:
            if not _whole(received):
                error = "TimeoutError"
        except OSError as exc:
            error = error or type(exc).__name__
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status: int | None = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError):
        status = None
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(status, headers, body, received, error)


#: Seconds to wait, after a whole answer, for a second one on a connection kept open.
SECOND_ANSWER_WAIT = 0.5


def _whole(received: bytes) -> bool:
    """An answer's head and its Content-Length of body have arrived."""
    head, sep, body = received.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return len(body) >= int(value.strip())
    return False


def problem(case: Case, answer: Answer, lenient: bool = False) -> str | None:
    """What is wrong with the answer to ``case``, or None if it keeps the promise."""
    if case.reset:
        return None
    if answer.status is None:
        return None if case.may_close and not answer.raw else f"no status line: {answer.raw[:200]!r}"
    allowed = case.statuses | (case.lenient if lenient else frozenset())
    if answer.status not in allowed:
        return f"status {answer.status}, expected {sorted(allowed)}: {answer.raw[:300]!r}"
    length = answer.headers.get("content-length")
    if length is None or not length.isdigit():
        return f"no Content-Length: {answer.raw[:300]!r}"
    body, after = answer.body[: int(length)], answer.body[int(length) :]
    if after:  # another answer on the connection: a request smuggled behind this one
        return f"more than one answer on the connection: {answer.raw[:600]!r}"
    if answer.status < 400:
        return None
    if not answer.headers.get("content-type", "").startswith("application/json"):
        return f"Content-Type {answer.headers.get('content-type')!r}: {answer.raw[:300]!r}"
    try:
        error = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return f"not the JSON error shape: {answer.body[:300]!r}"
    if isinstance(error, dict):
        if error.get("status") != answer.status or not error.get("code") or not error.get("message"):
            return f"not the error shape: {error!r}"
    elif not (isinstance(error, str) and error):  # the Open Inference Protocol's, TF Serving's
        return f"not the error shape: {error!r}"
    return None
