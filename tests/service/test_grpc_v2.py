"""The gRPC adapter (service/grpc_v2.py) and its server (service/grpc_server.py), in this
process: a real grpc server on a loopback port over the test app, called through a real channel.
The error contract as one table, every input form, and the answers held to HTTP v2's."""

from __future__ import annotations

import dataclasses
import io
import socket
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from service import create_app
from service.grpc_server import SERVICE, GrpcServer
from service.grpc_v2 import RPCS
from service.proto import open_inference_pb2 as pb
from service.settings import Settings

TOKEN = "unit-grpc-token-0123456789"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
INPUT = pb.ModelInferRequest.InferInputTensor
OUTPUT = pb.ModelInferRequest.InferRequestedOutputTensor


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def grpc_app(settings: Settings) -> Iterator[tuple[Flask, Settings]]:
    grpc_settings = dataclasses.replace(settings, auth_token=TOKEN, grpc_port=_free_port())
    app = create_app(grpc_settings)
    server = GrpcServer(app, grpc_settings)
    server.start()
    yield app, grpc_settings
    server.stop(0)


@pytest.fixture(scope="module")
def call(grpc_app: tuple[Flask, Settings]) -> Iterator[Any]:
    """call(method, request, metadata=AUTH) -> response; raises grpc.RpcError."""
    _, settings = grpc_app
    channel = grpc.insecure_channel(f"127.0.0.1:{settings.grpc_port}")
    stubs = {
        method: channel.unary_unary(
            f"/{SERVICE}/{method}",
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )
        for method, (_, request_type, response_type, _) in RPCS.items()
    }

    def invoke(method: str, request: Any, metadata: Any = AUTH) -> Any:
        return stubs[method](request, metadata=metadata, timeout=30)

    yield invoke
    channel.close()


def raw(pixels: np.ndarray, datatype: str = "UINT8", model: str = "mnist", **fields: Any) -> Any:
    tensor = INPUT(name="input", datatype=datatype, shape=list(pixels.shape))
    return pb.ModelInferRequest(
        model_name=model, inputs=[tensor], raw_input_contents=[pixels.tobytes()], **fields
    )


def pixels(n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def outputs(response: Any) -> dict[str, np.ndarray]:
    dtypes = {"FP32": "<f4", "INT64": "<i8"}
    return {
        o.name: np.frombuffer(data, dtype=dtypes[o.datatype]).reshape(list(o.shape))
        for o, data in zip(response.outputs, response.raw_output_contents, strict=True)
        if o.datatype in dtypes
    }


def http_v2(client: FlaskClient, x: np.ndarray) -> dict[str, np.ndarray]:
    body = {
        "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "UINT8", "data": x.ravel().tolist()}]
    }
    response = client.post("/v2/models/mnist/infer", json=body)
    return {o["name"]: np.asarray(o["data"]) for o in response.get_json()["outputs"]}


def test_raw_and_typed_contents_answer_as_http_v2(call: Any, client: FlaskClient) -> None:
    x = pixels()
    expected = http_v2(client, x)
    for request in (
        raw(x),
        raw(x.reshape(3, 784)),
        raw((x / 255.0).astype("<f4"), "FP32"),
        raw((x / 255.0).astype("<f2"), "FP16"),
        pb.ModelInferRequest(
            model_name="mnist",
            inputs=[
                INPUT(
                    name="input",
                    datatype="FP32",
                    shape=[3, 784],
                    contents=pb.InferTensorContents(
                        fp32_contents=(x.reshape(3, 784) / 255.0).astype(np.float32).ravel().tolist()
                    ),
                )
            ],
        ),
        pb.ModelInferRequest(
            model_name="mnist",
            inputs=[
                INPUT(
                    name="input",
                    datatype="INT32",
                    shape=[3, 28, 28],
                    contents=pb.InferTensorContents(int_contents=x.ravel().tolist()),
                )
            ],
        ),
    ):
        got = outputs(call("ModelInfer", request))
        assert np.array_equal(got["label"], expected["label"])
        np.testing.assert_allclose(got["probabilities"].ravel(), expected["probabilities"].ravel(), atol=2e-3)


def test_bytes_elements_are_image_files(call: Any, client: FlaskClient) -> None:
    x = pixels(2)
    files = []
    for image in x:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        files.append(buffer.getvalue())
    typed = pb.ModelInferRequest(
        model_name="mnist",
        inputs=[
            INPUT(
                name="input",
                datatype="BYTES",
                shape=[2],
                contents=pb.InferTensorContents(bytes_contents=files),
            )
        ],
    )
    uploads = [client.post("/predict", data=f, content_type="image/png").get_json() for f in files]
    assert outputs(call("ModelInfer", typed))["label"].tolist() == [
        u["predictions"][0]["label"] for u in uploads
    ]
    # as they are, without MNIST's preprocessing: the pixels themselves
    as_is = pb.ModelInferRequest()
    as_is.CopyFrom(typed)
    as_is.inputs[0].parameters["preprocess"].bool_param = False
    assert np.array_equal(outputs(call("ModelInfer", as_is))["label"], http_v2(client, x)["label"])


def test_output_selection_classification_and_attributions(call: Any, client: FlaskClient) -> None:
    x = pixels(2)
    request = raw(x, outputs=[OUTPUT(name="label")])
    response = call("ModelInfer", request)
    assert [o.name for o in response.outputs] == ["label"]

    top = raw(x, outputs=[OUTPUT(name="probabilities")])
    top.outputs[0].parameters["classification"].int64_param = 3
    response = call("ModelInfer", top)
    assert response.outputs[0].datatype == "BYTES" and list(response.outputs[0].shape) == [2, 3]
    http = client.post(
        "/v2/models/mnist/infer",
        json={
            "inputs": [
                {"name": "input", "shape": [2, 28, 28], "datatype": "UINT8", "data": x.ravel().tolist()}
            ],
            "outputs": [{"name": "probabilities", "parameters": {"classification": 3}}],
        },
    ).get_json()["outputs"][0]["data"]
    assert _bytes_elements(response.raw_output_contents[0]) == http

    why = raw(x, outputs=[OUTPUT(name="attributions")])
    why.parameters["method"].string_param = "gradient"
    why.parameters["target"].int64_param = 3
    got = outputs(call("ModelInfer", why))["attributions"]
    http_why = client.post(
        "/v2/models/mnist/infer",
        json={
            "inputs": [
                {"name": "input", "shape": [2, 28, 28], "datatype": "UINT8", "data": x.ravel().tolist()}
            ],
            "outputs": [{"name": "attributions"}],
            "parameters": {"method": "gradient", "target": 3},
        },
    ).get_json()["outputs"][0]["data"]
    np.testing.assert_allclose(got.ravel(), np.asarray(http_why), rtol=1e-5, atol=1e-7)


def _bytes_elements(data: bytes) -> list[str]:
    from service.oip import bytes_elements

    return [e.decode() for e in bytes_elements(data)]


def _two_inputs() -> Any:
    request = raw(pixels(1))
    request.inputs.append(INPUT(name="input", datatype="UINT8", shape=[1, 784]))
    return request


def _with(edit: Any) -> Any:
    request = raw(pixels(1))
    edit(request)
    return request


C = grpc.StatusCode
#: (case, method, request, metadata, status code, a part of the message)
CONTRACT = [
    ("unknown model", "ModelInfer", raw(pixels(1), model="nope"), AUTH, C.NOT_FOUND, "no model named 'nope'"),
    (
        "unknown version",
        "ModelInfer",
        raw(pixels(1), model_version="99"),
        AUTH,
        C.NOT_FOUND,
        "no version '99'",
    ),
    (
        "no model name",
        "ModelInfer",
        raw(pixels(1), model=""),
        AUTH,
        C.INVALID_ARGUMENT,
        "model_name is empty",
    ),
    ("unknown model ready", "ModelReady", pb.ModelReadyRequest(name="nope"), (), C.NOT_FOUND, "nope"),
    ("unknown metadata", "ModelMetadata", pb.ModelMetadataRequest(name="x"), AUTH, C.NOT_FOUND, "'x'"),
    ("no token", "ModelInfer", raw(pixels(1)), (), C.UNAUTHENTICATED, "needs a bearer token"),
    (
        "wrong token",
        "ModelInfer",
        raw(pixels(1)),
        (("authorization", "Bearer x"),),
        C.UNAUTHENTICATED,
        "not valid",
    ),
    (
        "basic scheme",
        "ModelMetadata",
        pb.ModelMetadataRequest(name="mnist"),
        (("authorization", "Basic x"),),
        C.UNAUTHENTICATED,
        "bearer token",
    ),
    (
        "783 values",
        "ModelInfer",
        raw(np.zeros((1, 783), np.float32), "FP32"),
        AUTH,
        C.INVALID_ARGUMENT,
        "shape [1, 783] does not fit",
    ),
    (
        "NaN",
        "ModelInfer",
        raw(np.full((1, 784), np.nan, np.float32), "FP32"),
        AUTH,
        C.INVALID_ARGUMENT,
        "must be finite",
    ),
    (
        "over 1",
        "ModelInfer",
        raw(np.full((1, 784), 2, np.float32), "FP32"),
        AUTH,
        C.INVALID_ARGUMENT,
        "must be in [0, 1]",
    ),
    ("too many", "ModelInfer", raw(pixels(17)), AUTH, C.INVALID_ARGUMENT, "at most 16 inputs"),
    (
        "raw size",
        "ModelInfer",
        _with(lambda r: r.raw_input_contents.__setitem__(0, b"\0" * 5)),
        AUTH,
        C.INVALID_ARGUMENT,
        "is 784 bytes; raw_input_contents has 5",
    ),
    ("two inputs", "ModelInfer", _two_inputs(), AUTH, C.INVALID_ARGUMENT, "the model takes one input"),
    (
        "input name",
        "ModelInfer",
        _with(lambda r: setattr(r.inputs[0], "name", "x")),
        AUTH,
        C.INVALID_ARGUMENT,
        "unexpected input 'x'",
    ),
    (
        "datatype",
        "ModelInfer",
        _with(lambda r: setattr(r.inputs[0], "datatype", "BOOL")),
        AUTH,
        C.INVALID_ARGUMENT,
        "datatype BOOL is not supported",
    ),
    (
        "no values",
        "ModelInfer",
        _with(lambda r: r.ClearField("raw_input_contents")),
        AUTH,
        C.INVALID_ARGUMENT,
        "holds 784 values, data has 0",
    ),
    (
        "unknown output",
        "ModelInfer",
        _with(lambda r: r.outputs.append(OUTPUT(name="logits"))),
        AUTH,
        C.INVALID_ARGUMENT,
        "unknown output 'logits'",
    ),
    (
        "classification on label",
        "ModelInfer",
        _with(
            lambda r: r.outputs.append(
                OUTPUT(name="label", parameters={"classification": pb.InferParameter(int64_param=2)})
            )
        ),
        AUTH,
        C.INVALID_ARGUMENT,
        "classification applies to 'probabilities' only",
    ),
    (
        "steps without attributions",
        "ModelInfer",
        _with(lambda r: r.parameters["steps"].CopyFrom(pb.InferParameter(int64_param=8))),
        AUTH,
        C.INVALID_ARGUMENT,
        "for the 'attributions' output only",
    ),
    (
        "bad method",
        "ModelInfer",
        _with(
            lambda r: (
                r.outputs.append(OUTPUT(name="attributions")),
                r.parameters["method"].CopyFrom(pb.InferParameter(string_param="magic")),
            )
        ),
        AUTH,
        C.INVALID_ARGUMENT,
        "method must be one of",
    ),
    (
        "not an image",
        "ModelInfer",
        pb.ModelInferRequest(
            model_name="mnist",
            inputs=[
                INPUT(
                    name="input",
                    datatype="BYTES",
                    shape=[1],
                    contents=pb.InferTensorContents(bytes_contents=[b"no"]),
                )
            ],
        ),
        AUTH,
        C.INVALID_ARGUMENT,
        "element 0",
    ),
    (
        "over the size limit",
        "ModelInfer",
        raw(np.zeros((200, 784), np.float32), "FP32"),
        AUTH,
        C.RESOURCE_EXHAUSTED,
        "",
    ),
]


@pytest.mark.parametrize(
    ("method", "request_", "metadata", "code", "words"),
    [c[1:] for c in CONTRACT],
    ids=[c[0] for c in CONTRACT],
)
def test_error_contract(call: Any, method: str, request_: Any, metadata: Any, code: Any, words: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        call(method, request_, metadata)
    assert info.value.code() == code
    assert words in info.value.details()
    assert "Traceback" not in info.value.details()


def test_the_same_messages_as_http_v2(call: Any, client: FlaskClient) -> None:
    x = np.full((1, 784), np.nan, np.float32)
    with pytest.raises(grpc.RpcError) as info:
        call("ModelInfer", raw(x, "FP32"))
    http = client.post(
        "/v2/models/mnist/infer",
        data=b'{"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": ['
        + b",".join([b"NaN"] * 784)
        + b"]}]}",
        content_type="application/json",
    )
    assert info.value.details() == http.get_json()["error"]


def test_health_rpcs_and_metadata(call: Any, client: FlaskClient) -> None:
    assert call("ServerLive", pb.ServerLiveRequest(), ()).live
    assert call("ServerReady", pb.ServerReadyRequest(), ()).ready
    assert call("ModelReady", pb.ModelReadyRequest(name="mnist"), ()).ready
    server = call("ServerMetadata", pb.ServerMetadataRequest())
    assert (server.name, list(server.extensions)) == (
        "digits-serving",
        ["binary_tensor_data", "classification"],
    )
    grpc_doc = call("ModelMetadata", pb.ModelMetadataRequest(name="mnist"))
    http_doc = client.get("/v2/models/mnist").get_json()
    assert (grpc_doc.name, list(grpc_doc.versions), grpc_doc.platform) == (
        http_doc["name"],
        http_doc["versions"],
        http_doc["platform"],
    )
    for kind in ("inputs", "outputs"):
        assert [(t.name, t.datatype, list(t.shape)) for t in getattr(grpc_doc, kind)] == [
            (t["name"], t["datatype"], t["shape"]) for t in http_doc[kind]
        ]
