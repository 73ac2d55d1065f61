"""The demo page end to end: a real headless Chromium, driven by Playwright, against a real gunicorn.

The digits are drawn stroke by stroke with the mouse, and recognised by the shipped models in
``models/`` (a test of real recognition needs a real model). The page is also loaded through a
proxy that strips a path prefix, as nginx's ``location /prefix/ { proxy_pass http://app/; }``
does. Needs Debian's ``chromium`` (or ``CHROMIUM=/path``) and ``pip install playwright``; the
module is skipped, saying which is missing, where they are not installed.

``UPDATE_SCREENSHOT=1`` also writes the README's screenshot, ``docs/demo.png``.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from gunicorn_testkit import gunicorn, stop, wait_ready
from numpy.typing import NDArray
from PIL import Image
from service_testkit import DIGITS, FASHION_CLASSES, drawn_digit, png_bytes

sync_api = pytest.importorskip(
    "playwright.sync_api",
    reason="Playwright for Python is not installed (pip install playwright): "
    "the browser test of the demo page needs it",
)
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
if not Path(CHROMIUM).is_file():
    pytest.skip(
        f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM=path): "
        "the browser test of the demo page needs it",
        allow_module_level=True,
    )

expect = sync_api.expect
ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "models"
SCREENSHOT = ROOT / "docs" / "demo.png"
EXAMPLE_SEVEN = ROOT / "examples" / "digit-7.png"
HEATMAP_SIDE = 280  # service/heatmap.py: 28x28 cells of 10x10 pixels
PREFIX = "/some/prefix"
#: Headless; no sandbox (CI runs as root); no GPU; no background calls out (the network is closed).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Strokes in the 280x280 canvas's pixels, as a person draws them.
ONE = [[(150, 45), (148, 90), (145, 140), (142, 190), (140, 235)]]
SEVEN = [
    [(70, 62), (110, 58), (160, 58), (210, 60)],  # the bar, then
    [(210, 60), (190, 100), (168, 145), (148, 195), (135, 240)],
]  # the stem: two strokes


# --- servers ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """gunicorn serving the shipped models on a loopback port; yields the page's URL."""
    log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    process = gunicorn(
        {
            "MODEL_DIR": str(MODEL_DIR),
            "DEFAULT_MODEL": "mnist",
            "WEB_CONCURRENCY": "2",
            "WORKER_THREADS": "1",
        },
        log,
    )
    try:
        yield wait_ready(process, log) + "/"
    finally:
        stop(process)


FEEDBACK_TOKEN = "demo-feedback-token"


@pytest.fixture(scope="module")
def feedback_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """gunicorn with FEEDBACK_DIR and AUTH_TOKEN set: (the page's URL, FEEDBACK_DIR)."""
    directory = tmp_path_factory.mktemp("feedback-server")
    log, feedback_dir = directory / "gunicorn.log", directory / "feedback"
    process = gunicorn(
        {
            "MODEL_DIR": str(MODEL_DIR),
            "DEFAULT_MODEL": "mnist",
            "WEB_CONCURRENCY": "2",
            "WORKER_THREADS": "1",
            "FEEDBACK_DIR": str(feedback_dir),
            "AUTH_TOKEN": FEEDBACK_TOKEN,
        },
        log,
    )
    try:
        yield wait_ready(process, log) + "/", feedback_dir
    finally:
        stop(process)


class _PrefixStrippingProxy(BaseHTTPRequestHandler):
    """``PREFIX/anything`` -> ``upstream/anything``, as a reverse proxy mounting the app does."""

    upstream: tuple[str, int]
    hop_by_hop = {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
        "host",
    }

    def _forward(self) -> None:
        if not self.path.startswith(PREFIX + "/"):
            self.send_error(404, "outside the proxied prefix")
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in self.hop_by_hop}
        headers["X-Forwarded-Prefix"] = PREFIX
        upstream = http.client.HTTPConnection(*self.upstream, timeout=10)
        try:
            upstream.request(self.command, self.path[len(PREFIX) :], body=body, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
        finally:
            upstream.close()
        self.send_response(answer.status, answer.reason)
        for key, value in answer.getheaders():
            if key.lower() not in self.hop_by_hop and key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _forward

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass


@pytest.fixture(scope="module")
def proxied(server: str) -> Iterator[str]:
    """The page's URL through a proxy that strips ``PREFIX``."""
    host, port = server.removeprefix("http://").rstrip("/").split(":")
    handler = type("Proxy", (_PrefixStrippingProxy,), {"upstream": (host, int(port))})
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{proxy.server_address[1]}{PREFIX}/"
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join()


# --- the browser ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page; fails the test on a script error or a console error (CSP violations too)."""
    context = browser.new_context(viewport={"width": 880, "height": 640})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"script error: {exc}"))
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console: {msg.text}")
            if msg.type == "error" and "Failed to load resource" not in msg.text
            else None
        ),
    )
    yield page
    context.close()
    assert not problems


def open_demo(page: Any, url: str) -> None:
    page.goto(url)
    expect(page.locator("#model")).to_be_enabled()


def draw(page: Any, strokes: list[list[tuple[int, int]]]) -> None:
    """Draw with the mouse, stroke by stroke; each stroke must send one predict request."""
    box = page.locator("#canvas").bounding_box()
    for stroke in strokes:
        with page.expect_response(lambda r: r.url.endswith("/predict")) as answer:
            x, y = stroke[0]
            page.mouse.move(box["x"] + x, box["y"] + y)
            page.mouse.down()
            for _, (x, y) in pairwise(stroke):
                page.mouse.move(box["x"] + x, box["y"] + y, steps=6)
            page.mouse.up()
        answer.value.finished()
    expect(page.locator("#result")).not_to_have_class(re.compile(r"\bbusy\b"))


def seen_ink(page: Any) -> float:
    """The total brightness of the 'what the model sees' canvas."""
    return float(
        page.evaluate("""() => {
        const c = document.getElementById("seen");
        const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i]; return s / 255;
    }""")
    )


def is_explain(response: Any) -> bool:
    return "/explain" in response.url


@dataclass(frozen=True)
class Answer:
    url: str
    status: int
    headers: dict[str, str]
    body: bytes


@pytest.fixture
def explained(page: Any) -> list[Answer]:
    """Every explain answer the page gets, in order, as the server sent it.

    The page reads the PNG as a Blob, and Chromium then keeps no body for Playwright's
    ``response.body()`` (it is empty). So the route asks the server itself (``route.fetch``),
    records the answer and hands it to the page unchanged.
    """
    answers: list[Answer] = []

    def forward(route: Any) -> None:
        answer = route.fetch()
        answers.append(Answer(route.request.url, answer.status, answer.headers, answer.body()))
        route.fulfill(response=answer)

    page.route("**/explain*", forward)
    return answers


def heatmap_of(answer: Answer) -> NDArray[np.uint8]:
    """An explain answer's PNG, checked to be one, as RGB pixels (H, W, 3)."""
    assert answer.status == 200
    assert answer.headers["content-type"] == "image/png"
    assert answer.body.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(answer.body)) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def shown_heatmap(page: Any) -> NDArray[np.uint8]:
    """The pixels of the heatmap the page shows (its <img> at natural size), RGB (H, W, 3)."""
    image = page.locator("#why-image")
    expect(image).to_be_visible()
    size = page.evaluate("""() => {
        const img = document.getElementById("why-image");
        return img.complete ? [img.naturalHeight, img.naturalWidth] : null;
    }""")
    assert size == [HEATMAP_SIDE, HEATMAP_SIDE]
    rgba = page.evaluate("""() => {
        const img = document.getElementById("why-image");
        const c = document.createElement("canvas");
        c.width = img.naturalWidth; c.height = img.naturalHeight;
        const ctx = c.getContext("2d"); ctx.drawImage(img, 0, 0);
        return Array.from(ctx.getImageData(0, 0, c.width, c.height).data);
    }""")
    return np.asarray(rgba, dtype=np.uint8).reshape(HEATMAP_SIDE, HEATMAP_SIDE, 4)[..., :3]


def assert_shows(page: Any, served: NDArray[np.uint8]) -> None:
    """The page shows exactly the PNG the server sent (PNG is lossless; +-1 for colour handling)."""
    shown = shown_heatmap(page).astype(int)
    assert np.abs(shown - served.astype(int)).max() <= 1


def colourful(pixels: NDArray[np.uint8]) -> int:
    """How many pixels are red or blue (attributions), not grey (the input alone)."""
    rgb = pixels.astype(int)
    return int(np.count_nonzero(rgb.max(axis=2) - rgb.min(axis=2) > 30))


# --- tests ------------------------------------------------------------------------------------
def test_drawn_digits_are_recognised(page: Any, server: str, tmp_path: Path) -> None:
    open_demo(page, server)
    options = page.locator("#model option").all_inner_texts()
    assert sorted(options) == ["fashion-mnist", "mnist"]
    assert page.locator("#model").input_value() == "mnist"

    draw(page, ONE)
    expect(page.locator("#prediction")).to_have_text("1")
    assert page.locator("#bars li").all_inner_texts()[1].startswith("1")
    assert seen_ink(page) > 10

    page.click("#clear")
    expect(page.locator("#prediction")).to_have_text("–")
    assert page.locator("#bars li").count() == 0

    draw(page, SEVEN)
    expect(page.locator("#prediction")).to_have_text("7")
    expect(page.locator("#bars li")).to_have_count(len(DIGITS))
    expect(page.locator("#bars li.top .name")).to_have_text("7")
    expect(page.locator("#error")).to_be_hidden()

    shot = tmp_path / "demo.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert shot.read_bytes().startswith(b"\x89PNG")
    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, SCREENSHOT)

    # Another model: the same drawing is sent again and answered with that model's classes.
    with page.expect_response(lambda r: "/v1/models/fashion-mnist/predict" in r.url):
        page.select_option("#model", "fashion-mnist")
    expect(page.locator("#result")).not_to_have_class(re.compile(r"\bbusy\b"))
    assert page.locator("#prediction").inner_text() in FASHION_CLASSES
    expect(page.locator("#bars li")).to_have_count(len(FASHION_CLASSES))


def test_an_uploaded_image_shows_its_preprocessed_input(page: Any, server: str, tmp_path: Path) -> None:
    photo = tmp_path / "seven.png"
    photo.write_bytes(png_bytes(drawn_digit("7", size=400, offset=(80, -40))))
    open_demo(page, server)
    draw(page, ONE)
    page.click("#tab-file")
    expect(page.locator("#panel-file")).to_be_visible()
    expect(page.locator("#canvas")).to_be_hidden()
    expect(page.locator("#prediction")).to_have_text("–")

    with page.expect_response(lambda r: r.url.endswith("/preprocess")):
        page.set_input_files("#file", str(photo))
    expect(page.locator("#result")).not_to_have_class(re.compile(r"\bbusy\b"))
    expect(page.locator("#prediction")).to_have_text("7")
    expect(page.locator("#original")).to_be_visible()
    expect(page.locator("#seen-shape")).to_have_text("28×28")
    assert seen_ink(page) > 10

    page.click("#tab-draw")  # the drawing is still there, and is answered again
    expect(page.locator("#prediction")).to_have_text("1")


def test_an_api_error_is_shown_in_plain_words(page: Any, server: str, tmp_path: Path) -> None:
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("a shopping list, not a digit\n")
    open_demo(page, server)
    page.click("#tab-file")
    page.set_input_files("#file", str(not_an_image))
    expect(page.locator("#error")).to_have_text(
        "The server could not use this input: Not a PNG, JPEG, GIF, BMP or WebP image."
    )
    expect(page.locator("#prediction")).to_have_text("–")


def test_a_401_asks_for_the_access_token_and_the_token_is_sent(page: Any, server: str) -> None:
    open_demo(page, server)
    page.route(
        "**/v1/models/*/predict",
        lambda route: route.fulfill(
            status=401,
            content_type="application/json",
            body='{"error": {"status": 401, "code": "unauthorized", "message": "token required"}}',
        ),
    )
    draw(page, ONE)
    expect(page.locator("#error")).to_contain_text("This server needs an access token")
    page.unroute("**/v1/models/*/predict")

    page.fill("#token", "s3cret")
    with (
        page.expect_request(lambda r: r.url.endswith("/predict")) as sent,
        page.expect_request(lambda r: r.url.endswith("/explain")) as why,
    ):
        page.press("#token", "Enter")  # a change event: the last drawing is sent again
    assert sent.value.headers.get("authorization") == "Bearer s3cret"
    assert why.value.headers.get("authorization") == "Bearer s3cret"  # the heatmap's request too
    expect(page.locator("#prediction")).to_have_text("1")
    expect(page.locator("#error")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('digits-demo-token')") == "s3cret"

    with page.expect_request(lambda r: r.url.endswith("/v1/models")) as listed:
        page.reload()  # the token is kept for the tab's session, and sent with every call
    assert listed.value.headers.get("authorization") == "Bearer s3cret"
    assert page.locator("#token").input_value() == "s3cret"


def test_a_network_failure_says_so(page: Any, server: str) -> None:
    open_demo(page, server)
    page.route("**/v1/models/*/predict", lambda route: route.abort("connectionrefused"))
    box = page.locator("#canvas").bounding_box()
    page.mouse.move(box["x"] + 140, box["y"] + 50)
    page.mouse.down()
    page.mouse.move(box["x"] + 140, box["y"] + 230, steps=10)
    page.mouse.up()
    expect(page.locator("#error")).to_contain_text("Could not reach the server")


def test_the_page_works_under_a_path_prefix_behind_a_proxy(page: Any, proxied: str) -> None:
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    open_demo(page, proxied)
    draw(page, ONE)
    expect(page.locator("#prediction")).to_have_text("1")
    assert {u.split("?")[0] for u in urls} >= {
        proxied,
        proxied + "static/demo/demo.css",
        proxied + "static/demo/demo.js",
        proxied + "v1/models",
        proxied + "v1/models/mnist/predict",
        proxied + "v1/models/mnist/preprocess",
        proxied + "v1/models/mnist/explain",
    }
    origin = proxied.removesuffix(PREFIX + "/")
    # The heatmaps are shown from blob: URLs the page made (blob:http://host:port/<uuid>).
    assert all(u.startswith((proxied, f"blob:{origin}/")) for u in urls), urls


# --- why this digit? -------------------------------------------------------------------------
def test_why_shows_the_heatmap_of_the_answer_then_of_any_class_picked(
    page: Any, server: str, explained: list[Answer]
) -> None:
    open_demo(page, server)
    expect(page.locator("#why")).to_be_hidden()

    with page.expect_response(is_explain):
        draw(page, ONE)
    expect(page.locator("#prediction")).to_have_text("1")
    first = explained[-1]
    assert first.url.endswith("/v1/models/mnist/explain")  # no target: the predicted class
    assert first.headers["x-label"] == first.headers["x-target"] == "1"
    answer = heatmap_of(first)
    assert answer.shape == (HEATMAP_SIDE, HEATMAP_SIDE, 3)
    assert colourful(answer) > 100  # the attributions are drawn, not only the grey input
    expect(page.locator("#why-image")).to_have_attribute("data-target", "1")
    expect(page.locator("#why-caption")).to_have_text("Why 1: the model's answer.")
    expect(page.locator("#why-image")).to_have_attribute("alt", re.compile(r"probability of 1\.$"))
    assert_shows(page, answer)
    buttons = page.locator("#why-classes button")
    expect(buttons).to_have_text(DIGITS)
    expect(page.get_by_role("button", name="Explain 1")).to_have_attribute("aria-pressed", "true")
    first_src = page.locator("#why-image").get_attribute("src")
    assert first_src.startswith("blob:")

    # Another class: its own heatmap, asked for by target, and the page says which it is.
    with page.expect_response(is_explain):
        page.get_by_role("button", name="Explain 7").click()
    other = explained[-1]
    assert other.url.endswith("/v1/models/mnist/explain?target=7")
    assert (other.headers["x-label"], other.headers["x-target"]) == ("1", "7")
    seven = heatmap_of(other)
    assert seven.shape == answer.shape and not np.array_equal(seven, answer)
    expect(page.locator("#why-image")).to_have_attribute("data-target", "7")
    expect(page.locator("#why-caption")).to_have_text("Why (not) 7: the model answered 1.")
    expect(page.get_by_role("button", name="Explain 7")).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_role("button", name="Explain 1")).to_have_attribute("aria-pressed", "false")
    assert page.locator("#why-image").get_attribute("src") != first_src
    assert_shows(page, seven)

    # Back to the answer: shown from the picture already fetched, no new request.
    page.get_by_role("button", name="Explain 1").click()
    expect(page.locator("#why-image")).to_have_attribute("data-target", "1")
    assert page.locator("#why-image").get_attribute("src") == first_src
    assert_shows(page, answer)
    assert len(explained) == 2, [a.url for a in explained]

    # Another model: its heatmap, and its classes to pick from.
    with page.expect_response(lambda r: "/v1/models/fashion-mnist/explain" in r.url):
        page.select_option("#model", "fashion-mnist")
    fashion = explained[-1]
    heatmap_of(fashion)
    expect(buttons).to_have_text(FASHION_CLASSES)
    expect(page.locator("#why-image")).to_have_attribute("data-target", fashion.headers["x-target"])

    page.click("#clear")
    expect(page.locator("#why")).to_be_hidden()
    expect(page.locator("#error")).to_be_hidden()


def test_why_explains_an_uploaded_scan_and_sends_the_class_picked_in_the_form(page: Any, server: str) -> None:
    """examples/digit-7.png (a shipped MNIST test digit, dark ink on paper) as a multipart upload.

    Playwright's routes drop a form's file, so this test does not record the answers on their
    way: the page's picture is compared with the server's answer to the same form."""

    def served(target: int | None) -> Answer:
        fields = {} if target is None else {"target": str(target)}
        with EXAMPLE_SEVEN.open("rb") as file:
            answer = requests.post(
                server + "v1/models/mnist/explain",
                files={"image": (EXAMPLE_SEVEN.name, file, "image/png")},
                data=fields,
                headers={"Accept": "image/png"},
                timeout=30,
            )
        return Answer(answer.url, answer.status_code, dict(answer.headers.lower_items()), answer.content)

    open_demo(page, server)
    page.click("#tab-file")
    with page.expect_response(is_explain) as first:
        page.set_input_files("#file", str(EXAMPLE_SEVEN))
    expect(page.locator("#prediction")).to_have_text("7")
    assert first.value.headers["x-target"] == "7"
    expect(page.locator("#why-image")).to_have_attribute("data-target", "7")
    answer = heatmap_of(served(None))
    assert_shows(page, answer)

    with page.expect_response(is_explain) as picked:
        page.get_by_role("button", name="Explain 3").click()
    # The target went in the form (a query string beside a form body would be refused).
    assert picked.value.url.endswith("/v1/models/mnist/explain")
    assert (picked.value.headers["x-label"], picked.value.headers["x-target"]) == ("7", "3")
    expect(page.locator("#why-caption")).to_have_text("Why (not) 3: the model answered 7.")
    three = heatmap_of(served(3))
    assert not np.array_equal(three, answer)
    assert_shows(page, three)


def test_a_failed_heatmap_is_said_beside_it_and_the_prediction_stays(page: Any, server: str) -> None:
    open_demo(page, server)
    draw(page, ONE)
    expect(page.locator("#why-image")).to_have_attribute("data-target", "1")
    page.route(
        "**/v1/models/*/explain*",
        lambda route: route.fulfill(
            status=422,
            content_type="application/json",
            body='{"error": {"status": 422, "code": "validation_error", "message": "Invalid input.", '
            '"details": {"target": ["Must be a class in [0, 9]."]}}}',
        ),
    )
    page.get_by_role("button", name="Explain 4").click()
    expect(page.locator("#why-caption")).to_have_text(
        "No heatmap for 4: The server could not use this input: Must be a class in [0, 9]."
    )
    expect(page.locator("#why-image")).to_be_hidden()
    expect(page.locator("#prediction")).to_have_text("1")
    expect(page.locator("#error")).to_be_hidden()


# --- corrections: "Wrong? It was:" -----------------------------------------------------------
def test_no_correction_is_offered_when_the_server_keeps_none(page: Any, server: str) -> None:
    open_demo(page, server)
    draw(page, ONE)
    expect(page.locator("#prediction")).to_have_text("1")
    expect(page.locator("#why-image")).to_have_attribute("data-target", "1")
    expect(page.locator("#feedback")).to_be_hidden()


def open_with_token(page: Any, url: str) -> None:
    page.goto(url)
    expect(page.locator("#error")).to_contain_text("This server needs an access token")
    page.fill("#token", FEEDBACK_TOKEN)
    page.press("#token", "Enter")  # the models are listed now
    expect(page.locator("#model")).to_be_enabled()


def stored_records(feedback_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (feedback_dir / "mnist.jsonl").read_text().splitlines()]


def test_a_drawn_digit_is_corrected_and_saved_with_the_token(
    page: Any, feedback_server: tuple[str, Path]
) -> None:
    url, feedback_dir = feedback_server
    open_with_token(page, url)
    with page.expect_request(lambda r: r.url.endswith("/predict")) as predicted:
        draw(page, ONE)
    expect(page.locator("#prediction")).to_have_text("1")
    request_id = predicted.value.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)

    feedback = page.locator("#feedback")
    expect(feedback).to_be_visible()
    expect(page.locator("#feedback-heading")).to_have_text("Wrong? It was:")
    expect(page.locator("#feedback-classes button")).to_have_text(DIGITS)
    expect(page.get_by_role("button", name="It was 1")).to_be_disabled()  # the answer itself

    with page.expect_response(lambda r: "/feedback" in r.url) as sent:
        page.get_by_role("button", name="It was 7").click()
    assert sent.value.status == 201
    assert sent.value.request.headers["authorization"] == f"Bearer {FEEDBACK_TOKEN}"
    assert "/v1/models/mnist/feedback?label=7&predicted=1&request_id=" in sent.value.url
    expect(page.locator("#feedback-status")).to_have_text(
        "Saved as 7: the next training learns from it. Thank you."
    )
    expect(page.get_by_role("button", name="It was 7")).to_have_attribute("aria-pressed", "true")
    [stored] = list((feedback_dir / "mnist" / "7").iterdir())
    with Image.open(stored) as image:  # the canvas as drawn: 280x280, black ink on white
        assert (image.format, image.size) == ("PNG", (280, 280))
    record = stored_records(feedback_dir)[-1]
    assert (record["label"], record["predicted"], record["request_id"]) == ("7", "1", request_id)

    page.get_by_role("button", name="It was 7").click()  # again: stored once
    expect(page.locator("#feedback-status")).to_have_text("Already saved as 7: thank you.")
    assert len(list((feedback_dir / "mnist" / "7").iterdir())) == 1

    page.click("#clear")  # a new drawing: nothing to correct yet
    expect(feedback).to_be_hidden()


def test_an_uploaded_scan_is_corrected_in_the_form_as_the_file_it_was(
    page: Any, feedback_server: tuple[str, Path]
) -> None:
    url, feedback_dir = feedback_server
    open_with_token(page, url)
    page.click("#tab-file")
    page.set_input_files("#file", str(EXAMPLE_SEVEN))
    expect(page.locator("#prediction")).to_have_text("7")
    with page.expect_response(lambda r: "/feedback" in r.url) as sent:
        page.get_by_role("button", name="It was 2").click()
    assert sent.value.status == 201 and sent.value.url.endswith("/v1/models/mnist/feedback")
    expect(page.locator("#feedback-status")).to_contain_text("Saved as 2")
    digest = hashlib.sha256(EXAMPLE_SEVEN.read_bytes()).hexdigest()
    assert (feedback_dir / "mnist" / "2" / f"{digest}.png").read_bytes() == EXAMPLE_SEVEN.read_bytes()


def test_a_refused_correction_is_said_beside_the_buttons(
    page: Any, feedback_server: tuple[str, Path]
) -> None:
    url, _ = feedback_server
    open_with_token(page, url)
    draw(page, ONE)
    page.route(
        "**/feedback*",
        lambda route: route.fulfill(
            status=507,
            content_type="application/json",
            body='{"error": {"status": 507, "code": "feedback_full", '
            '"message": "the feedback store is full"}}',
        ),
    )
    page.get_by_role("button", name="It was 4").click()
    expect(page.locator("#feedback-status")).to_have_text("Not saved: The feedback store is full.")
    expect(page.locator("#prediction")).to_have_text("1")


# --- the API documents: Swagger UI ------------------------------------------------------------
@pytest.mark.parametrize("where", ["root", "prefix"])
def test_swagger_ui_renders_the_document_from_this_server_and_tries_a_call(
    page: Any, server: str, proxied: str, where: str
) -> None:
    """/docs/ is Swagger UI: every script, style and the document load from the server itself
    (also under a path prefix), it lists the operations, and "Try it out" calls the API."""
    base = server if where == "root" else proxied
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    page.goto(base + "docs/")
    expect(page.locator(".opblock").first).to_be_visible()
    assert page.locator(".opblock").count() >= 25  # every operation of the document
    operation = page.locator("#operations-models-list_models")
    operation.locator(".opblock-summary").click()
    operation.locator(".try-out__btn").click()
    with page.expect_response(lambda r: r.url.endswith("/v1/models")) as answer:
        operation.locator(".execute").click()
    assert answer.value.status == 200
    expect(operation.locator(".live-responses-table tbody .response-col_status").first).to_have_text("200")
    assert {u for u in urls if u.endswith((".js", ".css"))} >= {
        base + "docs/swagger-ui-bundle.js",
        base + "docs/swagger-ui-standalone-preset.js",
        base + "docs/swagger-ui.css",
    }
    assert base + "openapi.json" in urls
    assert all(u.startswith(base) or u.startswith("data:") for u in urls), urls
