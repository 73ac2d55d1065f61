"""POST /v1/models/<name>/explain: why the network chose, checked against math done here.

The served network's weights are read straight from its .npz (``np.load``) and backpropagated
by hand in float64 in this file, independently of ``training.nets``: the service's
``gradient`` attributions must equal that, and its integrated gradients must satisfy
completeness (they sum to p(x) - p(black)) and agree with a much finer path integral.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient
from numpy.typing import NDArray
from PIL import Image
from service_testkit import DIGITS, png_bytes, sample_as_photo

from service import dataplane
from service.dataplane import (
    DEFAULT_EXPLAIN_STEPS,
    EXPLAIN_CHUNK_ROWS,
    MAX_EXPLAIN_ROWS,
    MAX_EXPLAIN_STEPS,
    InputError,
    InputSpec,
    explain_options,
)


# --- an independent reference: the served weights, backpropagated by hand in float64 -----
class Reference:
    def __init__(self, npz: Path) -> None:
        with np.load(npz, allow_pickle=False) as f:
            self.W1, self.b1, self.W2, self.b2 = (f[k].astype(np.float64) for k in ("W1", "b1", "W2", "b2"))

    def probabilities(self, x: NDArray[Any]) -> NDArray[np.float64]:
        z = 1 / (1 + np.exp(-(x @ self.W1 + self.b1)))
        a = z @ self.W2 + self.b2
        e = np.exp(a - a.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]

    def gradient(self, x: NDArray[Any], target: int) -> NDArray[np.float64]:
        """d p_target / d x for each row of x (N, 784)."""
        h = 1 / (1 + np.exp(-(x @ self.W1 + self.b1)))
        a = h @ self.W2 + self.b2
        e = np.exp(a - a.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        onehot = np.zeros(p.shape[1])
        onehot[target] = 1
        d_logits = p[:, [target]] * (onehot - p)  # softmax Jacobian, row target
        d_hidden = (d_logits @ self.W2.T) * h * (1 - h)
        return d_hidden @ self.W1.T  # type: ignore[no-any-return]

    def integrated_gradients(self, x: NDArray[Any], target: int, steps: int) -> NDArray[np.float64]:
        """Riemann midpoint sum from a black image, for one input x (784,)."""
        alphas = (np.arange(steps) + 0.5) / steps
        path = alphas[:, None] * x[None, :]
        return x * self.gradient(path, target).mean(axis=0)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def reference(model_dir: Path) -> Reference:
    return Reference(model_dir / "mnist.npz")


@pytest.fixture(scope="module")
def digits(
    mnist_sample: tuple[NDArray[np.uint8], NDArray[np.intp]],
) -> tuple[NDArray[np.float64], NDArray[Any]]:
    images, labels = mnist_sample
    return images[:8].reshape(8, 784) / 255.0, labels[:8]


def explain(client: FlaskClient, body: dict[str, Any], path: str = "/v1/models/mnist/explain") -> Any:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


# --- the answer -----------------------------------------------------------------------------
def test_default_is_integrated_gradients_of_the_predicted_class(
    client: FlaskClient, digits: tuple[NDArray[np.float64], NDArray[Any]]
) -> None:
    x, _ = digits
    body = explain(client, {"inputs": x[:3].tolist()})
    predicted = client.post("/v1/models/mnist/predict", json={"inputs": x[:3].tolist()}).get_json()
    assert (body["model"], body["method"], body["steps"]) == (
        "mnist",
        "integrated_gradients",
        DEFAULT_EXPLAIN_STEPS,
    )
    assert body["version"] == predicted["version"]
    assert len(body["explanations"]) == 3
    for item, prediction in zip(body["explanations"], predicted["predictions"], strict=True):
        assert item["label"] == item["target"] == prediction["label"]
        assert item["class_name"] == item["target_name"] == DIGITS[item["label"]]
        assert item["probabilities"] == prediction["probabilities"]
        assert item["method"] == "integrated_gradients"
        assert np.shape(item["attributions"]) == (28, 28)
        assert "preprocessed" not in item  # numbers in: the input is what the client sent
        assert abs(item["convergence_delta"]) < 0.02


def test_gradient_equals_an_independent_backprop_of_the_served_weights(
    client: FlaskClient, reference: Reference, digits: tuple[NDArray[np.float64], NDArray[Any]]
) -> None:
    x, _ = digits
    for target in (None, 3):
        body = {"inputs": x.tolist(), "method": "gradient"} | ({} if target is None else {"target": target})
        items = explain(client, body)["explanations"]
        for row, item in zip(x, items, strict=True):
            assert "convergence_delta" not in item
            served = np.asarray(item["attributions"], dtype=np.float64).ravel()
            expected = reference.gradient(row[None, :], item["target"])[0]
            assert np.linalg.norm(served - expected) / np.linalg.norm(expected) < 1e-3


def test_integrated_gradients_are_complete_and_agree_with_a_finer_path(
    client: FlaskClient, reference: Reference, digits: tuple[NDArray[np.float64], NDArray[Any]]
) -> None:
    x, _ = digits
    items = explain(client, {"inputs": x.tolist()})["explanations"]
    p_black = reference.probabilities(np.zeros((1, 784)))[0]
    for row, item in zip(x, items, strict=True):
        t = item["target"]
        served = np.asarray(item["attributions"], dtype=np.float64).ravel()
        gap = served.sum() - (reference.probabilities(row[None, :])[0, t] - p_black[t])
        assert abs(gap) < 0.02  # completeness, at the default 64 steps
        assert gap == pytest.approx(item["convergence_delta"], abs=1e-4)  # and the reported gap is it
        fine = reference.integrated_gradients(row, t, steps=4096)
        assert np.linalg.norm(served - fine) / np.linalg.norm(fine) < 0.05


def test_target_picks_the_class_one_for_all_or_one_per_input(
    client: FlaskClient, digits: tuple[NDArray[np.float64], NDArray[Any]]
) -> None:
    x, _ = digits
    assert [
        i["target"] for i in explain(client, {"inputs": x[:3].tolist(), "target": 5})["explanations"]
    ] == [5] * 3
    items = explain(client, {"inputs": x[:3].tolist(), "target": [0, 1, 2], "steps": 8})["explanations"]
    assert [(i["target"], i["target_name"]) for i in items] == [(0, "0"), (1, "1"), (2, "2")]
    alone = explain(client, {"inputs": x[2:3].tolist(), "target": 2, "steps": 8}, "/explain")
    # a batch is explained input by input: the same answer alone or among others
    np.testing.assert_allclose(alone["explanations"][0]["attributions"], items[2]["attributions"], atol=1e-6)


def test_steps_change_the_precision_not_the_answer(
    client: FlaskClient, digits: tuple[NDArray[np.float64], NDArray[Any]]
) -> None:
    x, _ = digits
    coarse = explain(client, {"inputs": x[:2].tolist(), "steps": 4})
    fine = explain(client, {"inputs": x[:2].tolist(), "steps": 512})
    assert (coarse["steps"], fine["steps"]) == (4, 512)
    for a, b in zip(coarse["explanations"], fine["explanations"], strict=True):
        assert abs(b["convergence_delta"]) <= abs(a["convergence_delta"]) + 1e-6
        assert np.corrcoef(np.ravel(a["attributions"]), np.ravel(b["attributions"]))[0, 1] > 0.9


def test_an_image_comes_back_with_the_28x28_it_became(
    client: FlaskClient, mnist_sample: tuple[NDArray[np.uint8], NDArray[Any]]
) -> None:
    images, labels = mnist_sample
    scan = png_bytes(sample_as_photo(images[0]))
    body = explain(client, {"images": [base64.b64encode(scan).decode()], "method": "gradient"})
    [item] = body["explanations"]
    seen = client.post("/v1/models/mnist/preprocess", json={"images": [base64.b64encode(scan).decode()]})
    np.testing.assert_allclose(item["preprocessed"], seen.get_json()["inputs"][0], rtol=1e-6)
    assert item["label"] == labels[0]


def test_a_raw_image_body_takes_its_options_from_the_query(
    client: FlaskClient, mnist_sample: tuple[NDArray[np.uint8], NDArray[Any]]
) -> None:
    images, _ = mnist_sample
    scan = png_bytes(sample_as_photo(images[1]))
    response = client.post(
        "/explain?method=gradient&target=4", data=scan, headers={"Content-Type": "image/png"}
    )
    [item] = response.get_json()["explanations"]
    assert (response.get_json()["method"], item["target"]) == ("gradient", 4)
    assert "preprocessed" in item


def test_a_form_upload_takes_its_options_as_fields(
    client: FlaskClient, mnist_sample: tuple[NDArray[np.uint8], NDArray[Any]]
) -> None:
    images, _ = mnist_sample
    scan = png_bytes(sample_as_photo(images[2]))
    response = client.post(
        "/v1/models/mnist/explain",
        data={"image": (io.BytesIO(scan), "digit.png"), "target": "7", "steps": "16"},
        content_type="multipart/form-data",
    )
    body = response.get_json()
    assert (response.status_code, body["steps"], body["explanations"][0]["target"]) == (200, 16, 7)


def test_versioned_and_other_models(client: FlaskClient) -> None:
    version = client.get("/v1/models/fashion-mnist").get_json()["version"]
    body = explain(
        client, {"inputs": [[0.5] * 784], "steps": 4}, f"/v1/models/fashion-mnist/versions/{version}/explain"
    )
    assert (body["model"], body["version"]) == ("fashion-mnist", version)
    # a model whose inputs are flat (784,) still answers on its 28x28 grid
    assert np.shape(body["explanations"][0]["attributions"]) == (28, 28)


# --- the heatmap ------------------------------------------------------------------------------
def test_accept_png_answers_a_heatmap_of_the_one_input(
    client: FlaskClient, digits: tuple[NDArray[np.float64], NDArray[Any]]
) -> None:
    x, _ = digits
    response = client.post(
        "/v1/models/mnist/explain",
        json={"inputs": x[:1].tolist(), "method": "gradient"},
        headers={"Accept": "image/png"},
    )
    assert (response.status_code, response.mimetype) == (200, "image/png")
    image = Image.open(io.BytesIO(response.data))
    assert (image.format, image.size, image.mode) == ("PNG", (280, 280), "RGB")
    label = int(response.headers["X-Label"])
    assert int(response.headers["X-Target"]) == label
    assert response.headers["X-Method"] == "gradient"
    # the strongest positive cell is drawn red, the strongest negative one blue
    attributions = np.asarray(
        explain(client, {"inputs": x[:1].tolist(), "method": "gradient"})["explanations"][0]["attributions"]
    )
    pixels = np.asarray(image).reshape(28, 10, 28, 10, 3)[:, 0, :, 0]  # one pixel per cell
    r, c = np.unravel_index(attributions.argmax(), attributions.shape)
    assert pixels[r, c, 0] > pixels[r, c, 2]
    r, c = np.unravel_index(attributions.argmin(), attributions.shape)
    assert pixels[r, c, 2] > pixels[r, c, 0]


def test_accept_json_or_anything_answers_json(client: FlaskClient) -> None:
    for accept in ("application/json", "*/*", "image/png;q=0.5, application/json"):
        response = client.post("/explain", json={"inputs": [[0.0] * 784]}, headers={"Accept": accept})
        assert response.mimetype == "application/json", accept


def test_a_heatmap_of_several_inputs_is_not_acceptable(client: FlaskClient) -> None:
    response = client.post("/explain", json={"inputs": [[0.0] * 784] * 2}, headers={"Accept": "image/png"})
    assert response.status_code == 406
    assert response.get_json()["error"]["code"] == "not_acceptable"
    assert "one input" in response.get_json()["error"]["message"]


# --- refusals ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "field", "words"),
    [
        ({"method": "lime"}, "method", "integrated_gradients, gradient"),
        ({"target": 10}, "target", "[0, 9]"),
        ({"target": -1}, "target", "[0, 9]"),
        ({"target": "three"}, "target", "class index"),
        ({"target": True}, "target", "class index"),
        ({"target": [1, 2, 3]}, "target", "3 targets for 2 inputs"),
        ({"steps": 0}, "steps", f"[1, {MAX_EXPLAIN_STEPS}]"),
        ({"steps": MAX_EXPLAIN_STEPS + 1}, "steps", f"[1, {MAX_EXPLAIN_STEPS}]"),
        ({"steps": 2.5}, "steps", "whole number"),
        ({"method": "gradient", "steps": 8}, "steps", "integrated_gradients only"),
    ],
)
def test_bad_options_are_422_naming_the_field(
    client: FlaskClient, options: dict[str, Any], field: str, words: str
) -> None:
    response = client.post("/explain", json={"inputs": [[0.0] * 784] * 2, **options})
    assert response.status_code == 422
    [message] = response.get_json()["error"]["details"][field]
    assert words in message


def test_inputs_times_steps_is_bounded() -> None:
    spec = InputSpec(input_shape=(784,), num_classes=10, max_batch_size=1000)
    n = 100
    steps = MAX_EXPLAIN_ROWS // n + 1
    with pytest.raises(InputError) as refused:
        explain_options(n, spec, steps=steps)
    assert (refused.value.reason, refused.value.params) == (
        "explain_rows",
        {"max": MAX_EXPLAIN_ROWS, "n": n, "steps": steps},
    )
    assert explain_options(n, spec, steps=steps - 1) == ("integrated_gradients", None, steps - 1)
    assert explain_options(n, spec, method="gradient") == ("gradient", None, None)


def test_explaining_a_large_batch_works_in_chunks_with_the_same_answer(model_dir: Path) -> None:
    """More path rows than one chunk: the answer is the one computed input by input."""
    from service.registry import scan

    model = next(m for m in scan(model_dir).loaded if m.name == "mnist")
    x = np.random.default_rng(0).random((70, 784), dtype=np.float32)
    assert EXPLAIN_CHUNK_ROWS < 70 * 64
    whole = dataplane.explain(model, x, "integrated_gradients", None, 64)
    for i in (0, 63, 64, 69):
        alone = dataplane.explain(model, x[i : i + 1], "integrated_gradients", None, 64)
        np.testing.assert_allclose(whole.attributions[i], alone.attributions[0], atol=1e-6)
        assert whole.convergence_delta is not None and alone.convergence_delta is not None
        assert whole.convergence_delta[i] == pytest.approx(alone.convergence_delta[0], abs=1e-6)
