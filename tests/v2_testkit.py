"""Helpers for the Open Inference Protocol tests: requests and answers as a client builds and
reads them (JSON and the binary tensor extension), and the v2 error contract ({"error": "..."})
as one table. Run through the Flask test client (tests/service/test_v2.py) and against a real
gunicorn (tests/integration/test_v2_gunicorn.py)."""

from __future__ import annotations

import gzip
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from flask.testing import FlaskClient
from service_testkit import TEST_MAX_BATCH, TEST_MAX_REQUEST_BYTES

from service.v2 import HEADER_LENGTH

INFER = "/v2/models/mnist/infer"
ROW = 784


def digits(n: int = 3, seed: int = 0) -> np.ndarray:
    """``n`` inputs of pixel values 0-255 (uint8, (n, 784))."""
    return np.random.default_rng(seed).integers(0, 256, (n, ROW), dtype=np.uint8)


def tensor(values: Any, shape: list[int], datatype: str = "FP32", **extra: Any) -> dict[str, Any]:
    return {"name": "input", "shape": shape, "datatype": datatype, "data": values, **extra}


def infer(client: FlaskClient, body: Any, path: str = INFER, **kwargs: Any) -> Any:
    response = client.post(path, data=orjson.dumps(body), content_type="application/json", **kwargs)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def outputs(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {output["name"]: output for output in body["outputs"]}


def binary_body(header: dict[str, Any], *chunks: bytes) -> tuple[bytes, dict[str, str]]:
    head = orjson.dumps(header)
    return head + b"".join(chunks), {
        HEADER_LENGTH: str(len(head)),
        "Content-Type": "application/octet-stream",
    }


def split_binary(response: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The JSON and each binary output as an array, as a client reads them."""
    length = int(response.headers[HEADER_LENGTH])
    data = response.get_data() if hasattr(response, "get_data") else response.content
    header = orjson.loads(data[:length])
    arrays, offset = {}, length
    for output in header["outputs"]:
        size = output.get("parameters", {}).get("binary_data_size")
        if size is None:
            continue
        dtype = {"FP32": "<f4", "INT64": "<i8"}[output["datatype"]]
        arrays[output["name"]] = np.frombuffer(data[offset : offset + size], dtype=dtype).reshape(
            output["shape"]
        )
        offset += size
    assert offset == len(data)
    return header, arrays


# --- the error contract -------------------------------------------------------------------
JSON = {"Content-Type": "application/json"}
ZEROS = [0.0] * ROW


@dataclass(frozen=True)
class Case:
    id: str
    body: bytes
    status: int = 400
    #: A piece of the message that says what was wrong.
    says: str = ""
    path: str = INFER
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON))


def _case(id: str, body: Any, says: str = "", status: int = 400, **kw: Any) -> Case:
    data = body if isinstance(body, bytes) else json.dumps(body, allow_nan=True).encode()
    return Case(id, data, status, says, **kw)


def _one(**changes: Any) -> dict[str, Any]:
    return {"inputs": [{**tensor(ZEROS, [1, ROW]), **changes}]}


def _binary(size: int, payload: bytes, length: str | None = None, **changes: Any) -> Case:
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, ROW],
                    "datatype": "UINT8",
                    "parameters": {"binary_data_size": size},
                    **changes,
                }
            ]
        }
    )
    return Case(
        f"binary-{size}-{len(payload)}-{length}",
        header + payload,
        400,
        "",
        headers={HEADER_LENGTH: length or str(len(header))},
    )


ERRORS = [
    _case("not-json", b'{"inputs": [', "not valid JSON"),
    _case("not-an-object", [1, 2], "Invalid input type"),
    _case("no-inputs", {}, "inputs: Missing data"),
    _case("empty-inputs", {"inputs": []}, "inputs: Shorter than minimum"),
    _case("two-inputs", {"inputs": [tensor(ZEROS, [1, ROW])] * 2}, "one input"),
    _case("wrong-input-name", _one(name="INPUT__0"), "'INPUT__0'"),
    _case("no-name", {"inputs": [{"shape": [1, ROW], "datatype": "FP32", "data": ZEROS}]}, "inputs[0].name"),
    _case("unknown-datatype", _one(datatype="FLOAT"), "inputs[0].datatype"),
    _case("bytes-datatype", _one(datatype="BYTES"), "not supported"),
    _case("bool-datatype", _one(datatype="BOOL"), "not supported"),
    _case(
        "no-data", {"inputs": [{"name": "input", "shape": [1, ROW], "datatype": "FP32"}]}, "inputs[0].data"
    ),
    _case("shape-not-a-list", _one(shape=784), "inputs[0].shape"),
    _case("shape-negative", _one(shape=[-1, ROW]), "inputs[0].shape"),
    _case("shape-boolean", _one(shape=[True, ROW]), "inputs[0].shape"),
    _case("shape-unbatched", _one(shape=[ROW]), "does not fit"),
    _case("shape-wrong-width", _one(shape=[1, 783], data=ZEROS[:783]), "does not fit"),
    _case("shape-wrong-grid", _one(shape=[1, 28, 27], data=ZEROS[:756]), "does not fit"),
    _case("empty-batch", _one(shape=[0, ROW], data=[]), "empty"),
    _case(
        "batch-over-limit",
        _one(shape=[TEST_MAX_BATCH + 1, ROW], data=[0] * ROW * (TEST_MAX_BATCH + 1), datatype="UINT8"),
        f"at most {TEST_MAX_BATCH}",
    ),
    _case("too-few-values", _one(shape=[2, ROW]), "holds 1568 values, data has 784"),
    _case("too-many-values", _one(data=ZEROS + [0.0]), "data has 785"),
    _case("strings", _one(data=["0.5"] * ROW), "must be numbers"),
    _case("booleans", _one(data=[True] * ROW), "must be numbers"),
    _case("nulls", _one(data=[None] * ROW), "must be numbers"),
    _case("objects", _one(data=[{"v": 0}] * ROW), "must be numbers"),
    _case("data-not-a-list", _one(data=0.5), "must be numbers"),
    _case("above-one", _one(data=[1.5] + ZEROS[1:]), "must be in [0, 1]"),
    _case("negative", _one(data=[-0.5] + ZEROS[1:]), "must be in [0, 1]"),
    _case("nan", _one(data=[math.nan] + ZEROS[1:]), "finite"),
    _case("infinity", _one(data=[math.inf] + ZEROS[1:]), "finite"),
    _case("overflows-float32", _one(data=[1e300] + ZEROS[1:]), "finite"),
    _case("uint8-above-255", _one(datatype="UINT8", data=[256] + [0] * 783), "[0, 255]"),
    _case("uint8-negative", _one(datatype="UINT8", data=[-1] + [0] * 783), "[0, 255]"),
    _case("uint8-fraction", _one(datatype="UINT8", data=[1.5] + [0] * 783), "whole"),
    _case("id-not-a-string", {**_one(), "id": 7}, "id: Not a valid string"),
    _case("unknown-output", {**_one(), "outputs": [{"name": "logits"}]}, "outputs[0].name"),
    _case("output-twice", {**_one(), "outputs": [{"name": "label"}] * 2}, "twice"),
    _case(
        "binary-data-not-bool",
        {**_one(), "outputs": [{"name": "label", "parameters": {"binary_data": "yes"}}]},
        "binary_data",
    ),
    _case(
        "binary-data-output-not-bool",
        {**_one(), "parameters": {"binary_data_output": 1}},
        "binary_data_output",
    ),
    _case(
        "classification-on-label",
        {**_one(), "outputs": [{"name": "label", "parameters": {"classification": 2}}]},
        "classification",
    ),
    _case(
        "classification-negative",
        {**_one(), "outputs": [{"name": "probabilities", "parameters": {"classification": -1}}]},
        "classification",
    ),
    _case("data-and-binary", _one(parameters={"binary_data_size": 3136}), "not both"),
    _case(
        "binary-size-not-int",
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, ROW],
                    "datatype": "UINT8",
                    "parameters": {"binary_data_size": "x"},
                }
            ]
        },
        "binary_data_size must be a non-negative integer",
    ),
    _binary(ROW, b"\0" * ROW, length="x"),
    _binary(ROW, b"\0" * ROW, length="100000"),
    _binary(ROW, b"\0" * (ROW - 1)),  # fewer bytes than declared
    _binary(ROW - 1, b"\0" * (ROW - 1)),  # declared and sent, but not the shape's size
    _binary(ROW, b"\0" * (ROW + 1)),  # bytes beyond the declared ones
    Case(
        "bytes-after-json-without-binary-inputs",
        orjson.dumps(_one()) + b"\0\0",
        says="no input has binary_data_size",
        headers={HEADER_LENGTH: str(len(orjson.dumps(_one())))},
    ),
    Case("unsupported-encoding", b"xx", 415, "Content-Encoding", headers={**JSON, "Content-Encoding": "br"}),
    Case("corrupt-gzip", b"not gzip", 400, "gzip", headers={**JSON, "Content-Encoding": "gzip"}),
    Case(
        "gzip-bomb",
        gzip.compress(b" " * (TEST_MAX_REQUEST_BYTES * 4)),
        413,
        "decompressed",
        headers={**JSON, "Content-Encoding": "gzip"},
    ),
    Case("body-too-large", b" " * (TEST_MAX_REQUEST_BYTES + 1), 413),
    Case(
        "unknown-model",
        orjson.dumps(_one()),
        404,
        "no model named 'nope' (available: fashion-mnist, mnist)",
        path="/v2/models/nope/infer",
    ),
    Case(
        "unknown-version",
        orjson.dumps(_one()),
        404,
        "has no version '999'",
        path="/v2/models/mnist/versions/999/infer",
    ),
    Case("unknown-model-metadata", b"", 404, "no model named", "/v2/models/nope", "GET"),
    Case("unknown-model-ready", b"", 404, "no model named", "/v2/models/nope/ready", "GET"),
    Case("unknown-v2-route", b"", 404, "not found", "/v2/repository/index", "GET"),
    Case("get-infer", b"", 405, "not allowed", INFER, "GET"),
    Case("post-metadata", b"{}", 405, "not allowed", "/v2/models/mnist"),
]


def assert_v2_error(status: int, content_type: str | None, body: Any, case: Case) -> None:
    assert status == case.status, body
    assert content_type is not None and content_type.startswith("application/json")
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert isinstance(body["error"], str) and body["error"]
    assert case.says in body["error"]
