"""Triton's own HTTP client (``tritonclient[http]``, as other services already use it) against a
real gunicorn: health, metadata, inference with FP32 and UINT8 inputs as JSON and as binary
tensors (its default), output selection, classification, compression, errors and the bearer
token. If this client works unchanged, so do the others that speak the protocol."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient
from gunicorn_testkit import gunicorn, stop, wait_ready

httpclient = pytest.importorskip(
    "tritonclient.http", reason="tritonclient[http] is not installed (make test installs it)"
)
from tritonclient.utils import InferenceServerException  # noqa: E402

TOKEN = "client-test-token-0123456789"


class BearerToken(httpclient.InferenceServerClientPlugin):  # type: ignore[misc]
    """Sends the token with every request: tritonclient's plugin hook for headers."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: Any) -> None:
        request.headers["Authorization"] = f"Bearer {self.token}"


@pytest.fixture(scope="module")
def server(
    server_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """gunicorn with a bearer token set; yields host:port, as tritonclient wants it."""
    log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    proc = gunicorn({**server_env, "AUTH_TOKEN": TOKEN}, log)
    try:
        yield wait_ready(proc, log).removeprefix("http://")
    finally:
        assert stop(proc) == 0
        assert "Traceback" not in log.read_text()


@pytest.fixture
def triton(server: str) -> Iterator[Any]:
    client = httpclient.InferenceServerClient(server)
    client.register_plugin(BearerToken(TOKEN))
    yield client
    client.close()


def pixels(n: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def fp32_input(x: np.ndarray, binary: bool = True) -> Any:
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x.astype(np.float32), binary_data=binary)
    return inp


def expected(client: FlaskClient, x: np.ndarray) -> dict[str, Any]:
    """The service's own answer for pixels ``x`` (UINT8), through the Flask test client."""
    response = client.post(
        "/v2/models/mnist/infer",
        json={
            "inputs": [
                {"name": "input", "shape": list(x.shape), "datatype": "UINT8", "data": x.ravel().tolist()}
            ]
        },
    )
    return {o["name"]: np.asarray(o["data"]) for o in response.get_json()["outputs"]}


def test_health_and_metadata(triton: Any) -> None:
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready("mnist")
    assert not triton.is_model_ready("nope")
    server = triton.get_server_metadata()
    assert server["name"] == "digits-serving"
    assert "binary_tensor_data" in server["extensions"]
    metadata = triton.get_model_metadata("mnist")
    assert metadata["inputs"][0]["shape"] == [-1, 784]
    assert [o["name"] for o in metadata["outputs"]] == ["probabilities", "label", "attributions"]
    [version] = metadata["versions"]
    assert triton.get_model_metadata("mnist", model_version=version) == metadata
    assert triton.is_model_ready("mnist", model_version=version)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_fp32(triton: Any, client: FlaskClient, binary: bool) -> None:
    x = pixels()
    result = triton.infer("mnist", [fp32_input(x.reshape(4, 784) / 255, binary)], request_id="fp32")
    want = expected(client, x)
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float32 and probabilities.shape == (4, 10)
    np.testing.assert_allclose(probabilities.ravel(), want["probabilities"], rtol=1e-6, atol=1e-7)
    assert result.as_numpy("label").tolist() == want["label"].tolist()
    assert result.get_response()["id"] == "fp32"
    assert result.get_response()["model_name"] == "mnist"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_uint8_images(triton: Any, client: FlaskClient, binary: bool) -> None:
    x = pixels(3, seed=1)
    inp = httpclient.InferInput("input", [3, 28, 28], "UINT8")
    inp.set_data_from_numpy(x, binary_data=binary)
    result = triton.infer("mnist", [inp])
    want = expected(client, x)
    assert result.as_numpy("label").tolist() == want["label"].tolist()
    np.testing.assert_allclose(
        result.as_numpy("probabilities").ravel(), want["probabilities"], rtol=1e-6, atol=1e-7
    )


def test_requested_outputs_classification_and_compression(triton: Any, client: FlaskClient) -> None:
    x = pixels(2, seed=2)
    outputs = [
        httpclient.InferRequestedOutput("label", binary_data=False),
        httpclient.InferRequestedOutput("probabilities", class_count=3),
    ]
    result = triton.infer(
        "mnist", [fp32_input(x / 255)], outputs=outputs, request_compression_algorithm="gzip"
    )
    want = expected(client, x)
    assert result.get_response()["outputs"][0]["data"] == want["label"].tolist()
    top = result.as_numpy("probabilities")
    assert top.shape == (2, 3)
    for row, probabilities in zip(top, want["probabilities"].reshape(2, 10), strict=True):
        indices = [int(item.decode().split(":")[1]) for item in row]
        assert indices == np.argsort(-probabilities, kind="stable")[:3].tolist()


def test_attributions_output_with_explain_parameters(triton: Any, client: FlaskClient) -> None:
    x = pixels(2, seed=3)
    outputs = [httpclient.InferRequestedOutput("attributions"), httpclient.InferRequestedOutput("label")]
    result = triton.infer(
        "mnist",
        [fp32_input(x.reshape(2, 784) / 255)],
        outputs=outputs,
        parameters={"method": "gradient", "target": 4},
    )
    attributions = result.as_numpy("attributions")
    assert attributions.dtype == np.float32 and attributions.shape == (2, 784)
    v1 = client.post(
        "/v1/models/mnist/explain",
        json={
            "inputs": x.reshape(2, 784).tolist(),
            "pixel_range": "0-255",
            "method": "gradient",
            "target": 4,
        },
    ).get_json()
    want = np.asarray([item["attributions"] for item in v1["explanations"]], dtype=np.float32)
    np.testing.assert_allclose(attributions, want.reshape(2, 784), rtol=1e-5, atol=1e-9)
    assert result.as_numpy("label").tolist() == [item["label"] for item in v1["explanations"]]


def test_versioned_infer(triton: Any) -> None:
    version = triton.get_model_metadata("mnist")["versions"][-1]
    result = triton.infer("mnist", [fp32_input(pixels(1) / 255)], model_version=version)
    assert result.get_response()["model_version"] == version


@pytest.mark.parametrize(
    "call,status,says",
    [
        (lambda t: t.infer("nope", [fp32_input(np.zeros((1, 784)))]), "404", "no model named 'nope'"),
        (
            lambda t: t.infer("mnist", [fp32_input(np.zeros((1, 784)))], model_version="999"),
            "404",
            "has no version '999'",
        ),
        (lambda t: t.get_model_metadata("nope"), "404", "no model named 'nope'"),
        (lambda t: t.infer("mnist", [fp32_input(np.zeros((1, 783)))]), "400", "does not fit"),
        (lambda t: t.infer("mnist", [fp32_input(np.full((1, 784), 2.0))]), "400", "[0, 1]"),
        (lambda t: t.infer("mnist", [fp32_input(np.full((1, 784), np.nan))]), "400", "finite"),
        (lambda t: t.infer("mnist", [fp32_input(np.zeros((17, 784)))]), "400", "at most 16"),
    ],
    ids=[
        "unknown-model",
        "unknown-version",
        "unknown-model-metadata",
        "wrong-shape",
        "out-of-range",
        "nan",
        "batch-over-limit",
    ],
)
def test_errors_reach_the_client_as_exceptions(triton: Any, call: Any, status: str, says: str) -> None:
    with pytest.raises(InferenceServerException) as info:
        call(triton)
    assert info.value.status() == status
    assert says in info.value.message()


def test_wrong_datatype(triton: Any) -> None:
    inp = httpclient.InferInput("input", [1, 784], "BYTES")
    inp.set_data_from_numpy(np.array([b"0"] * 784, dtype=object).reshape(1, 784))
    with pytest.raises(InferenceServerException) as info:
        triton.infer("mnist", [inp])
    assert info.value.status() == "400"
    assert "datatype BYTES is not supported" in info.value.message()


def test_without_the_token_only_health_answers(server: str) -> None:
    anonymous = httpclient.InferenceServerClient(server)
    wrong = httpclient.InferenceServerClient(server)
    wrong.register_plugin(BearerToken("not-the-token"))
    try:
        for client in (anonymous, wrong):
            assert client.is_server_live() and client.is_server_ready()
            assert client.is_model_ready("mnist")
            for call in (
                lambda c: c.get_model_metadata("mnist"),
                lambda c: c.infer("mnist", [fp32_input(np.zeros((1, 784)))]),
                lambda c: c.get_server_metadata(),
            ):
                with pytest.raises(InferenceServerException) as info:
                    call(client)
                assert info.value.status() == "401"
                assert "bearer token" in info.value.message()
    finally:
        anonymous.close()
        wrong.close()
