"""The Open Inference Protocol routes (service/v2.py): the JSON as the spec has it, the binary
tensor extension, and the error contract ({"error": "..."}) through the test client (the table
is in tests/v2_testkit.py). tests/integration/test_v2_gunicorn.py runs the contract against a
real gunicorn; tests/integration/test_v2_client.py drives the routes with Triton's own client."""

from __future__ import annotations

import gzip
import struct
import zlib

import numpy as np
import orjson
import pytest
from flask.testing import FlaskClient
from v2_testkit import (
    ERRORS,
    INFER,
    ROW,
    Case,
    assert_v2_error,
    binary_body,
    digits,
    infer,
    outputs,
    split_binary,
    tensor,
)

from service.v2 import HEADER_LENGTH
from training import TwoLayerNet


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
    probabilities, label, attributions = metadata["outputs"]
    assert {k: attributions[k] for k in ("name", "datatype", "shape")} == {
        "name": "attributions",
        "datatype": "FP32",
        "shape": [-1, 784],
    }
    assert attributions["parameters"]["methods"] == ["integrated_gradients", "gradient"]
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


@pytest.mark.parametrize("case", ERRORS, ids=[c.id for c in ERRORS])
def test_error_contract(client: FlaskClient, case: Case) -> None:
    response = client.open(case.path, method=case.method, data=case.body, headers=case.headers)
    assert_v2_error(response.status_code, response.content_type, response.get_json(), case)


def test_case_ids_are_unique() -> None:
    assert len({c.id for c in ERRORS}) == len(ERRORS)


def test_405_names_the_allowed_methods(client: FlaskClient) -> None:
    assert "POST" in client.get(INFER).headers["Allow"]


# --- the attributions output --------------------------------------------------------------
def test_attributions_are_sent_only_when_asked_and_equal_v1_explain(client: FlaskClient) -> None:
    pixels = digits(2)
    request = {"inputs": [tensor(pixels.ravel().tolist(), [2, ROW], "UINT8")]}
    assert [o["name"] for o in infer(client, request)["outputs"]] == ["probabilities", "label"]
    asked = {
        **request,
        "outputs": [{"name": "label"}, {"name": "attributions"}],
        "parameters": {"method": "integrated_gradients", "target": [3, 4], "steps": 16},
    }
    body = outputs(infer(client, asked))
    assert (body["attributions"]["datatype"], body["attributions"]["shape"]) == ("FP32", [2, ROW])
    v1 = client.post(
        "/v1/models/mnist/explain",
        json={"inputs": pixels.tolist(), "pixel_range": "0-255", "target": [3, 4], "steps": 16},
    ).get_json()
    expected = np.asarray([item["attributions"] for item in v1["explanations"]], dtype=np.float32)
    np.testing.assert_allclose(np.reshape(body["attributions"]["data"], (2, ROW)), expected.reshape(2, ROW))
    assert body["label"]["data"] == [item["label"] for item in v1["explanations"]]


def test_attributions_as_binary_data(client: FlaskClient) -> None:
    pixels = digits(1)
    header = {
        "inputs": [
            {"name": "input", "shape": [1, ROW], "datatype": "UINT8", "parameters": {"binary_data_size": ROW}}
        ],
        "outputs": [{"name": "attributions", "parameters": {"binary_data": True}}],
        "parameters": {"method": "gradient"},
    }
    data, headers = binary_body(header, pixels.tobytes())
    response = client.post(INFER, data=data, headers=headers)
    _, arrays = split_binary(response)
    v1 = client.post(
        "/v1/models/mnist/explain",
        json={"inputs": pixels.tolist(), "pixel_range": "0-255", "method": "gradient"},
    ).get_json()
    np.testing.assert_allclose(
        arrays["attributions"], np.reshape(v1["explanations"][0]["attributions"], (1, ROW))
    )


@pytest.mark.parametrize(
    ("parameters", "outputs_asked", "says"),
    [
        ({"method": "gradient"}, None, "parameters.method: for the 'attributions' output only"),
        ({"method": "deeplift"}, [{"name": "attributions"}], "parameters.method must be one of"),
        ({"target": 10}, [{"name": "attributions"}], "parameters.target must be a class in [0, 9]"),
        ({"steps": 0}, [{"name": "attributions"}], "parameters.steps must be an integer in [1, 1024]"),
        ({"method": "gradient", "steps": 4}, [{"name": "attributions"}], "integrated_gradients method only"),
        ({}, [{"name": "attributions", "parameters": {"classification": 2}}], "classification applies"),
    ],
)
def test_attributions_parameters_are_checked(
    client: FlaskClient,
    parameters: dict[str, object],
    outputs_asked: list[dict[str, object]] | None,
    says: str,
) -> None:
    request: dict[str, object] = {"inputs": [tensor(digits(1).ravel().tolist(), [1, ROW], "UINT8")]}
    request["parameters"] = parameters
    if outputs_asked is not None:
        request["outputs"] = outputs_asked
    response = client.post(INFER, data=orjson.dumps(request), content_type="application/json")
    assert response.status_code == 400
    assert says in response.get_json()["error"]
