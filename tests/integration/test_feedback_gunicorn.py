"""Feedback against a real gunicorn: FEEDBACK_DIR and AUTH_TOKEN on the server command, several
workers (and two servers on one directory, as replicas on one volume), concurrent POSTs, real
PNG digits from the MNIST sample; a full and a read-only disk when this machine lets a test
mount a tmpfs (root with CAP_SYS_ADMIN), else those two are skipped.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from gunicorn_testkit import gunicorn, stop, wait_ready
from numpy.typing import NDArray
from PIL import Image

TOKEN = "feedback-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FEEDBACK = "/v1/models/mnist/feedback"
IMAGE_SUFFIXES = {".png", ".jpg", ".gif", ".bmp", ".webp"}


def png(pixels: NDArray[np.uint8]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def image_files(root: Path) -> list[Path]:
    """What an image-folder reader of FEEDBACK_DIR/<model> sees: files in class folders."""
    return sorted(p for p in root.glob("*/*/*") if p.is_file())


def record_lines(root: Path) -> list[dict[str, Any]]:
    path = root / "mnist.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def assert_whole(root: Path) -> None:
    """Every stored file is whole (its content has the hash its name says) and is an image;
    each image is in one class folder only; no temp file is left in a class folder."""
    names = [p.name for p in image_files(root)]
    assert len(names) == len(set(names)), "an image in two class folders"
    for path in image_files(root):
        assert path.suffix in IMAGE_SUFFIXES, path
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.stem, path
        with Image.open(path) as image:
            image.load()


def corrections_counted(url: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=10).text
    return sum(
        float(m.group(1))
        for m in re.finditer(
            r'^digits_feedback_corrections_total\{[^}]*model="mnist"[^}]*\} (\S+)$', text, re.M
        )
    )


class Server:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.proc = gunicorn(env, log)
        self.url = wait_ready(self.proc, log)


@pytest.fixture
def serve(server_env: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    """Start gunicorn servers with extra settings; every one is stopped at the end."""
    started: list[Server] = []

    def start(**extra: str) -> Server:
        server = Server({**server_env, "ACCESS_LOG": "0", **extra}, tmp_path / f"gunicorn-{len(started)}.log")
        started.append(server)
        return server

    yield start
    for server in started:
        stop(server.proc)


@pytest.fixture(scope="module")
def digit_pngs(mnist_sample: tuple[NDArray[np.uint8], NDArray[np.intp]]) -> list[tuple[bytes, int]]:
    """300 distinct real digits as PNG, with their labels."""
    images, labels = mnist_sample
    pngs = [(png(images[i]), int(labels[i])) for i in range(len(images))]
    distinct = list({data: (data, label) for data, label in pngs}.values())
    assert len(distinct) >= 300
    return distinct[:300]


def test_every_refusal_is_4xx_json_and_writes_nothing(serve: Any, tmp_path: Path, digit_pngs: Any) -> None:
    root = tmp_path / "feedback"
    server = serve(FEEDBACK_DIR=str(root), AUTH_TOKEN=TOKEN, WEB_CONCURRENCY="2")
    image, _ = digit_pngs[0]
    raw = {"Content-Type": "image/png"}
    cases = [
        ("no token", FEEDBACK + "?label=7", image, raw, 401),
        ("wrong token", FEEDBACK + "?label=7", image, {**raw, "Authorization": "Bearer wrong"}, 401),
        ("label 10", FEEDBACK + "?label=10", image, {**raw, **AUTH}, 422),
        ("label -1", FEEDBACK + "?label=-1", image, {**raw, **AUTH}, 422),
        ("label seven", FEEDBACK + "?label=seven", image, {**raw, **AUTH}, 422),
        ("unknown model", "/v1/models/nope/feedback?label=7", image, {**raw, **AUTH}, 404),
        ("not an image", FEEDBACK + "?label=7", b"GIF89a but no", {**raw, **AUTH}, 422),
        ("no label", FEEDBACK, image, {**raw, **AUTH}, 422),
    ]
    for what, path, body, headers, status in cases:
        response = requests.post(server.url + path, data=body, headers=headers, timeout=10)
        assert response.status_code == status, (what, response.text)
        assert response.headers["Content-Type"].startswith("application/json"), what
        assert set(response.json()["error"]) >= {"status", "code", "message"}, what
    # the same refusals as multipart: label 10, no label
    for fields, status in (({"label": "10"}, 422), ({}, 422)):
        response = requests.post(
            server.url + FEEDBACK,
            files={"image": ("d.png", image, "image/png")},
            data=fields,
            headers=AUTH,
            timeout=10,
        )
        assert response.status_code == status, response.text
    assert image_files(root) == [] and record_lines(root) == []
    assert corrections_counted(server.url) == 0


def test_300_corrections_are_300_files_and_a_repeat_adds_none(
    serve: Any, tmp_path: Path, digit_pngs: Any
) -> None:
    root = tmp_path / "feedback"
    server = serve(FEEDBACK_DIR=str(root), AUTH_TOKEN=TOKEN, WEB_CONCURRENCY="3")

    def send(item: tuple[bytes, int]) -> int:
        data, label = item
        with requests.Session() as session:
            response = session.post(
                server.url + FEEDBACK,
                files={"image": ("digit.png", data, "image/png")},
                data={"label": str(label)},
                headers=AUTH,
                timeout=30,
            )
        return response.status_code

    with ThreadPoolExecutor(8) as pool:  # concurrent, over 3 workers
        statuses = list(pool.map(send, digit_pngs))
    assert statuses == [201] * 300
    files = image_files(root)
    assert len(files) == 300
    assert all(p.parent.parent == root / "mnist" for p in files)
    assert {p.parent.name for p in files} <= {str(d) for d in range(10)}
    assert send(digit_pngs[123]) == 201  # again: a duplicate
    assert len(image_files(root)) == 300
    assert_whole(root)
    lines = record_lines(root)
    assert len(lines) == 301
    assert sorted(line["status"] for line in lines).count("created") == 300
    assert corrections_counted(server.url) == 301
    # the stored files are what train --images reads: each in its label's folder
    first, label = digit_pngs[0]
    assert (root / "mnist" / str(label) / f"{hashlib.sha256(first).hexdigest()}.png").read_bytes() == first


def test_two_servers_on_one_directory_lose_and_corrupt_nothing(
    serve: Any, tmp_path: Path, digit_pngs: Any
) -> None:
    """Two replicas (2 workers each) on one volume, the same images sent to both at once, half
    of them with conflicting labels: every request is recorded, every image is stored once."""
    root = tmp_path / "feedback"
    servers = [serve(FEEDBACK_DIR=str(root), WEB_CONCURRENCY="2") for _ in range(2)]
    images = digit_pngs[:80]
    jobs = [
        (servers[i % 2].url, data, (label + i % 2) % 10 if n % 2 else label)
        for n, (data, label) in enumerate(images)
        for i in range(4)
    ]

    def send(job: tuple[str, bytes, int]) -> int:
        url, data, label = job
        response = requests.post(
            f"{url}{FEEDBACK}?label={label}", data=data, headers={"Content-Type": "image/png"}, timeout=30
        )
        return response.status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(send, jobs))
    assert statuses == [201] * len(jobs)
    assert len(image_files(root)) == len(images)
    assert_whole(root)
    lines = record_lines(root)
    assert len(lines) == len(jobs)
    assert sum(line["status"] == "created" for line in lines) == len(images)
    assert not list((root / ".tmp").iterdir())
    # where each image is now is where its last recorded correction put it
    last = {line["sha256"]: line["file"] for line in lines}
    assert sorted(last.values()) == sorted(str(p.relative_to(root / "mnist")) for p in image_files(root))


def test_without_feedback_dir_feedback_is_a_4xx_json_error(serve: Any, digit_pngs: Any) -> None:
    server = serve(WEB_CONCURRENCY="1")
    response = requests.post(
        server.url + FEEDBACK,
        files={"image": ("d.png", digit_pngs[0][0], "image/png")},
        data={"label": "7"},
        timeout=10,
    )
    assert (response.status_code, response.json()["error"]["code"]) == (404, "feedback_disabled")
    assert requests.get(server.url + "/v1/models", timeout=10).json()["feedback"] is False


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 96 KiB tmpfs: a disk that fills up after a few images (skipped where mounting is not
    allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount)], capture_output=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_then_read_only_disk_is_503_while_predictions_go_on(
    serve: Any, small_disk: Path, digit_pngs: Any
) -> None:
    root = small_disk / "feedback"
    server = serve(FEEDBACK_DIR=str(root), WEB_CONCURRENCY="2")
    rng = np.random.default_rng(0)
    raw = {"Content-Type": "image/png"}
    statuses = []
    for _ in range(40):  # noise does not compress: ~7.5 KB a PNG, ~12 fill the disk
        noise = png(rng.integers(0, 256, (80, 80), dtype=np.uint8))
        response = requests.post(f"{server.url}{FEEDBACK}?label=3", data=noise, headers=raw, timeout=10)
        statuses.append(response.status_code)
        if response.status_code == 503:
            assert response.json()["error"]["code"] == "feedback_unavailable"
            assert "full" in response.json()["error"]["message"]
        predict = requests.post(f"{server.url}/predict", data=digit_pngs[0][0], headers=raw, timeout=10)
        assert predict.status_code == 200
    assert 201 in statuses and statuses[-1] == 503
    stored = sum(s == 201 for s in statuses)
    assert_whole(root)
    assert len(image_files(root)) == stored  # the refused ones left nothing
    lines = record_lines(root)
    assert len(lines) == stored

    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    response = requests.post(
        f"{server.url}{FEEDBACK}?label=7", data=digit_pngs[1][0], headers=raw, timeout=10
    )
    assert (response.status_code, response.json()["error"]["code"]) == (503, "feedback_unavailable")
    assert "read-only" in response.json()["error"]["message"]
    assert (
        requests.post(f"{server.url}/predict", data=digit_pngs[1][0], headers=raw, timeout=10).status_code
        == 200
    )
    assert len(image_files(root)) == stored
