"""Hostile inputs against a real gunicorn on loopback, with the production limits.

Each input gets a 4xx (or its connection is refused or closed), the server keeps answering other
clients, and the workers' memory stays bounded. The server runs with the default
``MAX_REQUEST_BYTES`` (16 MiB) and ``MAX_BATCH_SIZE`` (1000), auth on, hot reload polling every
0.25 s, and ``TIMEOUT`` 4 s so that clients which stop sending cost seconds, not minutes.

What a sync worker cannot defend against by itself (slow clients) is measured here and stated
in docs/RELIABILITY.md: production puts a buffering reverse proxy in front.
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from gunicorn_testkit import failed_start
from reliability_testkit import (
    AUTH,
    Server,
    rss_kib,
    serve,
    serve_unchecked,
    server_environment,
    write_model,
)
from service_testkit import drawn_digit, png_bytes

from training.fileio import atomic_write_bytes

MIB = 1024 * 1024
MAX_REQUEST_BYTES = 16 * MIB  # the default, which these servers keep
MAX_BATCH = 1000
TIMEOUT = 4
POLL_SECONDS = 0.25
#: How much a worker's resident memory may grow over the whole corpus. The largest image
#: allowed (16 Mpixels) and a 16 MiB body each take tens of MiB while they are handled, and
#: gunicorn.conf.py lets malloc keep up to 64 MiB of freed memory for reuse.
MAX_WORKER_RSS_MIB = 200
ROW = [0.0] * 784


@pytest.fixture(scope="module")
def live_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory of this module's own: files get dropped into it."""
    directory = tmp_path_factory.mktemp("hostile-models")
    write_model(directory / "mnist" / "1" / "model.npz", seed=1)
    write_model(directory / "fashion-mnist.npz", seed=3, input_shape=(784,))
    return directory


@pytest.fixture(scope="module")
def server(live_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = server_environment(live_models, TIMEOUT=str(TIMEOUT), MODEL_POLL_SECONDS=str(POLL_SECONDS))
    yield from serve(env, tmp_path_factory.mktemp("hostile") / "gunicorn.log")


# --- raw HTTP -----------------------------------------------------------------------------
@dataclass
class Answer:
    """What came back on a raw connection: the status (None if nothing), and how it ended."""

    status: int | None
    body: bytes = b""
    error: str | None = None
    sent: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def parse(raw: bytes) -> tuple[int | None, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        return int(head.split(b" ", 2)[1]), body
    except (IndexError, ValueError):
        return None, raw


def raw_exchange(
    port: int, head: bytes, body: Iterable[bytes] = (), half_close: bool = True, timeout: float = 20.0
) -> Answer:
    """Send ``head``, then ``body`` piece by piece while watching for an early answer; then
    read the answer. Stops sending as soon as the server answers or closes."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    received = b""
    error = None
    sent = 0
    with sock:
        try:
            sock.sendall(head)
            for piece in body:
                sock.sendall(piece)
                sent += len(piece)
                sock.setblocking(False)
                try:
                    chunk = sock.recv(65536)
                    received += chunk
                    if not chunk:
                        break
                except BlockingIOError:
                    pass
                finally:
                    sock.setblocking(True)
                    sock.settimeout(timeout)
                if received:
                    break
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            error = type(exc).__name__
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except OSError as exc:
            error = error or type(exc).__name__
    status, payload = parse(received)
    return Answer(status, payload, error, sent)


def kernel_buffering() -> int:
    """The most a TCP connection here can hold unread in the kernels: the receiver's buffer at
    its autotuning maximum plus the sender's."""
    try:
        rmem, wmem = (
            int(Path(f"/proc/sys/net/ipv4/{name}").read_text().split()[2])
            for name in ("tcp_rmem", "tcp_wmem")
        )
    except OSError:
        return 16 * MIB  # not Linux: Linux's defaults (6 MiB + 4 MiB), rounded up
    return rmem + wmem


def http_head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def still_answers(server: Server) -> None:
    response = requests.get(server.url + "/v1/models/mnist", headers=AUTH, timeout=10)
    assert response.status_code == 200


def workers_rss_mib(server: Server) -> dict[int, float]:
    return {pid: rss_kib(pid) / 1024 for pid in server.workers()}


# --- hostile bodies: the table --------------------------------------------------------------
def _png(width: int, height: int, compressed: bytes = b"") -> bytes:
    """A PNG whose header says ``width`` x ``height`` grey pixels, with ``compressed`` data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", compressed) + chunk(b"IEND", b"")


def _bomb_png(side: int) -> bytes:
    """A real, valid PNG of ``side`` x ``side`` black pixels: a few KiB that decode to side^2 bytes."""
    row = b"\x00" * (side + 1)  # filter byte + pixels
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return _png(side, side, data)


def _gif(width: int, height: int) -> bytes:
    return (
        b"GIF89a"
        + struct.pack("<HH", width, height)
        + b"\x00\x00\x00"
        + b"\x2c"
        + struct.pack("<HHHH", 0, 0, width, height)
        + b"\x00\x02\x02\x44\x01\x00;"
    )


def _digit(fmt: str) -> bytes:
    return png_bytes(drawn_digit("7", size=64), fmt)


def _pickle_tensor() -> bytes:
    return json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "BYTES",
                    "shape": [1],
                    "data": [base64.b64encode(pickle.dumps(object)).decode()],
                }
            ]
        }
    ).encode()


@dataclass(frozen=True)
class Hostile:
    id: str
    path: str
    body: bytes
    content_type: str = "application/json"
    status: tuple[int, ...] = (400,)
    headers: dict[str, str] = field(default_factory=dict)


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _v2(**tensor: Any) -> bytes:
    return _json({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 784], **tensor}]})


V2 = "/v2/models/mnist/infer"
NOISE = np.random.default_rng(0)  # the same "random" bytes every run
ROW_TEXT = json.dumps(ROW)
GZIP_BOMB = zlib.compress(b"\0" * (200 * MIB), 9)  # 200 KiB that inflate to 200 MiB
BOMB_PNG = _bomb_png(5000)  # 25 Mpixels > MAX_IMAGE_PIXELS (16,777,216)
HOSTILE = [
    # JSON structure
    Hostile("nested-100k-arrays", "/predict", b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    Hostile(
        "nested-100k-objects",
        "/predict",
        b'{"inputs": [[0]], "x": ' + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"}",
    ),
    Hostile("nested-65-levels", "/predict", b'{"inputs": ' + b"[" * 65 + b"]" * 65 + b"}"),
    Hostile("nested-100k-v2", V2, _v2(data=None).replace(b"null", b"[" * 100_000 + b"]" * 100_000)),
    Hostile("nested-900-v2-nan", V2, _v2(data=None).replace(b"null", b"[" * 900 + b"NaN" + b"]" * 900)),
    Hostile("duplicate-key", "/predict", f'{{"inputs": [{ROW_TEXT}], "inputs": "x"}}'.encode()),
    Hostile("duplicate-key-reversed", "/predict", f'{{"inputs": "x", "inputs": [{ROW_TEXT}]}}'.encode()),
    Hostile("duplicate-key-lenient", "/predict", f'{{"inputs": [[NaN]], "inputs": [{ROW_TEXT}]}}'.encode()),
    Hostile("duplicate-key-v2", V2, _v2(data=ROW)[:-3] + b', "datatype": "UINT8"}]}'),
    Hostile("duplicate-key-v2-top", V2, _v2(data=ROW)[:-1] + b', "inputs": []}'),
    Hostile(
        "duplicate-key-v2-parameters",
        V2,
        _json(
            {
                "inputs": [
                    {
                        "name": "input",
                        "datatype": "FP32",
                        "shape": [1, 784],
                        "parameters": {"binary_data_size": 1},
                    }
                ]
            }
        ).replace(b'"binary_data_size": 1', b'"binary_data_size": 1, "binary_data_size": 3136'),
    ),
    Hostile(
        "duplicate-key-v2-outputs",
        V2,
        _json(
            {
                "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 784], "data": ROW}],
                "outputs": [{"name": "label"}],
            }
        ).replace(b'"name": "label"', b'"name": "label", "name": "x"'),
    ),
    Hostile("nul-in-key", "/predict", f'{{"inputs\\u0000": [{ROW_TEXT}]}}'.encode(), status=(422,)),
    Hostile(
        "nul-in-key-v2", V2, b'{"inputs": [{"n\\u0000": 1, ' + _v2(data=ROW)[13:], status=(200,)
    ),  # unknown keys are ignored, as the protocol wants (it was a 500)
    Hostile("not-an-object", "/predict", b"[1, 2, 3]", status=(422,)),
    Hostile("empty-body", "/predict", b"", status=(400,)),
    # numbers
    Hostile("integer-5000-digits", "/predict", f'{{"inputs": [[{"9" * 5000}]]}}'.encode()),
    Hostile(
        "integer-400-digits", "/predict", f'{{"inputs": [[{"9" * 400}{",0" * 783}]]}}'.encode(), status=(422,)
    ),
    Hostile(
        "integer-400-digits-v2",
        V2,
        _v2(datatype="UINT8", data=None).replace(b"null", f"[{'9' * 400}{',0' * 783}]".encode()),
    ),
    Hostile("exponent-1e999", "/predict", f'{{"inputs": [[1e999{",0" * 783}]]}}'.encode(), status=(422,)),
    Hostile("nan", "/predict", f'{{"inputs": [[NaN{",0" * 783}]]}}'.encode(), status=(422,)),
    Hostile("float32-overflow", "/predict", f'{{"inputs": [[1e308{",0" * 783}]]}}'.encode(), status=(422,)),
    Hostile("numbers-as-strings", "/predict", _json({"inputs": [["0.5"] * 784]}), status=(422,)),
    Hostile("numbers-as-strings-v2", V2, _v2(data=["0.5"] * 784)),
    Hostile("labels-as-strings", "/accuracy", _json({"inputs": [ROW], "labels": ["7"]}), status=(422,)),
    Hostile(
        "huge-shape-v2",
        V2,
        _json({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2**70, 784], "data": [0]}]}),
    ),
    Hostile(
        "shape-product-wraps-v2",
        V2,
        _json({"inputs": [{"name": "input", "datatype": "UINT8", "shape": [2**62, 4, 784], "data": [0]}]}),
    ),
    Hostile(
        "classification-huge-v2",
        V2,
        _json(
            {
                "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 784], "data": ROW}],
                "outputs": [{"name": "probabilities", "parameters": {"classification": 2**80}}],
            }
        ),
        status=(200,),
    ),  # asks for the top 2^80 classes: gets all 10
    # text
    Hostile("invalid-utf8-value", "/predict", b'{"inputs": [[0.5]], "pixel_range": "\xff\xfe"}'),
    Hostile("invalid-utf8-key", "/predict", b'{"\xc3\x28": 1}'),
    Hostile("invalid-utf8-v2", V2, b'{"id": "\xed\xa0\x80", ' + _v2(data=ROW)[1:]),
    Hostile("lone-surrogate-v2-id", V2, b'{"id": "\\ud800", ' + _v2(data=ROW)[1:]),
    Hostile(
        "lone-surrogate-unknown-field",
        "/predict",
        f'{{"\\udc00": 1, "inputs": [{ROW_TEXT}]}}'.encode(),
        status=(422,),
    ),
    Hostile("utf16-body", "/predict", _json({"inputs": [ROW]}).decode().encode("utf-16")),
    Hostile("pickle-in-bytes-tensor-v2", V2, _pickle_tensor()),
    # content types
    Hostile("json-sent-as-png", "/predict", _json({"inputs": [ROW]}), "image/png", (422,)),
    Hostile("png-sent-as-json", "/predict", _digit("PNG"), "application/json"),
    Hostile("no-content-type", "/predict", _json({"inputs": [ROW]}), "", (415,)),
    Hostile("multipart-without-boundary", "/predict", b"--x\r\n", "multipart/form-data", (400, 422)),
    # images
    Hostile("truncated-png", "/predict", _digit("PNG")[:150], "image/png", (422,)),
    Hostile("truncated-jpeg", "/predict", _digit("JPEG")[:300], "image/jpeg", (422,)),
    Hostile("truncated-gif", "/predict", _digit("GIF")[:60], "image/gif", (422,)),
    # (noise may make a header claim a huge image: 413 then)
    Hostile("malformed-png", "/predict", b"\x89PNG\r\n\x1a\n" + NOISE.bytes(2000), "image/png", (413, 422)),
    Hostile("malformed-jpeg", "/predict", b"\xff\xd8\xff\xe0" + NOISE.bytes(2000), "image/jpeg", (413, 422)),
    Hostile("malformed-gif", "/predict", b"GIF89a" + NOISE.bytes(200), "image/gif", (413, 422)),
    Hostile(
        "png-bad-crc", "/predict", _digit("PNG")[:29] + b"\0\0\0\0" + _digit("PNG")[33:], "image/png", (422,)
    ),
    Hostile("png-header-100k-squared", "/predict", _png(100_000, 100_000), "image/png", (413,)),
    Hostile("png-bomb-25-mpixels", "/predict", BOMB_PNG, "image/png", (413,)),
    Hostile(
        "png-bomb-base64", "/predict", _json({"images": [base64.b64encode(BOMB_PNG).decode()]}), status=(413,)
    ),
    Hostile("gif-header-65535-squared", "/predict", _gif(65535, 65535), "image/gif", (413,)),
    Hostile(
        "tiff-is-not-accepted", "/predict", png_bytes(drawn_digit("7", size=32), "TIFF"), "image/png", (422,)
    ),
    # v2 transport
    Hostile("gzip-bomb-v2", V2, GZIP_BOMB, headers={"Content-Encoding": "deflate"}, status=(413,)),
    Hostile("gzip-garbage-v2", V2, NOISE.bytes(1000), headers={"Content-Encoding": "gzip"}),
    Hostile(
        "gzip-truncated-v2", V2, zlib.compress(_v2(data=ROW))[:100], headers={"Content-Encoding": "deflate"}
    ),
    Hostile("encoding-br-v2", V2, _v2(data=ROW), headers={"Content-Encoding": "br"}, status=(415,)),
    Hostile(
        "binary-header-past-body-v2",
        V2,
        _v2(data=ROW),
        headers={"Inference-Header-Content-Length": str(10**12)},
    ),
    Hostile(
        "binary-header-negative-v2", V2, _v2(data=ROW), headers={"Inference-Header-Content-Length": "-5"}
    ),
    Hostile(
        "binary-size-lies-v2",
        V2,
        _json(
            {
                "inputs": [
                    {
                        "name": "input",
                        "datatype": "FP32",
                        "shape": [1, 784],
                        "parameters": {"binary_data_size": 3136},
                    }
                ]
            }
        )
        + b"\0" * 100,
        headers={
            "Inference-Header-Content-Length": str(
                len(
                    _json(
                        {
                            "inputs": [
                                {
                                    "name": "input",
                                    "datatype": "FP32",
                                    "shape": [1, 784],
                                    "parameters": {"binary_data_size": 3136},
                                }
                            ]
                        }
                    )
                )
            )
        },
    ),
    # limits
    Hostile("batch-over-limit", "/predict", _json({"inputs": [ROW] * (MAX_BATCH + 1)}), status=(422,)),
    Hostile(
        "images-over-limit",
        "/predict",
        _json({"images": [base64.b64encode(_digit("PNG")).decode()] * (MAX_BATCH + 1)}),
        status=(422,),
    ),
    Hostile(
        "batch-over-limit-v2",
        V2,
        _json(
            {
                "inputs": [
                    {
                        "name": "input",
                        "datatype": "UINT8",
                        "shape": [MAX_BATCH + 1, 784],
                        "data": [0] * 784 * (MAX_BATCH + 1),
                    }
                ]
            }
        ),
    ),
    Hostile("body-over-limit", "/predict", b" " * (MAX_REQUEST_BYTES + 1), status=(413,)),
    Hostile("body-over-limit-v2", V2, b" " * (MAX_REQUEST_BYTES + 1), status=(413,)),
    Hostile(
        "body-over-limit-raw-image", "/predict", b"\x89PNG" + b"\0" * MAX_REQUEST_BYTES, "image/png", (413,)
    ),
]


def test_the_corpus_ids_are_unique() -> None:
    assert len({case.id for case in HOSTILE}) == len(HOSTILE)


@pytest.mark.parametrize("case", HOSTILE, ids=[case.id for case in HOSTILE])
def test_each_hostile_body_gets_a_4xx(server: Server, case: Hostile) -> None:
    """Sent raw, in 256 KiB pieces, so an answer before the end of the body is read too."""
    headers = {**AUTH, **case.headers, "Content-Length": str(len(case.body))}
    if case.content_type:
        headers["Content-Type"] = case.content_type
    step = 256 * 1024
    answer = raw_exchange(
        server.port,
        http_head("POST", case.path, headers),
        (case.body[i : i + step] for i in range(0, len(case.body), step)),
    )
    assert answer.status in case.status, answer
    body = json.loads(answer.body)
    if answer.status >= 400:
        if case.path.startswith("/v2"):
            assert set(body) == {"error"} and isinstance(body["error"], str)
        else:
            assert body["error"]["status"] == answer.status


def test_multipart_bombs_and_broken_files_get_4xx(server: Server) -> None:
    files = {"bomb": ("bomb.png", BOMB_PNG, "image/png")}
    response = requests.post(server.url + "/predict", files=files, headers=AUTH, timeout=30)
    assert response.status_code == 413, response.text
    files = {"a": ("a.png", _digit("PNG"), "image/png"), "b": ("b.jpg", _digit("JPEG")[:200], "image/jpeg")}
    response = requests.post(
        server.url + "/accuracy", files=files, data={"labels": "7,7"}, headers=AUTH, timeout=30
    )
    assert response.status_code == 422
    assert "1" in response.json()["error"]["details"]["images"]  # the second file, by index


def test_the_largest_image_allowed_is_served(server: Server) -> None:
    """4096 x 4096 = MAX_IMAGE_PIXELS exactly: decoded, shrunk and answered."""
    response = requests.post(
        server.url + "/predict",
        data=_bomb_png(4096),
        timeout=30,
        headers={**AUTH, "Content-Type": "image/png"},
    )
    assert response.status_code == 200, response.text


# --- hostile connections ------------------------------------------------------------------
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_100_mb_body_is_refused_without_being_read(server: Server, chunked: bool) -> None:
    """413 while the client is still sending: with a Content-Length, before any of the body is
    read; chunked, after at most MAX_REQUEST_BYTES. The worker's memory shows it."""
    total = 100 * MIB
    piece = b" " * MIB
    if chunked:
        head = http_head(
            "POST", "/predict", {**AUTH, "Content-Type": "application/json", "Transfer-Encoding": "chunked"}
        )
        body = (b"%x\r\n" % len(piece) + piece + b"\r\n" for _ in range(total // MIB))
    else:
        head = http_head(
            "POST", "/predict", {**AUTH, "Content-Type": "application/json", "Content-Length": str(total)}
        )
        body = (piece for _ in range(total // MIB))
    before = workers_rss_mib(server)
    answer = raw_exchange(server.port, head, body)
    after = workers_rss_mib(server)
    assert answer.status == 413, answer
    # Refused early, not after 100 MiB. What the client got off its hands is what the worker
    # read (none of it with a Content-Length; MAX_REQUEST_BYTES + 1 chunked) plus what the
    # kernels buffered before the worker closed: gunicorn 27 sends the 413, half-closes and
    # lingers for up to 2 s (RFC 9112 9.6) while the receive window the fast reading grew, and
    # the client's send buffer, fill. The worker's memory below shows none of that was read.
    read = MAX_REQUEST_BYTES + MIB if chunked else 0
    assert answer.sent < read + kernel_buffering() + MIB, answer
    growth = max(after[pid] - before.get(pid, after[pid]) for pid in after)
    # a Content-Length is refused unread; a chunked body is read up to the limit, once
    assert growth < (8 if not chunked else 2 * MAX_REQUEST_BYTES / MIB + 8), (before, after)
    still_answers(server)


def test_a_body_shorter_than_its_content_length_is_a_400(server: Server) -> None:
    """The client says 10,000 bytes, sends 100 and stops (half-close): the worker sees the end
    of the stream and answers 400 at once (body_not_received)."""
    head = http_head(
        "POST", "/predict", {**AUTH, "Content-Type": "application/json", "Content-Length": "10000"}
    )
    started = time.monotonic()
    answer = raw_exchange(server.port, head, iter([b'{"inputs": [[' + b"0," * 40]))
    assert answer.status == 400, answer
    assert json.loads(answer.body)["error"]["code"] == "body_not_received"
    assert time.monotonic() - started < TIMEOUT
    still_answers(server)


def test_a_body_longer_than_its_content_length_is_cut_there(server: Server) -> None:
    """The extra bytes are never read as another request: a sync worker closes the connection."""
    body = _json({"inputs": [ROW]})
    smuggled = http_head("GET", "/v1/models", {})
    head = http_head(
        "POST", "/predict", {**AUTH, "Content-Type": "application/json", "Content-Length": str(len(body))}
    )
    answer = raw_exchange(server.port, head, iter([body + smuggled]))
    assert answer.status == 200
    assert answer.body.count(b"HTTP/1.1") == 0  # one answer only


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Length": "100", "Transfer-Encoding": "chunked"},
        {"Content-Length": "-1"},
        {"Content-Length": "1e3"},
        {"Transfer-Encoding": "gzip, chunked"},
        {"Transfer-Encoding": "identity"},
    ],
    ids=["length-and-chunked", "negative-length", "float-length", "gzip-chunked", "te-identity"],
)
def test_framing_that_could_smuggle_a_request_is_refused(server: Server, headers: dict[str, str]) -> None:
    """Requests a proxy and gunicorn could split differently are refused by gunicorn (400/501),
    in the JSON error shape (the whole HTTP-layer corpus: test_http_corpus.py)."""
    head = http_head("POST", "/predict", {**AUTH, "Content-Type": "application/json", **headers})
    answer = raw_exchange(server.port, head, iter([b"0\r\n\r\n"]))
    assert answer.status is not None and 400 <= answer.status < 502, answer
    assert json.loads(answer.body)["error"]
    still_answers(server)


def test_two_content_lengths_are_refused(server: Server) -> None:
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 5\r\nContent-Length: 50\r\n\r\n"
    )
    answer = raw_exchange(server.port, head, iter([b"{}   "]))
    assert answer.status == 400, answer


def test_oversized_headers_are_refused(server: Server) -> None:
    """gunicorn's limits: request line 4094 bytes, 100 header fields, 8190 bytes each. gunicorn
    answers these itself, before the app, in the JSON error shape (service/workers.py)."""
    for head, status in (
        (b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n", 431),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 200 + b"\r\n", 431),
    ):
        answer = raw_exchange(server.port, head)
        assert answer.status == status, answer
        assert json.loads(answer.body)["error"]["status"] == status
    still_answers(server)


def test_memory_stays_bounded(server: Server) -> None:
    """After everything above (this module's tests run in order), every worker is still small."""
    rss = workers_rss_mib(server)
    assert rss and max(rss.values()) < MAX_WORKER_RSS_MIB, rss
    print(f"\nworker RSS after the corpus: {sorted(round(v) for v in rss.values())} MiB")
    still_answers(server)


# --- model files: a pickle dropped into MODEL_DIR ---------------------------------------------
class _Tripwire:
    """Unpickling this creates a file: proof that someone unpickled it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return open, (str(self.path), "w")


def pickle_npz(path: Path, tripwire: Path) -> None:
    """A model file whose ``W1`` is an object array (loading it needs pickle), published whole."""
    valid = tripwire.with_name("valid.npz")
    write_model(valid, seed=9)  # a valid model, then W1 swapped for the pickle
    with np.load(valid) as files:
        arrays = {key: files[key] for key in files.files}
    valid.unlink()
    arrays["W1"] = np.array([_Tripwire(tripwire)], dtype=object)
    data = io.BytesIO()
    np.savez(data, **arrays)  # type: ignore[arg-type]
    atomic_write_bytes(path, data.getvalue())


def test_a_pickle_npz_dropped_in_is_logged_and_never_loaded(
    server: Server, live_models: Path, tmp_path: Path
) -> None:
    tripwire = tmp_path / "unpickled"
    version_before = requests.get(server.url + "/v1/models/mnist", headers=AUTH, timeout=10).json()[
        "versions"
    ]
    pickle_npz(live_models / "mnist" / "2" / "model.npz", tripwire)  # a new version of mnist
    pickle_npz(live_models / "evil.npz", tripwire)  # a new model
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        failures = [
            json.loads(line) for line in server.log_text().splitlines() if '"model_load_failed"' in line
        ]
        if len({(f["pid"], f["path"]) for f in failures}) >= 2 * len(server.workers()):
            break
        time.sleep(POLL_SECONDS)
    assert {(f["path"]) for f in failures} == {
        str(live_models / "mnist" / "2" / "model.npz"),
        str(live_models / "evil.npz"),
    }
    assert not tripwire.exists()
    for _ in range(8):  # both workers
        info = requests.get(server.url + "/v1/models", headers=AUTH, timeout=10).json()
        assert [m["name"] for m in info["models"]] == ["fashion-mnist", "mnist"]
        assert info["models"][1]["versions"] == version_before
        predict = requests.post(server.url + "/predict", json={"inputs": [ROW]}, headers=AUTH, timeout=10)
        assert predict.status_code == 200 and predict.json()["version"] == "1"
    (live_models / "evil.npz").unlink()
    (live_models / "mnist" / "2" / "model.npz").unlink()


def test_a_pickle_npz_stops_start_up_with_one_line(tmp_path: Path) -> None:
    tripwire = tmp_path / "unpickled"
    models = tmp_path / "models"
    write_model(models / "mnist.npz", seed=1)
    pickle_npz(models / "evil.npz", tripwire)
    _, output, errors = failed_start(server_environment(models), tmp_path / "gunicorn.log")
    assert len(errors) == 1 and "evil.npz" in errors[0], output
    assert "Traceback" not in output
    assert not tripwire.exists()


# --- slow clients -------------------------------------------------------------------------
@dataclass
class Probe:
    """A well-behaved client asking every ``interval`` s while the bad ones do their worst."""

    url: str
    interval: float = 0.2
    results: list[tuple[float, float, bool]] = field(default_factory=list)  # start, took, ok
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                ok = requests.get(self.url + "/healthz", timeout=3 * TIMEOUT).status_code == 200
            except requests.RequestException:
                ok = False
            self.results.append((started, time.monotonic() - started, ok))
            self.stop.wait(self.interval)

    def longest_wait(self) -> float:
        return max(took for _, took, _ in self.results)


def slow_client(port: int, fast: bytes, slow: bytes, step: float, until: float) -> str:
    """Send ``fast``, then ``slow`` one byte every ``step`` seconds until ``until``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(fast)
            for byte in slow:
                if time.monotonic() > until:
                    return "gave up"
                sock.sendall(bytes([byte]))
                time.sleep(step)
            return "sent"
    except OSError as exc:
        return type(exc).__name__


@pytest.mark.slow
@pytest.mark.parametrize("where", ["headers", "body"])
def test_slow_clients_hold_a_sync_worker_until_the_timeout(
    live_models: Path, tmp_path: Path, where: str
) -> None:
    """Slowloris: 4 clients that send a byte every 0.5 s hold both sync workers. Each is freed
    by gunicorn's TIMEOUT (the worker is killed and replaced), so a well-behaved client waits
    at most about (clients / workers) x TIMEOUT, then is served. Production needs a buffering
    proxy in front (docs/RELIABILITY.md); this test holds the last line of defence."""
    env = server_environment(live_models, TIMEOUT=str(TIMEOUT))
    server = next(gen := serve_unchecked(env, tmp_path / "gunicorn.log"))
    clients = 4
    try:
        probe = Probe(server.url)
        prober = threading.Thread(target=probe.run)
        prober.start()
        time.sleep(1)
        body = _json({"inputs": [ROW]})
        head = http_head(
            "POST", "/predict", {**AUTH, "Content-Type": "application/json", "Content-Length": str(len(body))}
        )
        fast, slow = (b"", head + body) if where == "headers" else (head, body)
        until = time.monotonic() + 3 * TIMEOUT
        threads = [
            threading.Thread(target=slow_client, args=(server.port, fast, slow, 0.5, until))
            for _ in range(clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        time.sleep(1)
        probe.stop.set()
        prober.join()
        bound = (clients / 2) * TIMEOUT + 2 * TIMEOUT  # + the arbiter's check and a restart
        assert probe.longest_wait() < bound, probe.results
        assert all(ok for _, _, ok in probe.results[-3:]), probe.results  # served again
        assert "WORKER TIMEOUT" in server.log_text()
        print(
            f"\nslowloris ({where}): {clients} slow clients, 2 workers, TIMEOUT {TIMEOUT}s: "
            f"longest wait of a normal request {probe.longest_wait():.1f}s, "
            f"{sum(not ok for _, _, ok in probe.results)} of {len(probe.results)} failed"
        )
    finally:
        gen.close()
