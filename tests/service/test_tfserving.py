"""TF Serving's REST protocol (KServe V1): /v1/models/<name>[/versions/<v>]:predict, :explain and
/metadata.

Bodies are sent as TF Serving's clients send them; answers are checked against the v1 API's
own predict and explain for the same inputs, so both protocols are one model seen twice.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient
from numpy.typing import NDArray
from service_testkit import TEST_MAX_BATCH, TEST_MAX_REQUEST_BYTES, png_bytes, sample_as_photo

Sample = tuple[NDArray[np.uint8], NDArray[np.intp]]


def rows(sample: Sample, n: int = 4) -> list[list[float]]:
    images, _ = sample
    return (images[:n].reshape(n, 784) / 255.0).tolist()  # type: ignore[no-any-return]


def scans(sample: Sample, n: int) -> list[dict[str, str]]:
    """Real MNIST digits as scans (dark ink on white, larger, off-centre), TF Serving's b64."""
    images, _ = sample
    return [{"b64": base64.b64encode(png_bytes(sample_as_photo(image))).decode()} for image in images[:n]]


def v1_predictions(client: FlaskClient, body: dict[str, Any]) -> list[dict[str, Any]]:
    return client.post("/v1/models/mnist/predict", json=body).get_json()["predictions"]  # type: ignore[no-any-return]


def test_instances_answer_predictions_as_v1_predict_does(client: FlaskClient, mnist_sample: Sample) -> None:
    x = rows(mnist_sample)
    response = client.post("/v1/models/mnist:predict", json={"instances": x})
    assert response.status_code == 200
    assert set(response.get_json()) == {"predictions"}
    assert response.get_json()["predictions"] == v1_predictions(client, {"inputs": x})


def test_an_instance_may_be_a_28x28_grid_and_signature_serving_default(
    client: FlaskClient, mnist_sample: Sample
) -> None:
    images, _ = mnist_sample
    grids = (images[:2] / 255.0).tolist()
    body = {"signature_name": "serving_default", "instances": grids}
    predictions = client.post("/v1/models/mnist:predict", json=body).get_json()["predictions"]
    assert predictions == v1_predictions(client, {"inputs": grids})


def test_columnar_inputs_answer_columnar_outputs(client: FlaskClient, mnist_sample: Sample) -> None:
    x = rows(mnist_sample, 3)
    expected = v1_predictions(client, {"inputs": x})
    for inputs in (x, {"input": x}):
        body = client.post("/v1/models/mnist:predict", json={"inputs": inputs}).get_json()
        assert body == {
            "outputs": {
                "label": [p["label"] for p in expected],
                "class_name": [p["class_name"] for p in expected],
                "probabilities": [p["probabilities"] for p in expected],
            }
        }


def test_b64_scans_are_preprocessed_like_uploads(client: FlaskClient, mnist_sample: Sample) -> None:
    images, labels = mnist_sample
    instances = scans(mnist_sample, 12)
    predictions = client.post("/v1/models/mnist:predict", json={"instances": instances}).get_json()[
        "predictions"
    ]
    uploads = v1_predictions(client, {"images": [item["b64"] for item in instances]})
    assert predictions == uploads
    assert sum(p["label"] == t for p, t in zip(predictions, labels[:12], strict=True)) >= 11
    # a named instance, {"input": {"b64": ...}}, is the same thing; a batch of 2 against one of 12:
    # BLAS may sum in another order for another batch size, so the last bits may differ
    named = [{"input": item} for item in instances[:2]]
    answers = client.post("/v1/models/mnist:predict", json={"instances": named}).get_json()["predictions"]
    assert [p["label"] for p in answers] == [p["label"] for p in uploads[:2]]
    np.testing.assert_allclose(
        [p["probabilities"] for p in answers], [p["probabilities"] for p in uploads[:2]], rtol=1e-5, atol=1e-7
    )


def test_any_json_content_type_is_read_as_json(client: FlaskClient, mnist_sample: Sample) -> None:
    """TF Serving's documented ``curl -d`` sends application/x-www-form-urlencoded."""
    import orjson

    body = orjson.dumps({"instances": rows(mnist_sample, 1)})
    for content_type in ("application/json", "application/x-www-form-urlencoded", "text/plain", None):
        headers = {"Content-Type": content_type} if content_type else {}
        response = client.post("/v1/models/mnist:predict", data=body, headers=headers)
        assert response.status_code == 200, content_type


def test_versioned_routes(client: FlaskClient, mnist_sample: Sample) -> None:
    version = client.get("/v1/models/mnist").get_json()["version"]
    x = rows(mnist_sample, 1)
    response = client.post(f"/v1/models/mnist/versions/{version}:predict", json={"instances": x})
    assert response.get_json()["predictions"] == v1_predictions(client, {"inputs": x})
    response = client.post(f"/v1/models/mnist/versions/{version}:explain", json={"instances": x, "steps": 4})
    assert response.status_code == 200


def test_model_status_says_ready_as_kserve_and_tf_serving_read_it(client: FlaskClient) -> None:
    body = client.get("/v1/models/mnist").get_json()
    assert body["ready"] is True
    assert body["model_version_status"] == [
        {"version": v, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        for v in reversed(body["versions"])
    ]
    listed = client.get("/v1/models").get_json()["models"]
    assert all(model["ready"] is True for model in listed)


def dims(tensor: dict[str, Any]) -> list[int]:
    return [int(d["size"]) for d in tensor["tensor_shape"]["dim"]]


@pytest.mark.parametrize("model", ["mnist", "fashion-mnist"])
def test_metadata_describes_what_predict_answers(
    client: FlaskClient, mnist_sample: Sample, model: str
) -> None:
    """GET .../metadata, as TF Serving's clients read it: the signature's input takes what
    :predict takes, and its outputs are exactly the columns :predict answers, in their shapes."""
    info = client.get(f"/v1/models/{model}").get_json()
    body = client.get(f"/v1/models/{model}/metadata").get_json()
    assert body["model_spec"] == {"name": model, "signature_name": "", "version": info["version"]}
    signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    ((name, tensor),) = signature["inputs"].items()
    assert (tensor["dtype"], tensor["name"]) == ("DT_FLOAT", f"{name}:0")
    assert dims(tensor) == [-1, int(np.prod(info["input_shape"]))]
    x = rows(mnist_sample, 3)
    outputs = client.post(f"/v1/models/{model}:predict", json={"inputs": {name: x}}).get_json()["outputs"]
    assert set(signature["outputs"]) == set(outputs)
    dtypes = {"DT_FLOAT": float, "DT_INT64": int, "DT_STRING": str}
    for key, tensor in signature["outputs"].items():
        got = np.asarray(outputs[key], dtype=object)
        assert [len(x), *dims(tensor)[1:]] == list(got.shape), key
        assert all(isinstance(v, dtypes[tensor["dtype"]]) for v in got.ravel()), key
    assert dims(signature["outputs"]["probabilities"]) == [-1, info["num_classes"]]


def test_metadata_of_a_version_and_its_errors(client: FlaskClient) -> None:
    version = client.get("/v1/models/mnist").get_json()["version"]
    body = client.get(f"/v1/models/mnist/versions/{version}/metadata").get_json()
    assert body["model_spec"]["version"] == version
    for response, status in [
        (client.get("/v1/models/nope/metadata"), 404),
        (client.get("/v1/models/mnist/versions/999/metadata"), 404),
        (client.post("/v1/models/mnist/metadata", json={}), 405),
        (client.delete(f"/v1/models/mnist/versions/{version}/metadata"), 405),
    ]:
        assert response.status_code == status
        assert set(response.get_json()) == {"error"}, response.get_json()
    assert "GET" in client.post("/v1/models/mnist/metadata").headers["Allow"]
    # v1's own routes keep v1's error shape, even for a model or version named "metadata"
    assert client.get("/v1/models/metadata").get_json()["error"]["code"] == "model_not_found"
    assert client.get("/v1/models/mnist/versions/metadata").get_json()["error"]["code"] == "version_not_found"


def test_explain_answers_as_the_v1_explain_does(client: FlaskClient, mnist_sample: Sample) -> None:
    x = rows(mnist_sample, 2)
    options = {"method": "integrated_gradients", "target": [1, 2], "steps": 16}
    body = client.post("/v1/models/mnist:explain", json={"instances": x, **options}).get_json()
    v1 = client.post("/v1/models/mnist/explain", json={"inputs": x, **options}).get_json()
    assert body == {"explanations": v1["explanations"]}
    # an image explained comes with the 28x28 it became
    [item] = client.post("/v1/models/mnist:explain", json={"instances": scans(mnist_sample, 1)}).get_json()[
        "explanations"
    ]
    assert np.shape(item["preprocessed"]) == (28, 28)
    assert item["method"] == "integrated_gradients"


# --- errors: TF Serving's {"error": "<message>"} ------------------------------------------
ZERO = [0.0] * 784


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/v1/models/nope:predict", {"instances": [ZERO]}, 404, "no model named 'nope'"),
        ("/v1/models/mnist/versions/999:predict", {"instances": [ZERO]}, 404, "no version '999'"),
        ("/v1/models/mnist:predict", {}, 400, "exactly one of 'instances'"),
        ("/v1/models/mnist:predict", {"instances": [ZERO], "inputs": [ZERO]}, 400, "exactly one of"),
        ("/v1/models/mnist:predict", {"instances": [ZERO], "signature_name": "x"}, 400, "serving_default"),
        ("/v1/models/mnist:predict", {"instances": [ZERO], "extra": 1}, 400, "extra: Unknown field"),
        ("/v1/models/mnist:predict", [ZERO], 400, "JSON object"),
        ("/v1/models/mnist:predict", {"instances": []}, 400, "instances is empty"),
        ("/v1/models/mnist:predict", {"instances": [[0.5] * 10]}, 400, "got 10 numbers"),
        ("/v1/models/mnist:predict", {"instances": [[2.0] * 784]}, 400, "values must be in [0, 1]"),
        ("/v1/models/mnist:predict", {"instances": [["x"] * 784]}, 400, "all numbers or all images"),
        ("/v1/models/mnist:predict", {"instances": [{"b64": "%%%"}]}, 400, "[0].b64 is not valid base64"),
        ("/v1/models/mnist:predict", {"instances": [{"b64": "aGVsbG8="}]}, 400, "instances[0]: not a PNG"),
        ("/v1/models/mnist:predict", {"instances": [{"b64": 3}]}, 400, "b64 must be a base64 string"),
        ("/v1/models/mnist:predict", {"instances": [ZERO] * (TEST_MAX_BATCH + 1)}, 400, "at most 16"),
        ("/v1/models/mnist:predict", {"inputs": {"other": [ZERO]}}, 400, "the one input"),
        ("/v1/models/mnist:explain", {"instances": [ZERO], "method": "shap"}, 400, "method must be one of"),
        (
            "/v1/models/mnist:explain",
            {"instances": [ZERO], "target": 12},
            400,
            "target must be a class in [0, 9]",
        ),
        ("/v1/models/mnist:explain", {"instances": [ZERO], "steps": 0}, 400, "steps must be an integer"),
        ("/v1/models/mnist:explain", {"instances": [ZERO], "steps": "8"}, 400, "steps: Not a valid integer"),
    ],
)
def test_errors_are_tf_serving_shaped(
    client: FlaskClient, path: str, body: Any, status: int, words: str
) -> None:
    response = client.post(path, json=body)
    assert response.status_code == status
    assert response.mimetype == "application/json"
    payload = response.get_json()
    assert set(payload) == {"error"} and isinstance(payload["error"], str)
    assert words in payload["error"], payload["error"]


def test_transport_errors_are_tf_serving_shaped(client: FlaskClient) -> None:
    cases = [
        (client.post("/v1/models/mnist:predict", data=b'{"instances": [[0.1,'), 400),
        (client.post("/v1/models/mnist:predict", data=b"\x89PNG", content_type="image/png"), 415),
        (client.post("/v1/models/mnist:frobnicate", json={"instances": [ZERO]}), 405),
        (client.get("/v1/models/mnist:predict"), 405),
        (client.get("/v1/models/mnist/versions/1:explain"), 405),
        (client.post("/v1/models/mnist:predict", data=b"{" + b" " * TEST_MAX_REQUEST_BYTES + b"}"), 413),
    ]
    for response, status in cases:
        assert response.status_code == status
        assert set(response.get_json()) == {"error"}, response.get_json()
