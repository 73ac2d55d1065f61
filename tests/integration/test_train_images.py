"""``train --images`` as a user runs it (issue 18): fine-tune a served model on a folder of real
images from a source MNIST never showed, publish it, and have a real gunicorn serve it, with the
same answers the training side computed; and the refusals as one line with no traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import requests
from gunicorn_testkit import gunicorn, stop, wait_ready

from training import load_model
from training.imagefolder import load_image_folder

REPO = Path(__file__).resolve().parents[2]
UCI = REPO / "tests" / "data" / "uci-digits"


def train(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "training", "train", *map(str, argv)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def test_fine_tune_publish_and_serve(tmp_path: Path, mnist_sample_dir: Path) -> None:
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    shutil.copy(REPO / "models" / "mnist.npz", model_dir / "mnist.npz")
    done = train(
        "--images", UCI / "train", "--init-from", model_dir / "mnist.npz", "--replay", "mnist",
        "--data-dir", mnist_sample_dir, "--seed", "0", "--publish", model_dir / "new",
        "--epochs", "10", "--no-progress",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    published = model_dir / "new" / "1" / "model.npz"
    net = load_model(published).network()
    held_out = load_image_folder(UCI / "held-out")
    expected = net.predict(held_out.x).argmax(axis=1)

    log = tmp_path / "gunicorn.log"
    proc = gunicorn({"MODEL_DIR": str(model_dir), "WEB_CONCURRENCY": "1"}, log)
    try:
        url = wait_ready(proc, log)
        files = [UCI / "held-out" / name for name in held_out.files]
        answers: list[int] = []
        for start in range(0, len(files), 50):
            chunk = files[start : start + 50]
            response = requests.post(
                f"{url}/v1/models/new/predict",
                files=[("images", (f.name, f.read_bytes(), "image/png")) for f in chunk],
                timeout=30,
            )
            assert response.status_code == 200, response.text
            answers += [p["label"] for p in response.json()["predictions"]]
        info = requests.get(f"{url}/v1/models/new", timeout=5).json()
    finally:
        stop(proc)
    # the server's answers are the training side's: one preprocessing, no skew
    np.testing.assert_array_equal(np.array(answers), expected)
    assert json.dumps(info).count("files_sha256") >= 1


def test_refusals_are_one_line_without_a_traceback(tmp_path: Path) -> None:
    model = REPO / "models" / "mnist.npz"
    empty = tmp_path / "empty"
    empty.mkdir()
    lacking = tmp_path / "lacking"
    for name in ("1", "letter-a"):
        shutil.copytree(UCI / "train" / "1", lacking / name)
    for folder, message in ((empty, "no class folders"), (lacking, "'letter-a' is not one of the model's")):
        done = train("--images", folder, "--init-from", model)
        assert done.returncode == 2
        assert "Traceback" not in done.stderr
        assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    corrupt = tmp_path / "corrupt"
    for name in ("1", "2"):
        shutil.copytree(UCI / "train" / name, corrupt / name)
    (corrupt / "2" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    done = train("--images", corrupt, "--init-from", model, "--epochs", "1", "--output", tmp_path / "x.npz")
    assert done.returncode == 0, done.stderr
    assert str(corrupt / "2" / "broken.png") in done.stderr
    assert "Traceback" not in done.stderr
