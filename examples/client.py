"""Calling digits-serving from another Python service, three ways.

    python examples/client.py examples/digit-*.png
    python examples/client.py --url http://127.0.0.1:8000 --token "$AUTH_TOKEN" --explain examples/digit-7.png

For each image, one line per protocol: the image, the protocol, the class, its probability.

* ``v1``: this service's REST API with ``requests``: the image file as the request body
  (``POST /v1/models/NAME/predict``); the server decodes and preprocesses it as MNIST was made.
* ``tfserving``: TF Serving's REST protocol (KServe's V1) with ``requests``: every image in
  one request, as ``{"instances": [{"b64": "<base64 PNG>"}, ...]}`` (``POST /v1/models/NAME:predict``);
  the same server-side preprocessing.
* ``v2``: the Open Inference Protocol with Triton's client (``pip install 'tritonclient[http]'``,
  imported only when v2 is asked for). v2 takes tensors, not image files, so the client makes
  each 28x28 itself (``mnist_pixels``: a simple version of MNIST's preprocessing for one dark
  digit on light paper) and sends them as one UINT8 ``[N, 28, 28]`` batch.

``--explain`` adds, per image, the pixels that raised the predicted class's probability most,
from ``POST /v1/models/NAME/explain`` (integrated gradients; ``-H 'Accept: image/png'`` on that
call gives the heatmap as a picture instead).

Needs numpy, Pillow and requests, and tritonclient for v2: `make test` installs them all
(`make serve` alone installs the serving set, which has no requests).
"""

from __future__ import annotations

import argparse
import base64
import mimetypes
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import requests
from PIL import Image

PROTOCOLS = ("v1", "tfserving", "v2")
TIMEOUT = 30  # seconds per request
#: MNIST fits each digit into a 20x20 box of its 28x28 field, centred by its centre of mass.
SIDE, BOX = 28, 20
TOP_PIXELS = 5

Prediction = tuple[str, float]  # (class name, its probability)


class ServiceError(Exception):
    """The service answered with an error, or could not be reached."""


# --- v1 REST and TF Serving's instances, with requests -----------------------------------------
def session(token: str | None) -> requests.Session:
    s = requests.Session()
    if token:
        s.headers["Authorization"] = f"Bearer {token}"
    return s


def post(http: requests.Session, url: str, **kwargs: Any) -> Any:
    """POST and return the JSON answer; the service's own error message if it refuses."""
    try:
        response = http.post(url, timeout=TIMEOUT, **kwargs)
    except requests.RequestException as exc:
        raise ServiceError(f"could not reach {url}: {exc}") from None
    body = response.json() if "json" in response.headers.get("Content-Type", "") else None
    if not response.ok:
        error = body.get("error") if isinstance(body, dict) else None
        message = error.get("message") if isinstance(error, dict) else error  # v1 | TF Serving
        raise ServiceError(f"{url}: HTTP {response.status_code}: {message or response.reason}")
    return body


def predict_v1(http: requests.Session, url: str, model: str, paths: Sequence[Path]) -> list[Prediction]:
    """One request per image, the file's bytes as the body."""
    answers = []
    for path in paths:
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        body = post(
            http,
            f"{url}/v1/models/{model}/predict",
            data=path.read_bytes(),
            headers={"Content-Type": content_type},
        )
        row = body["predictions"][0]
        answers.append((row["class_name"], row["probabilities"][row["label"]]))
    return answers


def predict_tfserving(
    http: requests.Session, url: str, model: str, paths: Sequence[Path]
) -> list[Prediction]:
    """All images in one request, each as TF Serving's ``{"b64": ...}``."""
    instances = [{"b64": base64.b64encode(path.read_bytes()).decode("ascii")} for path in paths]
    body = post(http, f"{url}/v1/models/{model}:predict", json={"instances": instances})
    return [(row["class_name"], row["probabilities"][row["label"]]) for row in body["predictions"]]


def explain_v1(http: requests.Session, url: str, model: str, path: Path) -> dict[str, Any]:
    """The explanation of the predicted class, from a multipart upload."""
    with path.open("rb") as file:
        body = post(http, f"{url}/v1/models/{model}/explain", files={"image": (path.name, file)})
    return body["explanations"][0]


# --- v2 (Open Inference Protocol), with Triton's client ----------------------------------------
def mnist_pixels(path: Path) -> np.ndarray:
    """An image of one dark digit on light paper -> (28, 28) uint8, white ink on black.

    MNIST's recipe, simply: invert, take away the paper's level, crop to the ink, fit into 20x20
    keeping the aspect ratio, and put its centre of mass at the centre of the 28x28 field.
    """
    try:
        with Image.open(path) as image:
            gray = np.asarray(image.convert("L"), dtype=np.float32)
    except OSError as exc:
        raise ServiceError(f"{path}: not an image Pillow can read ({exc})") from None
    ink = 255 - gray
    ink = np.clip(ink - np.median(ink), 0, None)  # the paper (most of the image) becomes 0
    rows, cols = np.nonzero(ink > 0.2 * ink.max())
    if not rows.size:
        raise ServiceError(f"{path}: no ink to send over v2 (a blank image)")
    ink = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    scale = BOX / max(ink.shape)
    h, w = max(1, round(ink.shape[0] * scale)), max(1, round(ink.shape[1] * scale))
    box = np.array(Image.fromarray(ink).resize((w, h), Image.Resampling.BOX), dtype=np.float32)
    box *= 255 / box.max()
    cy, cx = (np.indices(box.shape) * box).reshape(2, -1).sum(axis=1) / box.sum()
    top = int(np.clip(round(SIDE / 2 - cy), 0, SIDE - h))
    left = int(np.clip(round(SIDE / 2 - cx), 0, SIDE - w))
    field = np.zeros((SIDE, SIDE), dtype=np.float32)
    field[top : top + h, left : left + w] = box
    return np.rint(field).astype(np.uint8)


def triton_client() -> Any:
    try:
        import tritonclient.http as httpclient
    except ImportError:
        raise ServiceError(
            "v2 needs Triton's client: pip install 'tritonclient[http]' (or leave v2 out: --protocol v1 "
            "--protocol tfserving)"
        ) from None
    return httpclient


def predict_v2(url: str, token: str | None, model: str, paths: Sequence[Path]) -> list[Prediction]:
    """All images in one UINT8 [N, 28, 28] tensor, sent as binary data (the client's default)."""
    httpclient = triton_client()
    from tritonclient.utils import InferenceServerException

    parts = urlsplit(url)
    client = httpclient.InferenceServerClient(parts.netloc, ssl=parts.scheme == "https")
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        pixels = np.stack([mnist_pixels(path) for path in paths])
        tensor = httpclient.InferInput("input", list(pixels.shape), "UINT8")
        tensor.set_data_from_numpy(pixels)
        outputs = [httpclient.InferRequestedOutput(name) for name in ("label", "probabilities")]
        result = client.infer(model, [tensor], outputs=outputs, headers=headers)
        metadata = client.get_model_metadata(model, headers=headers)
    except InferenceServerException as exc:
        raise ServiceError(f"{url}: v2: {exc.message()}") from None
    finally:
        client.close()
    label_output = next(o for o in metadata["outputs"] if o["name"] == "label")
    names = label_output["parameters"]["class_names"]
    labels, probabilities = result.as_numpy("label"), result.as_numpy("probabilities")
    return [(names[label], float(p[label])) for label, p in zip(labels.tolist(), probabilities, strict=True)]


# --- the command -------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Classify digit images with digits-serving, three ways.")
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="PNG, JPEG, ... files")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the service (default: %(default)s)")
    parser.add_argument("--token", help="the bearer token, if the service needs one")
    parser.add_argument("--model", default="mnist", help="the model's name (default: %(default)s)")
    parser.add_argument(
        "--protocol",
        action="append",
        choices=PROTOCOLS,
        help="one protocol (repeat for several; default: all three)",
    )
    parser.add_argument("--explain", action="store_true", help="also print the pixels that mattered most")
    args = parser.parse_args(argv)
    url = args.url.rstrip("/")
    protocols = args.protocol or list(PROTOCOLS)
    missing = [str(path) for path in args.images if not path.is_file()]
    if missing:
        print(f"error: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2

    http = session(args.token)
    calls: dict[str, Callable[[], list[Prediction]]] = {
        "v1": lambda: predict_v1(http, url, args.model, args.images),
        "tfserving": lambda: predict_tfserving(http, url, args.model, args.images),
        "v2": lambda: predict_v2(url, args.token, args.model, args.images),
    }
    try:
        answers = {protocol: calls[protocol]() for protocol in protocols}
        width = max(len(str(path)) for path in args.images)
        for i, path in enumerate(args.images):
            for protocol in protocols:
                name, p = answers[protocol][i]
                print(f"{str(path):<{width}}  {protocol:<9}  {name}  ({p:.2%})")
            if args.explain:
                print_explanation(explain_v1(http, url, args.model, path))
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def print_explanation(explanation: dict[str, Any]) -> None:
    """The pixels (row, column of the 28x28 the model saw) that raised the class's probability most."""
    attributions = np.asarray(explanation["attributions"])
    top = np.argsort(attributions, axis=None)[::-1][:TOP_PIXELS]
    rows, cols = np.unravel_index(top, attributions.shape)
    pixels = ", ".join(f"({r},{c}) {attributions[r, c]:+.3f}" for r, c in zip(rows, cols, strict=True))
    name = explanation["target_name"]
    method = explanation["method"]
    print(f"  why {name} ({method}): the pixels (row,col) that raised p({name}) most: {pixels}")


if __name__ == "__main__":
    sys.exit(main())
