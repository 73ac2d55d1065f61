"""examples/: the shipped digit scans and examples/client.py, against a real gunicorn serving the
shipped models in ``models/`` (the README's curl commands and the client use them).

Every ``examples/digit-N.png`` is recognised as N through v1 (raw image body) and TF Serving's
``{"b64": ...}`` instances; ``examples/client.py``, run as a command, prints N for each image over
v1, TF Serving and v2 (Triton's client), with the bearer token; and the PNGs are what
``examples/make_digits.py`` makes from the MNIST test digits it names.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from gunicorn_testkit import gunicorn, stop, wait_ready
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
CLIENT = EXAMPLES / "client.py"
DIGIT_FILES = sorted(EXAMPLES.glob("digit-*.png"))
TOKEN = "examples-test-token-0123456789"
PROTOCOLS = ("v1", "tfserving", "v2")
#: One line of the client's answers: the image, the protocol, the class, its probability.
ANSWER = re.compile(r"^(?P<image>\S+)\s+(?P<protocol>v1|tfserving|v2)\s+(?P<name>.+?)\s+\((?P<p>[\d.]+)%\)$")


def true_digit(path: Path) -> str:
    return path.stem.removeprefix("digit-")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """gunicorn with the shipped models and a bearer token; yields its base URL."""
    log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    process = gunicorn(
        {
            "MODEL_DIR": str(ROOT / "models"),
            "DEFAULT_MODEL": "mnist",
            "AUTH_TOKEN": TOKEN,
            "WEB_CONCURRENCY": "2",
        },
        log,
    )
    try:
        yield wait_ready(process, log)
    finally:
        assert stop(process) == 0
        assert "Traceback" not in log.read_text()


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {TOKEN}"
        yield session


def client(*args: str, prelude: str = "") -> subprocess.CompletedProcess[str]:
    """``python examples/client.py ARGS`` from another directory, as another project would run it.

    ``prelude``: Python run first in the same interpreter (to take a package away)."""
    command = [sys.executable, str(CLIENT), *args]
    if prelude:
        run = "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
        runner = f"{prelude}; {run}"
        command = [sys.executable, "-c", runner, str(CLIENT), *args]
    return subprocess.run(command, cwd=ROOT / "tests", capture_output=True, text=True, timeout=120)


# --- the images -----------------------------------------------------------------------------------
def test_there_is_one_scan_of_every_digit() -> None:
    assert [true_digit(p) for p in DIGIT_FILES] == [str(d) for d in range(10)]
    for path in DIGIT_FILES:
        with Image.open(path) as image:
            assert image.format == "PNG"
            pixels = np.asarray(image.convert("L"))
        border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
        assert np.median(border) > 200, path  # light paper
        assert pixels.min() < 80, path  # dark ink
        assert 100 <= min(pixels.shape) <= 160, path


@pytest.mark.parametrize("path", DIGIT_FILES, ids=lambda p: p.name)
def test_each_scan_is_recognised_as_its_digit_over_v1_and_tf_serving(
    server: str, http: requests.Session, path: Path
) -> None:
    png = path.read_bytes()
    raw = http.post(f"{server}/v1/models/mnist/predict", data=png, headers={"Content-Type": "image/png"})
    assert raw.status_code == 200, raw.text
    assert raw.json()["predictions"][0]["class_name"] == true_digit(path)

    instances = {"instances": [{"b64": base64.b64encode(png).decode("ascii")}]}
    tf = http.post(f"{server}/v1/models/mnist:predict", json=instances)
    assert tf.status_code == 200, tf.text
    assert tf.json()["predictions"][0]["class_name"] == true_digit(path)


def test_the_scans_are_what_make_digits_makes_from_mnist(tmp_path: Path, mnist_sample_dir: Path) -> None:
    """tests/data/mnist-sample holds the first 1,000 MNIST test digits, which include every one
    make_digits.py names: run on them, it makes exactly the committed pixels."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        import make_digits
    finally:
        sys.path.remove(str(EXAMPLES))
    assert make_digits.main(["--data-dir", str(mnist_sample_dir), "--out", str(tmp_path)]) == 0
    for path in DIGIT_FILES:
        with Image.open(path) as shipped, Image.open(tmp_path / path.name) as made:
            assert np.array_equal(np.asarray(shipped), np.asarray(made)), path.name


# --- examples/client.py ---------------------------------------------------------------------------
def test_the_client_prints_the_true_digit_of_each_image_over_each_protocol(server: str) -> None:
    result = client("--url", server, "--token", TOKEN, *map(str, DIGIT_FILES))
    assert result.returncode == 0, result.stderr
    answers = [ANSWER.match(line) for line in result.stdout.splitlines()]
    assert all(answers), result.stdout
    got = {(Path(m["image"]).name, m["protocol"]): m["name"] for m in answers if m}
    assert got == {(p.name, protocol): true_digit(p) for p in DIGIT_FILES for protocol in PROTOCOLS}
    assert all(float(m["p"]) > 50 for m in answers if m)


def test_the_client_explains_with_the_pixels_that_mattered(server: str) -> None:
    seven = EXAMPLES / "digit-7.png"
    result = client("--url", server, "--token", TOKEN, "--protocol", "v1", "--explain", str(seven))
    assert result.returncode == 0, result.stderr
    answer, why = result.stdout.splitlines()
    assert ANSWER.match(answer)["name"] == "7"  # type: ignore[index]
    pixels = re.findall(r"\((\d+),(\d+)\) \+(\d\.\d+)", why)
    assert why.startswith("  why 7 (integrated_gradients): ") and len(pixels) == 5, why
    assert all(0 <= int(r) < 28 and 0 <= int(c) < 28 and float(a) > 0 for r, c, a in pixels)


def test_the_client_says_what_the_server_refused(server: str) -> None:
    result = client("--url", server, "--protocol", "tfserving", str(EXAMPLES / "digit-7.png"))
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {server}/v1/models/mnist:predict: HTTP 401: ")
    assert "Traceback" not in result.stderr


def test_the_client_asks_for_tritonclient_only_for_v2(server: str) -> None:
    no_triton = "import sys; sys.modules['tritonclient'] = None"  # as if it were not installed
    seven = str(EXAMPLES / "digit-7.png")
    without = client("--url", server, "--token", TOKEN, seven, prelude=no_triton)
    assert without.returncode == 1
    assert "v2 needs Triton's client: pip install 'tritonclient[http]'" in without.stderr
    assert "Traceback" not in without.stderr
    others = client("--url", server, "--token", TOKEN, "--protocol", "v1", "--protocol", "tfserving", seven)
    assert others.returncode == 0, others.stderr
    assert len(others.stdout.splitlines()) == 2


def test_the_client_refuses_a_missing_file_before_calling(tmp_path: Path) -> None:
    result = client("--url", "http://127.0.0.1:9", str(tmp_path / "nope.png"))
    assert (result.returncode, result.stderr) == (2, f"error: no such file: {tmp_path / 'nope.png'}\n")


def test_the_clients_v2_pixels_are_near_the_servers_preprocessing(
    server: str, http: requests.Session
) -> None:
    """The client's own MNIST-like preparation for v2 is close to the server's (``preprocess``)."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        from client import mnist_pixels
    finally:
        sys.path.remove(str(EXAMPLES))
    for path in DIGIT_FILES:
        served = http.post(
            f"{server}/v1/models/mnist/preprocess",
            data=path.read_bytes(),
            headers={"Content-Type": "image/png"},
        ).json()["inputs"][0]
        ours = mnist_pixels(path) / 255
        assert np.abs(ours - np.asarray(served)).mean() < 0.05, path.name
