"""The Open Inference Protocol routes (service/v2.py): the JSON as the spec has it, the binary
tensor extension, and the error contract ({"error": "..."}) through the test client and a real
gunicorn. test_v2_client.py drives the same routes with Triton's own client."""

from __future__ import annotations

import gzip
import json
import math
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pytest
import requests
from flask.testing import FlaskClient
from service_testkit import TEST_MAX_BATCH, TEST_MAX_REQUEST_BYTES
from test_gunicorn import gunicorn, server_env, stop, wait_ready  # noqa: F401 - fixture

from service.v2 import HEADER_LENGTH
from training import TwoLayerNet

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


# --- server, health and metadata ----------------------------------------------------------
def test_server_metadata_and_health(client: FlaskClient) -> None:
    metadata = client.get("/v2").get_json()
    assert metadata["name"] == "digits-serving"
    assert isinstance(metadata["version"], str)
    assert set(metadata["extensions"]) == {"binary_tensor_data", "classification"}
    assert client.get("/v2/health/live").get_json() == {"live": True}
    assert client.get("/v2/health/ready").get_json() == {"ready": True}


@pytest.mark.parametrize(
    "name,classes,shapes",
    [
        ("mnist", 10, [[-1, 28, 28], [-1, 784]]),  # metadata input_shape [28, 28]
        ("fashion-mnist", 10, [[-1, 784], [-1, 28, 28]]),  # metadata input_shape [784]
    ],
)
def test_model_metadata_declares_input_and_outputs(
    client: FlaskClient, name: str, classes: int, shapes: list[list[int]]
) -> None:
    metadata = client.get(f"/v2/models/{name}").get_json()
    version = client.get(f"/v1/models/{name}").get_json()["version"]
    assert metadata["name"] == name
    assert metadata["versions"] == [version]
    assert isinstance(metadata["platform"], str)
    [inp] = metadata["inputs"]
    assert {k: inp[k] for k in ("name", "datatype", "shape")} == {
        "name": "input",
        "datatype": "FP32",
        "shape": [-1, 784],
    }
    assert inp["parameters"]["shapes"] == shapes
    assert {"FP32", "FP64", "UINT8", "INT64"} <= set(inp["parameters"]["datatypes"])
    probabilities, label = metadata["outputs"]
    assert probabilities == {"name": "probabilities", "datatype": "FP32", "shape": [-1, classes]}
    assert {k: label[k] for k in ("name", "datatype", "shape")} == {
        "name": "label",
        "datatype": "INT64",
        "shape": [-1],
    }
    assert len(label["parameters"]["class_names"]) == classes
    assert client.get(f"/v2/models/{name}/versions/{version}").get_json() == metadata
    assert client.get(f"/v2/models/{name}/ready").get_json() == {"name": name, "ready": True}
    assert client.get(f"/v2/models/{name}/versions/{version}/ready").get_json() == {
        "name": name,
        "ready": True,
    }


# --- inference: JSON ----------------------------------------------------------------------
def test_infer_fp32_answers_as_the_network(client: FlaskClient, mnist_net: TwoLayerNet) -> None:
    x = digits().astype(np.float32) / 255
    body = infer(client, {"id": "req-1", "inputs": [tensor(x.ravel().tolist(), [3, ROW])]})
    version = client.get("/v1/models/mnist").get_json()["version"]
    assert (body["model_name"], body["model_version"], body["id"]) == ("mnist", version, "req-1")
    probabilities, label = body["outputs"]
    expected = mnist_net.predict(x).astype(np.float32)
    assert (probabilities["name"], probabilities["datatype"], probabilities["shape"]) == (
        "probabilities",
        "FP32",
        [3, 10],
    )
    np.testing.assert_array_equal(np.asarray(probabilities["data"], np.float32), expected.ravel())
    assert label == {
        "name": "label",
        "datatype": "INT64",
        "shape": [3],
        "data": expected.argmax(axis=1).tolist(),
    }
    assert "parameters" not in body


@pytest.mark.parametrize(
    "datatype,shape,nested",
    [
        ("FP32", [3, 784], True),  # rows
        ("FP32", [3, 28, 28], False),  # the image grid, flat data
        ("FP32", [3, 28, 28], True),  # the image grid, nested data
        ("FP64", [3, 784], False),
        ("FP16", [3, 784], False),
        ("UINT8", [3, 784], False),
        ("UINT8", [3, 28, 28], True),
        ("INT32", [3, 784], False),
        ("INT64", [3, 28, 28], False),
        ("UINT16", [3, 784], False),
    ],
)
def test_every_form_of_the_input_gives_the_same_answer(
    client: FlaskClient, datatype: str, shape: list[int], nested: bool
) -> None:
    pixels = digits()
    reference = infer(client, {"inputs": [tensor(pixels.ravel().tolist(), [3, ROW], "UINT8")]})
    values = pixels if datatype[0] in "UI" else pixels.astype(np.float64) / 255
    if datatype == "FP16":  # the only form that cannot carry x / 255 exactly
        values = pixels.astype(np.float16) / np.float16(255)
    data = values.reshape(shape).tolist() if nested else values.ravel().tolist()
    body = infer(client, {"inputs": [tensor(data, shape, datatype)]})
    if datatype == "FP16":
        assert outputs(body)["label"] == outputs(reference)["label"]
    else:
        assert body == reference


def test_uint8_is_the_v1_pixel_range_0_255(client: FlaskClient) -> None:
    pixels = digits(2)
    v1 = client.post("/predict", json={"inputs": pixels.tolist(), "pixel_range": "0-255"})
    body = infer(client, {"inputs": [tensor(pixels.ravel().tolist(), [2, ROW], "UINT8")]})
    predictions = v1.get_json()["predictions"]
    assert outputs(body)["label"]["data"] == [p["label"] for p in predictions]
    assert outputs(body)["probabilities"]["data"] == [v for p in predictions for v in p["probabilities"]]


def test_outputs_select_and_order_what_comes_back(client: FlaskClient) -> None:
    request = {"inputs": [tensor(digits(2).ravel().tolist(), [2, ROW], "UINT8")]}
    both = infer(client, request)
    only = infer(client, {**request, "outputs": [{"name": "label"}]})
    assert only["outputs"] == [outputs(both)["label"]]
    swapped = infer(client, {**request, "outputs": [{"name": "label"}, {"name": "probabilities"}]})
    assert swapped["outputs"] == both["outputs"][::-1]
    assert "id" not in both
    assert infer(client, {**request, "outputs": []})["outputs"] == both["outputs"]


def test_unknown_fields_and_parameters_are_ignored(client: FlaskClient) -> None:
    """Other clients send parameters and fields of their servers (priority, timeout, ...)."""
    request = {"inputs": [tensor(digits(1).ravel().tolist(), [1, ROW], "UINT8")]}
    plain = infer(client, request)
    extra = infer(
        client,
        {
            **request,
            "parameters": {"priority": 1, "timeout": 100},
            "model_name": "mnist",
            "inputs": [{**request["inputs"][0], "parameters": {"x": 1}}],
        },
    )
    assert extra == plain


def test_classification_extension(client: FlaskClient) -> None:
    request = {"inputs": [tensor(digits(2).ravel().tolist(), [2, ROW], "UINT8")]}
    probabilities = np.asarray(outputs(infer(client, request))["probabilities"]["data"])
    top = infer(
        client, {**request, "outputs": [{"name": "probabilities", "parameters": {"classification": 3}}]}
    )["outputs"][0]
    assert (top["datatype"], top["shape"]) == ("BYTES", [2, 3])
    rows = probabilities.reshape(2, 10)
    for i, row in enumerate(rows):
        expected = np.argsort(-row, kind="stable")[:3]
        entries = [s.split(":") for s in top["data"][3 * i : 3 * i + 3]]
        assert [int(index) for _, index, _ in entries] == expected.tolist()
        assert [name for _, _, name in entries] == [str(k) for k in expected]  # class names
        np.testing.assert_allclose([float(v) for v, _, _ in entries], row[expected], atol=1e-6)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_request_bodies(client: FlaskClient, encoding: str) -> None:
    request = orjson.dumps({"inputs": [tensor(digits(2).ravel().tolist(), [2, ROW], "UINT8")]})
    compressed = gzip.compress(request) if encoding == "gzip" else zlib.compress(request)
    response = client.post(
        INFER, data=compressed, headers={"Content-Encoding": encoding}, content_type="application/json"
    )
    assert response.status_code == 200
    assert response.get_json() == infer(client, orjson.loads(request))


# --- inference: the binary tensor data extension ------------------------------------------
def test_binary_inputs_and_outputs(client: FlaskClient) -> None:
    pixels = digits(4)
    x = pixels.astype(np.float32) / 255
    json_answer = infer(client, {"inputs": [tensor(x.ravel().tolist(), [4, ROW])]})
    header = {
        "id": "b",
        "inputs": [
            {
                "name": "input",
                "shape": [4, 28, 28],
                "datatype": "FP32",
                "parameters": {"binary_data_size": x.nbytes},
            }
        ],
        "outputs": [
            {"name": "probabilities", "parameters": {"binary_data": True}},
            {"name": "label", "parameters": {"binary_data": False}},
        ],
    }
    body, headers = binary_body(header, x.astype("<f4").tobytes())
    response = client.post(INFER, data=body, headers=headers)
    assert response.status_code == 200
    assert response.mimetype == "application/octet-stream"
    answer, arrays = split_binary(response)
    probabilities, label = answer["outputs"]
    assert probabilities == {
        "name": "probabilities",
        "datatype": "FP32",
        "shape": [4, 10],
        "parameters": {"binary_data_size": 4 * 10 * 4},
    }
    assert label == outputs(json_answer)["label"]
    assert answer["id"] == "b"
    np.testing.assert_array_equal(
        arrays["probabilities"].ravel(), np.asarray(outputs(json_answer)["probabilities"]["data"], np.float32)
    )


@pytest.mark.parametrize("datatype", ["UINT8", "INT16", "FP64"])
def test_binary_input_datatypes(client: FlaskClient, datatype: str) -> None:
    pixels = digits(2)
    dtype = {"UINT8": "<u1", "INT16": "<i2", "FP64": "<f8"}[datatype]
    values = (pixels / 255 if datatype == "FP64" else pixels).astype(dtype)
    header = {
        "inputs": [
            {
                "name": "input",
                "shape": [2, ROW],
                "datatype": datatype,
                "parameters": {"binary_data_size": values.nbytes},
            }
        ]
    }
    body, headers = binary_body(header, values.tobytes())
    response = client.post(INFER, data=body, headers=headers)
    assert response.status_code == 200, response.get_json()
    reference = infer(client, {"inputs": [tensor(pixels.ravel().tolist(), [2, ROW], "UINT8")]})
    assert response.get_json() == reference


def test_binary_data_output_sends_every_output_as_bytes(client: FlaskClient) -> None:
    request = {"inputs": [tensor(digits(3).ravel().tolist(), [3, ROW], "UINT8")]}
    reference = infer(client, request)
    response = client.post(INFER, data=orjson.dumps({**request, "parameters": {"binary_data_output": True}}))
    header, arrays = split_binary(response)
    assert [o["parameters"]["binary_data_size"] for o in header["outputs"]] == [3 * 10 * 4, 3 * 8]
    assert arrays["label"].tolist() == outputs(reference)["label"]["data"]
    np.testing.assert_array_equal(
        arrays["probabilities"].ravel(), np.asarray(outputs(reference)["probabilities"]["data"], np.float32)
    )


def test_binary_classification_is_length_prefixed_bytes(client: FlaskClient) -> None:
    request = {"inputs": [tensor(digits(1).ravel().tolist(), [1, ROW], "UINT8")]}
    as_json = infer(
        client, {**request, "outputs": [{"name": "probabilities", "parameters": {"classification": 2}}]}
    )["outputs"][0]["data"]
    response = client.post(
        INFER,
        data=orjson.dumps(
            {
                **request,
                "outputs": [
                    {"name": "probabilities", "parameters": {"classification": 2, "binary_data": True}}
                ],
            }
        ),
    )
    raw = response.get_data()[int(response.headers[HEADER_LENGTH]) :]
    items, offset = [], 0
    while offset < len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        items.append(raw[offset + 4 : offset + 4 + length].decode())
        offset += 4 + length
    assert items == as_json


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


@pytest.mark.parametrize("case", ERRORS, ids=[c.id for c in ERRORS])
def test_error_contract(client: FlaskClient, case: Case) -> None:
    response = client.open(case.path, method=case.method, data=case.body, headers=case.headers)
    assert_v2_error(response.status_code, response.content_type, response.get_json(), case)


def test_case_ids_are_unique() -> None:
    assert len({c.id for c in ERRORS}) == len(ERRORS)


def test_405_names_the_allowed_methods(client: FlaskClient) -> None:
    assert "POST" in client.get(INFER).headers["Allow"]


# --- over a real gunicorn -----------------------------------------------------------------
@pytest.fixture(scope="module")
def server(
    server_env: dict[str, str],  # noqa: F811 - the fixture imported above
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    proc = gunicorn(server_env, log)
    try:
        yield wait_ready(proc, log)
    finally:
        assert stop(proc) == 0
        assert "Traceback" not in log.read_text()


@pytest.mark.parametrize("case", ERRORS, ids=[c.id for c in ERRORS])
def test_error_contract_over_http(server: str, case: Case) -> None:
    response = requests.request(
        case.method, server + case.path, data=case.body, headers=case.headers, timeout=10
    )
    assert_v2_error(response.status_code, response.headers.get("Content-Type"), response.json(), case)


def test_json_and_binary_over_http(server: str, client: FlaskClient) -> None:
    pixels = digits(5)
    request = {"inputs": [tensor(pixels.ravel().tolist(), [5, 28, 28], "UINT8")]}
    assert requests.post(server + INFER, json=request, timeout=10).json() == infer(client, request)
    header = {
        "inputs": [
            {
                "name": "input",
                "shape": [5, ROW],
                "datatype": "UINT8",
                "parameters": {"binary_data_size": pixels.nbytes},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    body, headers = binary_body(header, pixels.tobytes())
    response = requests.post(server + INFER, data=body, headers=headers, timeout=10)
    assert response.status_code == 200
    answer, arrays = split_binary(response)
    assert answer["model_name"] == "mnist"
    assert arrays["label"].tolist() == outputs(infer(client, request))["label"]["data"]
