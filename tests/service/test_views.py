"""The endpoints through the Flask test client, checked against TwoLayerNet on the same arrays."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from flask.testing import FlaskClient
from numpy.typing import NDArray
from PIL import Image
from service_testkit import DIGITS, FASHION_CLASSES, drawn_digit, png_bytes, sample_as_photo

from service import schemas
from training import LOSSES, TwoLayerNet, load_model

Sample = tuple[NDArray[np.uint8], NDArray[np.intp]]


def pixels(images: NDArray[np.uint8]) -> NDArray[np.float32]:
    """What a client sends by default: values in [0, 1] (float32, the service's input dtype)."""
    return (images.reshape(len(images), -1) / np.float32(255)).astype(np.float32)


def check(schema: type[schemas.Schema], body: dict) -> dict:
    """The body must match its documented response schema exactly."""
    assert schema().validate(body) == {}
    return body


# --- predict ------------------------------------------------------------------------------
def test_predict_returns_label_class_name_probabilities_model_and_version(
    client: FlaskClient, mnist_sample: Sample, mnist_net: TwoLayerNet, model_dir: Path
) -> None:
    images, labels = mnist_sample
    x = pixels(images[:8])
    response = client.post("/v1/models/mnist/predict", json={"inputs": x.tolist()})
    assert response.status_code == 200
    body = check(schemas.PredictResponseSchema, response.get_json())
    assert body["model"] == "mnist"
    assert body["version"] == load_model(model_dir / "mnist.npz").version
    expected = mnist_net.predict(x)
    got = np.array([p["probabilities"] for p in body["predictions"]])
    # float32 written in its shortest form: read back as float32, exactly the model's numbers
    np.testing.assert_array_equal(got.astype(np.float32), expected)
    assert [p["label"] for p in body["predictions"]] == expected.argmax(axis=1).tolist()
    assert [p["class_name"] for p in body["predictions"]] == [DIGITS[k] for k in expected.argmax(axis=1)]
    # a model trained on these digits gets (nearly) all of them right
    assert np.mean(got.argmax(axis=1) == labels[:8]) >= 7 / 8


def test_flat_and_nested_inputs_agree(client: FlaskClient, mnist_sample: Sample) -> None:
    x = pixels(mnist_sample[0][:3])
    flat = client.post("/predict", json={"inputs": x.tolist()}).get_json()
    nested = client.post("/predict", json={"inputs": x.reshape(3, 28, 28).tolist()}).get_json()
    assert flat == nested


def test_pixel_range_0_255_is_the_same_as_dividing_by_255(client: FlaskClient, mnist_sample: Sample) -> None:
    images = mnist_sample[0][:4]
    raw = client.post(
        "/predict", json={"inputs": images.reshape(4, -1).tolist(), "pixel_range": "0-255"}
    ).get_json()
    scaled = client.post("/predict", json={"inputs": pixels(images).tolist()}).get_json()
    assert raw == scaled


def test_short_routes_serve_the_default_model(client: FlaskClient) -> None:
    payload = {"inputs": [[0.0] * 784]}
    assert (
        client.post("/predict", json=payload).get_json()
        == client.post("/v1/models/mnist/predict", json=payload).get_json()
    )


def test_each_model_is_served_with_its_own_shape_and_classes(client: FlaskClient, model_dir: Path) -> None:
    net = load_model(model_dir / "fashion-mnist.npz").network()
    x = np.linspace(0, 1, 2 * 784, dtype=np.float32).reshape(2, 784)
    body = client.post("/v1/models/fashion-mnist/predict", json={"inputs": x.tolist()}).get_json()
    np.testing.assert_array_equal(
        [p["probabilities"] for p in body["predictions"]], net.predict(x)
    )  # float64 model: float64 digits
    assert body["predictions"][0]["class_name"] in FASHION_CLASSES
    # input_shape [784]: flat rows, and the 28x28 grid an image of it would be
    assert (
        client.post(
            "/v1/models/fashion-mnist/predict", json={"inputs": x.reshape(2, 28, 28).tolist()}
        ).status_code
        == 200
    )


def test_batch_of_the_maximum_size_is_accepted(client: FlaskClient, settings) -> None:
    payload = {"inputs": [[0] * 784] * settings.max_batch_size}
    response = client.post("/predict", json=payload)
    assert response.status_code == 200
    assert len(response.get_json()["predictions"]) == settings.max_batch_size


# --- loss and accuracy equal TwoLayerNet's ------------------------------------------------
@pytest.mark.parametrize("model", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("loss_name", LOSSES)
@pytest.mark.parametrize("one_hot", [False, True], ids=["integer-labels", "one-hot"])
def test_loss_equals_two_layer_net_loss(
    client: FlaskClient, mnist_sample: Sample, model_dir: Path, model: str, loss_name: str, one_hot: bool
) -> None:
    images, labels = mnist_sample
    x = pixels(images[:12])
    t = np.eye(10, dtype=int)[labels[:12]] if one_hot else labels[:12]
    t_sent = t.tolist()
    response = client.post(
        f"/v1/models/{model}/loss", json={"inputs": x.tolist(), "labels": t_sent, "loss": loss_name}
    )
    assert response.status_code == 200
    body = check(schemas.LossResponseSchema, response.get_json())
    net = load_model(model_dir / f"{model}.npz").network()
    assert body["loss"] == net.loss(x, np.asarray(t_sent), loss_name=loss_name)
    assert (body["loss_name"], body["count"], body["model"]) == (loss_name, 12, model)


def test_loss_defaults_to_cross_entropy(client: FlaskClient, mnist_net: TwoLayerNet) -> None:
    x = np.full((2, 784), 0.5, dtype=np.float32)
    body = client.post("/loss", json={"inputs": x.tolist(), "labels": [3, 4]}).get_json()
    assert body["loss_name"] == "cross_entropy"
    assert body["loss"] == mnist_net.loss(x, np.array([3, 4]), loss_name="cross_entropy")


@pytest.mark.parametrize("model", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("one_hot", [False, True], ids=["integer-labels", "one-hot"])
def test_accuracy_equals_two_layer_net_accuracy(
    client: FlaskClient, mnist_sample: Sample, model_dir: Path, model: str, one_hot: bool
) -> None:
    images, labels = mnist_sample
    x = pixels(images[:16])
    t = np.eye(10, dtype=int)[labels[:16]] if one_hot else labels[:16]
    response = client.post(f"/v1/models/{model}/accuracy", json={"inputs": x.tolist(), "labels": t.tolist()})
    body = check(schemas.AccuracyResponseSchema, response.get_json())
    net = load_model(model_dir / f"{model}.npz").network()
    expected = net.accuracy(x, t)
    assert body["accuracy"] == expected
    assert (body["correct"], body["count"]) == (round(expected * 16), 16)
    predicted = net.predict(x).argmax(axis=1)
    assert body["correct"] == int(np.sum(predicted == labels[:16]))


# --- images -------------------------------------------------------------------------------
def test_base64_images_and_data_urls(client: FlaskClient) -> None:
    one = png_bytes(drawn_digit("1"))
    encoded = base64.b64encode(one).decode()
    body = client.post("/predict", json={"images": [encoded, "data:image/png;base64," + encoded]}).get_json()
    first, second = body["predictions"]
    assert first == second
    assert first["label"] == 1


def test_multipart_upload_of_several_files_with_labels(client: FlaskClient) -> None:
    files = [(io.BytesIO(png_bytes(drawn_digit(d))), f"{d}.png") for d in "017"]
    response = client.post(
        "/accuracy", data={"images": files, "labels": "0,1,7"}, content_type="multipart/form-data"
    )
    body = check(schemas.AccuracyResponseSchema, response.get_json())
    assert (body["accuracy"], body["correct"], body["count"]) == (1.0, 3, 3)


def test_multipart_labels_as_json_and_loss_option(client: FlaskClient) -> None:
    files = [(io.BytesIO(png_bytes(drawn_digit(d))), f"{d}.png") for d in "01"]
    response = client.post(
        "/loss",
        data={"file": files, "labels": "[0, 1]", "loss": "mean_squared_error"},
        content_type="multipart/form-data",
    )
    body = response.get_json()
    assert (body["loss_name"], body["count"]) == ("mean_squared_error", 2)


@pytest.mark.parametrize(
    "mimetype,fmt",
    [
        ("image/png", "PNG"),
        ("image/jpeg", "JPEG"),
        ("image/gif", "GIF"),
        ("image/bmp", "BMP"),
        ("image/webp", "WEBP"),
    ],
)
def test_raw_image_body_in_every_accepted_format(client: FlaskClient, mimetype: str, fmt: str) -> None:
    data = png_bytes(drawn_digit("7", mode="RGB"), fmt=fmt)
    response = client.post("/predict", data=data, content_type=mimetype)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["predictions"][0]["label"] == 7


def test_raw_image_body_takes_options_from_the_query_string(
    client: FlaskClient, mnist_net: TwoLayerNet
) -> None:
    data = png_bytes(drawn_digit("0"))
    response = client.post("/loss?labels=0&loss=mean_squared_error", data=data, content_type="image/png")
    assert response.get_json()["loss_name"] == "mean_squared_error"


def test_preprocess_false_takes_an_mnist_image_as_it_is(client: FlaskClient, mnist_sample: Sample) -> None:
    """A 28x28 PNG of a real MNIST digit with preprocessing off is exactly its pixels / 255."""
    images = mnist_sample[0][:2]
    as_numbers = client.post("/predict", json={"inputs": pixels(images).tolist()}).get_json()
    encoded = [base64.b64encode(png_bytes(Image.fromarray(im))).decode() for im in images]
    as_images = client.post("/predict", json={"images": encoded, "preprocess": False}).get_json()
    assert as_images == as_numbers
    # one image against one input: BLAS may round a batch of 1 differently from a batch of 2
    one = client.post("/predict", json={"inputs": pixels(images[:1]).tolist()}).get_json()
    raw = client.post(
        "/predict?preprocess=false", data=png_bytes(Image.fromarray(images[0])), content_type="image/png"
    ).get_json()
    assert raw == one


def test_photographed_mnist_digits_are_recovered_by_preprocessing(
    client: FlaskClient, mnist_sample: Sample
) -> None:
    """Real digits, enlarged, inverted (black on white) and moved off-centre, then uploaded:
    MNIST-style preprocessing must turn them back into what the model knows."""
    images, labels = mnist_sample
    encoded = [base64.b64encode(png_bytes(sample_as_photo(im))).decode() for im in images[:16]]
    body = client.post("/accuracy", json={"images": encoded, "labels": labels[:16].tolist()}).get_json()
    assert body["accuracy"] >= 14 / 16
    unprocessed = client.post(
        "/accuracy", json={"images": encoded, "preprocess": False, "labels": labels[:16].tolist()}
    ).get_json()
    assert unprocessed["accuracy"] < body["accuracy"]


@pytest.mark.parametrize("digit", ["0", "1", "7"])
def test_a_clearly_drawn_digit_is_recognised(client: FlaskClient, digit: str) -> None:
    png = png_bytes(drawn_digit(digit, size=300, offset=(40, -30)))
    body = client.post("/predict", data=png, content_type="image/png").get_json()
    assert body["predictions"][0]["label"] == int(digit)


# --- models, health, documents ------------------------------------------------------------
def test_list_models(client: FlaskClient) -> None:
    body = check(schemas.ModelListResponseSchema, client.get("/v1/models").get_json())
    assert body["default_model"] == "mnist"
    assert sorted(m["name"] for m in body["models"]) == ["fashion-mnist", "mnist"]


def test_model_info_comes_from_the_file(client: FlaskClient, model_dir: Path) -> None:
    body = check(schemas.ModelInfoSchema, client.get("/v1/models/mnist").get_json())
    model_file = load_model(model_dir / "mnist.npz")
    assert body["version"] == model_file.version
    assert body["input_shape"] == [28, 28]
    assert body["class_names"] == DIGITS
    assert body["pixel_preprocessing"] == "x / 255"
    assert body["metrics"] == model_file.metadata["metrics"]
    assert body["image_preprocessing"] == "mnist"
    fashion = client.get("/v1/models/fashion-mnist").get_json()
    assert (fashion["input_shape"], fashion["image_preprocessing"]) == ([784], "fashion-mnist")


def test_health_and_readiness(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = check(schemas.StatusResponseSchema, client.get("/readyz").get_json())
    assert ready == {"status": "ready", "default_model": "mnist", "models": ["fashion-mnist", "mnist"]}


def test_openapi_and_the_swagger_ui_page(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    assert "/v1/models/{name}/predict" in spec["paths"]
    assert client.get("/docs").headers["Location"].endswith("/docs/")
    page = client.get("/docs/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "http://" not in html and "https://" not in html  # no CDN: works offline
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert {"swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css"} <= set(assets)
    for asset in assets:  # relative to /docs/: served by this server, also under a path prefix
        answer = client.get("/docs/" + asset)
        body = answer.data
        answer.close()  # (a file's response holds the file open)
        assert answer.status_code == 200 and body, asset
    config = json.loads(re.search(r"var config = (\{.*?\});", html).group(1))
    assert config["url"] == "../openapi.json" and config["persistAuthorization"] is True


def test_bench_noop_is_off_unless_enabled(client: FlaskClient, settings) -> None:
    from dataclasses import replace

    from service import create_app

    assert client.post("/_bench/noop", json={}).status_code == 404
    bench_client = create_app(replace(settings, bench_noop=True)).test_client()
    assert bench_client.post("/_bench/noop", json={}).get_json() == {"ok": True}


def test_bench_stages_stop_after_the_step_named(settings, mnist_sample) -> None:
    """``/_bench/stages`` (bench/serve_load.py --stages) runs predict's own steps up to the one
    named: the same body /predict takes, its errors where predict would give them (past
    ``parse``), and the predictions counted only once ``infer`` runs."""
    from dataclasses import replace

    from service import create_app
    from service.metrics import REGISTRY, flush
    from service.views import BENCH_STAGES

    def counted() -> float:
        flush()
        return sum(
            REGISTRY.get_sample_value("digits_predictions_total", {"model": "mnist", "class_name": c}) or 0.0
            for c in "0123456789"
        )

    client = create_app(replace(settings, bench_noop=True)).test_client()
    batch = {"inputs": (mnist_sample[0][:8].reshape(8, -1) / 255.0).tolist()}
    for step in BENCH_STAGES:
        before = counted()
        answer = client.post(f"/_bench/stages/{step}", json=batch)
        assert (answer.status_code, answer.get_json()) == (200, {"ok": True}), step
        assert counted() - before == (8 if step == "infer" else 0), step
    for path in ("/_bench/stages", "/_bench/stages/respond", "/_bench/stages/PARSE"):
        assert client.post(path, json=batch).status_code == 404
    for body in ({"images": []}, {"inputs": [["a"]]}, {"inputs": {}}):
        answer = client.post("/_bench/stages/parse", json=body)
        assert answer.status_code == 400 and answer.get_json()["error"]["code"] == "invalid_json", body
    bad = {"inputs": [[2.0] * 784]}  # out of range: the checks refuse it as predict does
    assert client.post("/_bench/stages/parse", json=bad).status_code == 200
    refused, predicted = (
        client.post("/_bench/stages/checks", json=bad),
        client.post("/predict", json=bad),
    )
    assert refused.status_code == predicted.status_code == 422
    assert refused.get_json()["error"]["message"] == predicted.get_json()["error"]["message"]


def test_readiness_reads_the_state(settings) -> None:
    """/readyz and the protocol's server-ready answer from the state the worker serves: a state
    without the default model (which start-up and reloads never leave, so made here) is not
    ready, while liveness still answers."""
    from dataclasses import replace

    from service import create_app
    from service.state import EXTENSION

    app = create_app(settings)
    client = app.test_client()
    assert client.get("/readyz").status_code == 200
    assert client.get("/v2/health/ready").get_json() == {"ready": True}
    state = app.extensions[EXTENSION]
    app.extensions[EXTENSION] = replace(
        state, models={name: v for name, v in state.models.items() if name != state.default_name}
    )
    answer = client.get("/readyz")
    assert answer.status_code == 503 and answer.get_json()["error"]["code"] == "not_ready"
    ready = client.get("/v2/health/ready")
    assert (ready.status_code, ready.get_json()) == (400, {"ready": False})
    assert client.get("/healthz").status_code == 200
    assert client.get("/v2/health/live").status_code == 200
