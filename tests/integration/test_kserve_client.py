"""KServe's own Python SDK (``kserve.InferenceRESTClient``, protocol v1) against a real gunicorn
serving the shipped models: model readiness, ``infer`` with TF Serving's ``instances`` (numbers
and ``{"b64": ...}`` PNG scans of real MNIST test digits) and ``explain``. If KServe's client
works unchanged, so does anything written for KServe V1 or TF Serving's REST API."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import numpy as np
import pytest
from gunicorn_testkit import REPO, gunicorn, stop, wait_ready
from numpy.typing import NDArray
from service_testkit import png_bytes, sample_as_photo

kserve = pytest.importorskip("kserve", reason="kserve is not installed (make test installs it)")
httpx = pytest.importorskip("httpx")

TOKEN = "kserve-client-test-token-0123456789"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
T = TypeVar("T")

Sample = tuple[NDArray[np.uint8], NDArray[np.intp]]


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """gunicorn on the models this repository ships, with a bearer token."""
    log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    env = {"MODEL_DIR": str(REPO / "models"), "DEFAULT_MODEL": "mnist", "AUTH_TOKEN": TOKEN}
    proc = gunicorn(env, log)
    try:
        yield wait_ready(proc, log)
    finally:
        assert stop(proc) == 0
        assert "Traceback" not in log.read_text()


async def with_client(call: Any) -> Any:
    client = kserve.InferenceRESTClient(kserve.RESTConfig(protocol="v1", retries=1, timeout=30))
    try:
        return await call(client)
    finally:
        await client.close()


def test_model_ready(base_url: str) -> None:
    async def ready(client: Any) -> tuple[bool, bool]:
        mnist = await client.is_model_ready(base_url, "mnist", headers=HEADERS)
        fashion = await client.is_model_ready(base_url, "fashion-mnist", headers=HEADERS)
        return mnist, fashion

    assert run(with_client(ready)) == (True, True)


def test_infer_classifies_mnist_test_digits(base_url: str, mnist_sample: Sample) -> None:
    images, labels = mnist_sample
    x = images.reshape(len(images), 784) / 255.0

    async def infer_all(client: Any) -> list[dict[str, Any]]:
        predictions: list[dict[str, Any]] = []
        for start in range(0, len(x), 250):
            body = {"instances": x[start : start + 250].tolist()}
            answer = await client.infer(base_url, body, model_name="mnist", headers=HEADERS)
            predictions += answer["predictions"]
        return predictions

    predictions = run(with_client(infer_all))
    assert len(predictions) == len(labels)
    accuracy = np.mean([p["label"] == t for p, t in zip(predictions, labels, strict=True)])
    assert accuracy >= 0.95
    assert all(p["class_name"] == str(p["label"]) and len(p["probabilities"]) == 10 for p in predictions)


def test_b64_png_scans_are_classified(base_url: str, mnist_sample: Sample) -> None:
    """Real test digits as a scanner or phone gives them: dark ink on white, larger, off-centre."""
    images, labels = mnist_sample
    n = 40
    instances = [
        {"b64": base64.b64encode(png_bytes(sample_as_photo(image))).decode()} for image in images[:n]
    ]

    async def infer(client: Any) -> dict[str, Any]:
        return await client.infer(base_url, {"instances": instances}, model_name="mnist", headers=HEADERS)  # type: ignore[no-any-return]

    predictions = run(with_client(infer))["predictions"]
    correct = sum(p["label"] == t for p, t in zip(predictions, labels[:n], strict=True))
    assert correct >= 0.95 * n


def test_explain_answers_an_explanation_per_instance(base_url: str, mnist_sample: Sample) -> None:
    images, labels = mnist_sample
    x = images[:3].reshape(3, 784) / 255.0

    async def explain(client: Any) -> dict[str, Any]:
        return await client.explain(base_url, "mnist", {"instances": x.tolist()}, headers=HEADERS)  # type: ignore[no-any-return]

    explanations = run(with_client(explain))["explanations"]
    assert len(explanations) == 3
    for item, label in zip(explanations, labels[:3], strict=True):
        assert item["label"] == item["target"] == label
        assert item["method"] == "integrated_gradients"
        assert np.shape(item["attributions"]) == (28, 28)
        assert abs(item["convergence_delta"]) < 0.02


def test_errors_reach_the_client_as_tf_serving_errors(base_url: str) -> None:
    async def bad(client: Any) -> None:
        await client.infer(base_url, {"instances": [[0.5] * 10]}, model_name="mnist", headers=HEADERS)

    with pytest.raises(httpx.HTTPStatusError) as error:
        run(with_client(bad))
    assert error.value.response.status_code == 400
    assert "got 10 numbers" in str(error.value)  # the client quotes {"error": ...}

    async def unknown(client: Any) -> None:
        await client.infer(base_url, {"instances": [[0.5] * 784]}, model_name="nope", headers=HEADERS)

    with pytest.raises(httpx.HTTPStatusError) as error:
        run(with_client(unknown))
    assert error.value.response.status_code == 404

    async def no_token(client: Any) -> None:
        await client.infer(base_url, {"instances": [[0.5] * 784]}, model_name="mnist")

    with pytest.raises(httpx.HTTPStatusError) as error:
        run(with_client(no_token))
    assert error.value.response.status_code == 401
    assert error.value.response.json().keys() == {"error"}
