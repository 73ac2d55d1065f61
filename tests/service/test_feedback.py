"""POST /v1/models/<name>/feedback through the test client: every form predict takes, labels by
index or name, what lands on disk (the image folder and the record), duplicates, relabelling,
the quota, and every refusal writing nothing. Against a real gunicorn (auth, several workers
and servers on one volume, a full and a read-only disk): tests/integration/test_feedback_gunicorn.py.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from service_testkit import bomb_png, drawn_digit, png_bytes

from service import create_app
from service.feedback_store import FeedbackStore
from service.settings import Settings
from training.classfolders import class_folder

FEEDBACK = "/v1/models/mnist/feedback"


@pytest.fixture
def feedback_dir(tmp_path: Path) -> Path:
    return tmp_path / "feedback"


@pytest.fixture
def feedback_app(settings: Settings, feedback_dir: Path) -> Flask:
    return create_app(replace(settings, feedback_dir=feedback_dir))


@pytest.fixture
def fb(feedback_app: Flask) -> FlaskClient:
    return feedback_app.test_client()


def image_files(root: Path) -> list[Path]:
    """Every file in the model folders' class folders (what an image-folder reader sees)."""
    return sorted(p for p in root.glob("*/*/*") if p.is_file())


def records(root: Path, model: str = "mnist") -> list[dict[str, Any]]:
    path = root / f"{model}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def digit_png(seed: int) -> bytes:
    """A distinct real PNG per seed: a 7 drawn at an offset."""
    return png_bytes(drawn_digit("7", size=60, offset=(seed % 7, seed // 7 % 7)))


def test_a_raw_image_with_label_is_stored_as_sent_under_its_class(
    fb: FlaskClient, feedback_dir: Path
) -> None:
    png = digit_png(0)
    response = fb.post(
        f"{FEEDBACK}?label=7&predicted=1&request_id=abc123",
        data=png,
        headers={"Content-Type": "image/png", "X-Request-ID": "fix-1"},
    )
    assert response.status_code == 201, response.json
    digest = hashlib.sha256(png).hexdigest()
    body = response.json
    assert body["model"] == "mnist" and body["version"]
    item = body["stored"][0]
    assert {k: item[k] for k in ("label", "class_name", "predicted", "file", "sha256", "status")} == {
        "label": 7,
        "class_name": "7",
        "predicted": "1",
        "file": f"7/{digest}.png",
        "sha256": digest,
        "status": "created",
    }
    assert item["model_predicted"] in [str(d) for d in range(10)]
    assert image_files(feedback_dir) == [feedback_dir / "mnist" / "7" / f"{digest}.png"]
    assert (feedback_dir / "mnist" / "7" / f"{digest}.png").read_bytes() == png
    [record] = records(feedback_dir)
    assert record["time"].endswith("Z")
    assert {k: record[k] for k in ("model", "version", "request_id", "feedback_request_id", "predicted")} == {
        "model": "mnist",
        "version": body["version"],
        "request_id": "abc123",
        "feedback_request_id": "fix-1",
        "predicted": "1",
    }
    assert (record["label"], record["file"], record["status"], record["bytes"]) == (
        "7",
        f"7/{digest}.png",
        "created",
        len(png),
    )
    # nothing but class folders in the model's folder; the record and the lock beside it
    assert sorted(p.name for p in (feedback_dir / "mnist").iterdir()) == ["7"]
    assert sorted(p.name for p in feedback_dir.iterdir()) == [".lock", ".tmp", "mnist", "mnist.jsonl"]
    assert not list((feedback_dir / ".tmp").iterdir())


def test_multipart_json_images_and_numbers_are_stored(fb: FlaskClient, feedback_dir: Path) -> None:
    jpeg = png_bytes(drawn_digit("1", size=50).convert("RGB"), "JPEG")
    form = fb.post(FEEDBACK, data={"image": (io.BytesIO(jpeg), "one.jpg"), "label": "1"})
    assert form.status_code == 201, form.json
    assert form.json["stored"][0]["file"] == f"1/{hashlib.sha256(jpeg).hexdigest()}.jpg"

    pngs = [digit_png(1), digit_png(2)]
    sent = fb.post(
        "/feedback",  # the default model
        json={
            "images": [base64.b64encode(p).decode() for p in pngs],
            "labels": [7, "3"],
            "predicted": [1, 1],
        },
    )
    assert sent.status_code == 201, sent.json
    assert [s["file"].split("/")[0] for s in sent.json["stored"]] == ["7", "3"]

    pixels = np.zeros((28, 28))
    pixels[4:24, 12:16] = 255
    numbers = fb.post(FEEDBACK, json={"inputs": [pixels.tolist()], "labels": [1], "pixel_range": "0-255"})
    assert numbers.status_code == 201, numbers.json
    stored = feedback_dir / "mnist" / numbers.json["stored"][0]["file"]
    assert stored.suffix == ".png"
    with Image.open(stored) as image:  # the inputs as the model's 28x28 grid, 8-bit
        assert (image.mode, image.size) == ("L", (28, 28))
        assert np.array_equal(np.asarray(image), pixels.astype(np.uint8))
    assert len(image_files(feedback_dir)) == 4
    assert [r["source"] for r in records(feedback_dir)] == ["images", "images", "images", "inputs"]


def test_a_class_name_that_is_no_path_segment_gets_a_safe_folder(fb: FlaskClient, feedback_dir: Path) -> None:
    row = (np.arange(784) % 2).tolist()
    by_name = fb.post("/v1/models/fashion-mnist/feedback", json={"inputs": [row], "labels": ["T-shirt/top"]})
    assert by_name.status_code == 201, by_name.json
    assert by_name.json["stored"][0]["file"].startswith("T-shirt%2Ftop/")
    by_index = fb.post("/v1/models/fashion-mnist/feedback", json={"inputs": [row], "labels": [0]})
    assert by_index.json["stored"][0]["status"] == "duplicate"
    assert [p.parent.name for p in image_files(feedback_dir)] == ["T-shirt%2Ftop"]
    assert class_folder("T-shirt/top") == "T-shirt%2Ftop"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?label=10", "labels"),
        ("?label=-1", "labels"),
        ("?label=seven", "labels"),
        ("?label=7.0", "labels"),
        ("?label=Trouser", "labels"),  # a class of another model
        ("", "label"),
        ("?label=7&labels=7", "label"),
        ("?label=7&predicted=12", "predicted"),
        ("?label=7&request_id=has%20space", "request_id"),
        ("?label=7&colour=red", "colour"),
    ],
)
def test_a_bad_label_or_option_is_422_and_writes_nothing(
    fb: FlaskClient, feedback_dir: Path, query: str, field: str
) -> None:
    response = fb.post(FEEDBACK + query, data=digit_png(0), headers={"Content-Type": "image/png"})
    assert response.status_code == 422, response.json
    assert response.json["error"]["code"] == "validation_error"
    assert field in response.json["error"]["details"]
    assert image_files(feedback_dir) == [] and records(feedback_dir) == []


@pytest.mark.parametrize(
    ("path", "body", "content_type", "status", "code"),
    [
        (FEEDBACK + "?label=7", b"\x89PNG not really", "image/png", 422, "validation_error"),
        (FEEDBACK + "?label=7", bomb_png(50_000, 50_000), "image/png", 413, "image_too_large"),
        ("/v1/models/nope/feedback?label=7", b"", "image/png", 404, "model_not_found"),
        (FEEDBACK, b'{"images": [], "labels": []}', "application/json", 422, "validation_error"),
        (FEEDBACK, b'{"inputs": [[0.5]], "labels": [1]}', "application/json", 422, "validation_error"),
        (FEEDBACK, b"label=7", "text/plain", 415, "unsupported_media_type"),
    ],
)
def test_what_predict_refuses_feedback_refuses_and_writes_nothing(
    fb: FlaskClient, feedback_dir: Path, path: str, body: bytes, content_type: str, status: int, code: str
) -> None:
    response = fb.post(path, data=body, headers={"Content-Type": content_type})
    assert (response.status_code, response.json["error"]["code"]) == (status, code)
    assert image_files(feedback_dir) == [] and records(feedback_dir) == []


def test_a_label_per_input_and_one_label_for_one_input(fb: FlaskClient, feedback_dir: Path) -> None:
    two = [base64.b64encode(digit_png(i)).decode() for i in (3, 4)]
    one_label = fb.post(FEEDBACK, json={"images": two, "label": 7})
    assert one_label.status_code == 422 and "label" in one_label.json["error"]["details"]
    counts = fb.post(FEEDBACK, json={"images": two, "labels": [7]})
    assert counts.status_code == 422 and "labels" in counts.json["error"]["details"]
    assert image_files(feedback_dir) == []


def test_the_same_image_is_stored_once_and_another_label_moves_it(
    fb: FlaskClient, feedback_dir: Path
) -> None:
    png = digit_png(5)
    digest = hashlib.sha256(png).hexdigest()

    def send(label: str) -> dict[str, Any]:
        response = fb.post(f"{FEEDBACK}?label={label}", data=png, headers={"Content-Type": "image/png"})
        assert response.status_code == 201, response.json
        return response.json["stored"][0]  # type: ignore[no-any-return]

    assert send("7")["status"] == "created"
    assert send("7")["status"] == "duplicate"
    assert image_files(feedback_dir) == [feedback_dir / "mnist" / "7" / f"{digest}.png"]
    moved = send("1")  # the newest correction wins: one image, one label
    assert (moved["status"], moved["previous"], moved["file"]) == ("relabelled", "7", f"1/{digest}.png")
    assert image_files(feedback_dir) == [feedback_dir / "mnist" / "1" / f"{digest}.png"]
    assert [(r["label"], r["status"]) for r in records(feedback_dir)] == [
        ("7", "created"),
        ("7", "duplicate"),
        ("1", "relabelled"),
    ]
    assert records(feedback_dir)[-1]["previous_folder"] == "7"


def test_the_same_image_twice_in_one_request(fb: FlaskClient, feedback_dir: Path) -> None:
    png = base64.b64encode(digit_png(6)).decode()
    response = fb.post(FEEDBACK, json={"images": [png, png, png], "labels": [7, 7, 2]})
    assert [s["status"] for s in response.json["stored"]] == ["created", "duplicate", "relabelled"]
    assert [p.parent.name for p in image_files(feedback_dir)] == ["2"]


def test_over_the_quota_is_507_and_writes_nothing(settings: Settings, feedback_dir: Path) -> None:
    client = create_app(replace(settings, feedback_dir=feedback_dir, feedback_max_files=2)).test_client()
    raw = {"Content-Type": "image/png"}
    for seed in (10, 11):
        assert client.post(f"{FEEDBACK}?label=7", data=digit_png(seed), headers=raw).status_code == 201
    before = (feedback_dir / "mnist.jsonl").read_bytes()
    full = client.post(f"{FEEDBACK}?label=7", data=digit_png(12), headers=raw)
    assert (full.status_code, full.json["error"]["code"]) == (507, "feedback_full")
    assert "FEEDBACK_MAX_FILES" in full.json["error"]["message"]
    assert len(image_files(feedback_dir)) == 2
    assert (feedback_dir / "mnist.jsonl").read_bytes() == before
    # what takes no new file is still recorded: a duplicate, a relabelling
    assert client.post(f"{FEEDBACK}?label=7", data=digit_png(10), headers=raw).status_code == 201
    assert client.post(f"{FEEDBACK}?label=3", data=digit_png(10), headers=raw).status_code == 201
    by_bytes = create_app(
        replace(settings, feedback_dir=feedback_dir, feedback_max_bytes=len(digit_png(10)) * 2 + 10)
    ).test_client()
    assert by_bytes.post(f"{FEEDBACK}?label=7", data=digit_png(13), headers=raw).status_code == 507


def test_the_quota_sees_files_other_writers_add(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path, max_files=10, max_bytes=10**6)
    folder = tmp_path / "mnist" / "7"
    folder.mkdir(parents=True)
    assert store.usage() == (0, 0)
    (folder / "a.png").write_bytes(b"x" * 10)
    assert store.usage() == (1, 10)
    (tmp_path / "mnist" / "1").mkdir()
    (tmp_path / "mnist" / "1" / "b.png").write_bytes(b"y" * 5)
    (tmp_path / ".tmp").mkdir()
    (tmp_path / ".tmp" / "partial").write_bytes(b"z" * 100)  # not counted: not an image yet
    assert store.usage() == (2, 15)


def test_without_feedback_dir_feedback_is_404_json(client: FlaskClient) -> None:
    response = client.post(f"{FEEDBACK}?label=7", data=digit_png(0), headers={"Content-Type": "image/png"})
    assert (response.status_code, response.json["error"]["code"]) == (404, "feedback_disabled")
    assert "FEEDBACK_DIR" in response.json["error"]["message"]
    assert client.get("/v1/models").json["feedback"] is False


def test_the_model_list_says_feedback_is_on(fb: FlaskClient) -> None:
    assert fb.get("/v1/models").json["feedback"] is True


def test_a_feedback_dir_that_is_a_file_stops_start_up(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(Exception, match=r"FEEDBACK_DIR .* is not a directory"):
        Settings.from_env({"FEEDBACK_DIR": str(tmp_path / "file")})
    assert Settings.from_env({"FEEDBACK_MAX_FILES": "5"}).feedback_max_files == 5


def metric(client: FlaskClient, name: str, **labels: str) -> float:
    text = client.get("/metrics").get_data(as_text=True)
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            return float(match.group(2))
    return 0.0


def test_metrics_count_corrections_by_predicted_and_label(fb: FlaskClient) -> None:
    name = "digits_feedback_corrections_total"
    before = metric(fb, name, model="mnist", predicted="2", label="5")
    for seed in (20, 21):
        response = fb.post(
            f"{FEEDBACK}?label=5&predicted=2", data=digit_png(seed), headers={"Content-Type": "image/png"}
        )
        assert response.status_code == 201
    assert metric(fb, name, model="mnist", predicted="2", label="5") == before + 2


def test_the_route_is_in_the_openapi_document_with_201(fb: FlaskClient) -> None:
    document = fb.get("/openapi.json").json
    for path in ("/v1/models/{name}/feedback", "/feedback"):
        operation = document["paths"][path]["post"]
        assert {"201", "401", "404", "413", "422", "503", "507"} <= set(operation["responses"])
        assert "200" not in operation["responses"]


def test_a_fashion_correction_trains_as_its_class(
    settings: Settings, tmp_path: Path, feedback_dir: Path
) -> None:
    """The two sides meet at one layout: corrections the service stores for the shipped
    fashion-mnist ("T-shirt/top" in the folder "T-shirt%2Ftop") are what `train --images`
    learns, each as the class it was stored as, fine-tuning that same shipped model."""
    shipped = Path(__file__).resolve().parents[2] / "models"
    client = create_app(replace(settings, model_dir=shipped, feedback_dir=feedback_dir)).test_client()
    shirt, trousers = (png_bytes(drawn_digit(d, size=60)) for d in "01")
    for image, label in ((shirt, "T-shirt/top"), (trousers, "1")):  # by name and by index
        response = client.post(
            "/v1/models/fashion-mnist/feedback",
            data={"image": (io.BytesIO(image), "x.png"), "label": label},
        )
        assert response.status_code == 201, response.json
    folder = feedback_dir / "fashion-mnist"
    assert sorted(p.name for p in folder.iterdir()) == ["T-shirt%2Ftop", "Trouser"]

    from training.cli import main
    from training.export import load_model

    out = tmp_path / "tuned.npz"
    argv = ["train", "--images", str(folder), "--init-from", str(shipped / "fashion-mnist.npz")]
    argv += ["--validation-split", "0", "--epochs", "1", "--output", str(out), "--no-progress"]
    assert main(argv) == 0
    tuned = load_model(out)
    assert tuned.class_names == load_model(shipped / "fashion-mnist.npz").class_names
    assert tuned.metadata["dataset"]["images"]["counts"] == {"T-shirt/top": 1, "Trouser": 1}
    assert tuned.metadata["image_preprocessing"] == "fashion-mnist"
