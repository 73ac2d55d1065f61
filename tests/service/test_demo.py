"""The demo page and the preprocess endpoint through the Flask test client.

The page itself is driven in a real Chromium by tests/integration/test_demo_browser.py; here:
that it is served, that every URL in it is relative and resolves at ``/`` and under a WSGI path
prefix, that ``preprocess`` answers with exactly the inputs predict computes, and that explain
answers the page's two ways of asking for a class's heatmap.
"""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser
from importlib import resources
from urllib.parse import urljoin, urlsplit

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from service_testkit import drawn_digit, png_bytes
from werkzeug.exceptions import NotFound
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client, TestResponse

from service import images
from service.demo import PreprocessResponseSchema

PREFIX = "/some/prefix"
STATIC = resources.files("service").joinpath("static/demo")


class _Links(HTMLParser):
    """Every ``src`` and ``href`` in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def page_links(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return parser.urls


def api_paths() -> list[str]:
    """The paths demo.js passes to its ``api()`` and ``apiPicture()`` helpers (string literals,
    before any name)."""
    return re.findall(r'\bapi(?:Picture)?\("([^"]*)"', STATIC.joinpath("demo.js").read_text())


@pytest.fixture
def png() -> bytes:
    return png_bytes(drawn_digit("7", size=280))


# --- the page ---------------------------------------------------------------------------------
def test_page_is_served_with_a_policy_that_allows_only_this_server(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert "<canvas" in response.get_data(as_text=True)
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    assert "script-src" not in policy  # so no inline or remote script is allowed either


def test_page_and_scripts_use_only_relative_urls(client: FlaskClient) -> None:
    links = page_links(client.get("/").get_data(as_text=True))
    assert {"static/demo/demo.js", "static/demo/demo.css", "docs/", "openapi.json"} <= set(links)
    for url in links + api_paths():
        assert not urlsplit(url).scheme and not url.startswith("/"), url
    for name in ("index.html", "demo.js", "demo.css"):
        assert not re.search(r"(https?:)?//[a-z]", STATIC.joinpath(name).read_text()), name
    assert set(api_paths()) == {"v1/models", "v1/models/"}


@pytest.mark.parametrize("base", ["/", f"{PREFIX}/"], ids=["root", "prefix"])
def test_every_url_of_the_page_resolves(app: Flask, base: str, png: bytes) -> None:
    """At / and with the app mounted under a prefix (SCRIPT_NAME), as a WSGI server does it."""
    wsgi = DispatcherMiddleware(NotFound(), {PREFIX: app}) if base != "/" else app
    client = Client(wsgi, use_cookies=False)
    page = client.get(base, buffered=True)
    assert page.status_code == 200
    for link in page_links(page.get_data(as_text=True)):
        response = client.get(urljoin(base, link), buffered=True)  # buffered: closes files
        assert response.status_code == 200, link
    assert client.get(urljoin(base, "v1/models")).get_json()["default_model"] == "mnist"
    for action in ("predict", "preprocess", "explain"):
        response = client.post(
            urljoin(base, f"v1/models/mnist/{action}"),
            data=png,
            content_type="image/png",
            headers={"Accept": "image/png" if action == "explain" else "application/json"},
        )
        assert response.status_code == 200, response.get_data(as_text=True)


# --- why: the heatmaps the page shows ----------------------------------------------------------
def heatmap(response: TestResponse) -> Image.Image:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "image/png"
    image = Image.open(io.BytesIO(response.get_data()))
    assert (image.format, image.size) == ("PNG", (280, 280))
    return image


def test_the_page_may_show_heatmaps_from_its_own_blobs(client: FlaskClient) -> None:
    """demo.js shows each heatmap from a blob: URL of the fetched PNG."""
    policy = client.get("/").headers["Content-Security-Policy"]
    img_src = next(d for d in policy.split(";") if d.strip().startswith("img-src")).split()
    assert "blob:" in img_src
    assert 'apiPicture("v1/models/" + name + "/explain"' in STATIC.joinpath("demo.js").read_text()


def test_explain_answers_both_ways_the_page_asks_for_a_class(client: FlaskClient, png: bytes) -> None:
    """A drawing is a raw PNG body with ``?target=N``; a chosen file is a form with a ``target``
    field. Both give the same heatmap of the same class, and without a target, the answer's."""
    accept = {"Accept": "image/png"}
    answer = client.post("/v1/models/mnist/explain", data=png, content_type="image/png", headers=accept)
    label = answer.headers["X-Label"]
    assert answer.headers["X-Target"] == label
    other = (int(label) + 1) % 10
    raw = client.post(
        f"/v1/models/mnist/explain?target={other}", data=png, content_type="image/png", headers=accept
    )
    form = client.post(
        "/v1/models/mnist/explain",
        data={"image": (io.BytesIO(png), "seven.png"), "target": str(other)},
        headers=accept,
    )
    for response in (raw, form):
        assert (response.headers["X-Label"], response.headers["X-Target"]) == (label, str(other))
        assert response.headers["X-Method"] == "integrated_gradients"
    assert raw.get_data() == form.get_data()
    assert np.asarray(heatmap(raw)).tolist() != np.asarray(heatmap(answer)).tolist()


def test_the_prefix_without_its_slash_redirects_to_the_page(app: Flask) -> None:
    """``/prefix`` would resolve the page's relative URLs against ``/``: send it to ``/prefix/``."""
    client = Client(DispatcherMiddleware(NotFound(), {PREFIX: app}))
    response = client.get(PREFIX)
    assert response.status_code == 308
    assert response.headers["Location"].endswith(f"{PREFIX}/")


# --- preprocess -------------------------------------------------------------------------------
@pytest.mark.parametrize("preprocess", [True, False])
def test_preprocess_answers_the_inputs_that_predict_computes(
    client: FlaskClient, png: bytes, preprocess: bool
) -> None:
    query = "" if preprocess else "?preprocess=false"
    response = client.post(f"/v1/models/mnist/preprocess{query}", data=png, content_type="image/png")
    assert response.status_code == 200
    body = response.get_json()
    assert PreprocessResponseSchema().validate(body) == {}
    assert (body["model"], body["shape"]) == ("mnist", [28, 28])
    inputs = np.asarray(body["inputs"], dtype=np.float32)
    assert inputs.shape == (1, 28, 28)
    expected = images.load_image(png, (28, 28), "mnist", preprocess=preprocess)
    np.testing.assert_array_equal(inputs[0], expected)

    # Sent back as numbers, they give exactly the prediction the image gave.
    from_image = client.post(
        f"/v1/models/mnist/predict{query}", data=png, content_type="image/png"
    ).get_json()
    from_inputs = client.post("/v1/models/mnist/predict", json={"inputs": body["inputs"]}).get_json()
    assert from_inputs["predictions"] == from_image["predictions"]


def test_preprocess_takes_every_form_predict_takes(client: FlaskClient, png: bytes) -> None:
    as_file = client.post("/v1/models/mnist/preprocess", data={"image": (io.BytesIO(png), "seven.png")})
    as_json = client.post(
        "/v1/models/mnist/preprocess",
        json={
            "images": ["data:image/png;base64," + base64.b64encode(png).decode()] * 2,
        },
    )
    numbers = client.post(
        "/v1/models/mnist/preprocess", json={"inputs": [[255] * 784], "pixel_range": "0-255"}
    )
    assert [r.status_code for r in (as_file, as_json, numbers)] == [200, 200, 200]
    assert as_json.get_json()["inputs"] == as_file.get_json()["inputs"] * 2
    assert np.asarray(numbers.get_json()["inputs"]).shape == (1, 28, 28)
    assert np.all(np.asarray(numbers.get_json()["inputs"]) == 1.0)


def test_preprocess_without_a_name_uses_the_default_model(client: FlaskClient, png: bytes) -> None:
    response = client.post("/preprocess", data=png, content_type="image/png")
    assert response.status_code == 200
    assert response.get_json()["model"] == "mnist"


def test_preprocess_follows_the_models_image_style(client: FlaskClient) -> None:
    """Fashion-MNIST fits the item to the whole field, MNIST to a 20x20 box."""
    square = png_bytes(drawn_digit("0", size=200))
    fields = {
        name: np.asarray(
            client.post(f"/v1/models/{name}/preprocess", data=square, content_type="image/png").get_json()[
                "inputs"
            ][0]
        )
        for name in ("mnist", "fashion-mnist")
    }
    rows = {name: np.flatnonzero(field.max(axis=1) > 0) for name, field in fields.items()}
    assert len(rows["fashion-mnist"]) > len(rows["mnist"])


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "code"),
    [
        (
            "/v1/models/mnist/preprocess",
            {"data": b"not an image", "content_type": "image/png"},
            422,
            "validation_error",
        ),
        ("/v1/models/nope/preprocess", {"json": {"inputs": [[0.0] * 784]}}, 404, "model_not_found"),
        (
            "/v1/models/mnist/preprocess",
            {"data": b"x", "content_type": "text/plain"},
            415,
            "unsupported_media_type",
        ),
        ("/v1/models/mnist/preprocess", {"json": {"inputs": [[0.0] * 10]}}, 422, "validation_error"),
    ],
    ids=["not-an-image", "unknown-model", "bad-content-type", "bad-shape"],
)
def test_preprocess_errors_have_the_one_error_shape(
    client: FlaskClient, path: str, kwargs: dict[str, object], status: int, code: str
) -> None:
    response = client.post(path, **kwargs)
    body = response.get_json()
    assert (response.status_code, body["error"]["code"]) == (status, code)
    assert set(body) == {"error"} and body["error"]["message"]


def test_preprocess_is_in_the_openapi_document(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    for path in ("/v1/models/{name}/preprocess", "/preprocess"):
        operation = spec["paths"][path]["post"]
        assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/PreprocessResponse"
        }
        assert "image/png" in operation["requestBody"]["content"]
    schema = spec["components"]["schemas"]["PreprocessResponse"]
    assert set(schema["required"]) == {"model", "version", "shape", "inputs"}
