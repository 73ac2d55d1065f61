"""Triton's own gRPC client (``tritonclient.grpc``) against a server, as its users call it; run
as a script by test_grpc_gunicorn.py, which asserts on the JSON it prints.

A separate process because Triton's and KServe's client packages register the same protobuf
names (``inference.*``) in protobuf's default pool: the two cannot be imported into one process,
and the test session imports KServe.

    python triton_grpc_client.py HOST:PORT TOKEN DIGITS.npz   # DIGITS.npz: pixels (N, 28, 28) uint8
"""

from __future__ import annotations

import io
import json
import sys
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from PIL import Image
from tritonclient.utils import InferenceServerException


def status(call: Any) -> str:
    """The gRPC status code's name of a call that should fail ("OK" if it did not)."""
    try:
        call()
    except InferenceServerException as exc:
        return str(exc.status()).removeprefix("StatusCode.")
    return "OK"


def fp32(x: np.ndarray) -> Any:
    inp = grpcclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x.astype(np.float32))
    return inp


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def main(address: str, token: str, digits_path: str) -> dict[str, Any]:
    pixels = np.load(digits_path)["pixels"]
    n = len(pixels)
    client = grpcclient.InferenceServerClient(address)
    headers = {"authorization": f"Bearer {token}", "x-request-id": "triton-grpc-1"}
    out: dict[str, Any] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready("mnist"),
        "server_metadata": client.get_server_metadata(headers=headers, as_json=True),
        "model_metadata": client.get_model_metadata("mnist", headers=headers, as_json=True),
    }
    flat = fp32(pixels.reshape(n, 784) / 255.0)
    result = client.infer("mnist", [flat], headers=headers, request_id="req-7")
    out["fp32_labels"] = result.as_numpy("label").tolist()
    out["fp32_probabilities_shape"] = list(result.as_numpy("probabilities").shape)
    out["response_id"] = result.get_response().id

    uint8 = grpcclient.InferInput("input", [n, 28, 28], "UINT8")
    uint8.set_data_from_numpy(pixels)
    out["uint8_labels"] = client.infer("mnist", [uint8], headers=headers).as_numpy("label").tolist()

    images = grpcclient.InferInput("input", [4], "BYTES")
    images.set_data_from_numpy(np.array([png(p) for p in pixels[:4]], dtype=np.object_))
    out["png_labels"] = client.infer("mnist", [images], headers=headers).as_numpy("label").tolist()

    top = client.infer(
        "mnist",
        [fp32(pixels[:2].reshape(2, 784) / 255.0)],
        outputs=[grpcclient.InferRequestedOutput("probabilities", class_count=3)],
        headers=headers,
    )
    out["classification"] = [[v.decode() for v in row] for row in top.as_numpy("probabilities")]

    why = client.infer(
        "mnist",
        [fp32(pixels[:2].reshape(2, 784) / 255.0)],
        outputs=[grpcclient.InferRequestedOutput("attributions"), grpcclient.InferRequestedOutput("label")],
        parameters={"method": "gradient", "target": 3},
        headers=headers,
    )
    out["attributions_shape"] = list(why.as_numpy("attributions").shape)
    out["attributions_outputs"] = [o.name for o in why.get_response().outputs]

    short = fp32(np.zeros((1, 783)))
    nan = fp32(np.full((1, 784), np.nan))
    out["errors"] = {
        "no_token": status(lambda: client.infer("mnist", [flat])),
        "wrong_token": status(
            lambda: client.infer("mnist", [flat], headers={"authorization": "Bearer nope"})
        ),
        "unknown_model": status(lambda: client.infer("nope", [flat], headers=headers)),
        "unknown_model_ready": status(lambda: client.get_model_metadata("nope", headers=headers)),
        "783_values": status(lambda: client.infer("mnist", [short], headers=headers)),
        "nan": status(lambda: client.infer("mnist", [nan], headers=headers)),
    }
    try:
        client.infer("mnist", [short], headers=headers)
    except InferenceServerException as exc:
        out["783_message"] = exc.message()
    client.close()
    return out


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])))
