"""The Open Inference Protocol ("KServe V2") itself, shared by its two transports: REST
(``service.v2``) and gRPC (``service.grpc_v2``).

What a model's tensors are called and which datatypes they take, what the server says about
itself and a model (the same metadata over both), how the data plane's refusals read in this
protocol, and the classification extension's top-k strings. Each transport decodes its own
request and encodes its own answer around these.
"""

from __future__ import annotations

import struct
from importlib import metadata
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service import dataplane
from service.state import Endpoint

SERVER_NAME = "digits-serving"
#: The protocol's extensions this server implements (Triton's names for them).
EXTENSIONS = ("binary_tensor_data", "classification")
#: The model metadata's "platform": what runs the model.
PLATFORM = "numpy_twolayernet"
INPUT_NAME = "input"
PROBABILITIES = "probabilities"
LABEL = "label"
#: Asked for by name only: the attributions of each input value to a class's probability.
ATTRIBUTIONS = "attributions"
OUTPUT_NAMES = (PROBABILITIES, LABEL, ATTRIBUTIONS)
#: The outputs sent when the request names none.
DEFAULT_OUTPUTS = (PROBABILITIES, LABEL)
#: Request parameters that say what ``attributions`` explains.
EXPLAIN_PARAMETERS = ("method", "target", "steps")

#: Every datatype the protocol defines; the input takes the floating and integer ones.
DATATYPES = (
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BF16",
    "BYTES",
)
#: Floating datatypes: values in [0, 1], as the models were trained.
FLOAT_DTYPES: dict[str, np.dtype[Any]] = {
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
#: Integer datatypes: pixel values 0-255, divided by 255 (exactly what training did).
INTEGER_DTYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(f"<{kind}{size}")
    for name, kind, size in (
        ("UINT8", "u", 1),
        ("UINT16", "u", 2),
        ("UINT32", "u", 4),
        ("UINT64", "u", 8),
        ("INT8", "i", 1),
        ("INT16", "i", 2),
        ("INT32", "i", 4),
        ("INT64", "i", 8),
    )
}
SUPPORTED = "FP32, FP16 or FP64 values in [0, 1], or UINT8 (or another integer type) pixel values 0-255"

#: How the data plane's refusals read in this protocol (``{datatype}``: the input's).
MESSAGES = {
    "shape": "shape {got} does not fit the model, which takes {accepted_shapes} (a batch of inputs)",
    "empty": "the batch is empty",
    "too_many": "at most {max} inputs per request, got {n}",
    "count": "shape {shape} holds {count} values, data has {got}",
    "numbers": "data must be numbers (a flat or nested list), without strings, booleans or nulls",
    "finite": "values must be finite (no NaN or infinity)",
    "range": "{datatype} values must be in [0, 1]; send 0-255 pixel values as UINT8",
    "whole": "{datatype} values must be whole pixel values in [0, {top:g}]",
    # BYTES elements holding image files (gRPC)
    "image": "element {index}: {problem}",
    "not_images": "this model does not take images",
    # the parameters of the attributions output (prefixed with "parameters.")
    "method": "method must be one of: {methods}; got {got!r}",
    "target": "target must be a class in [0, {top}], or a list of one per input",
    "targets": "target: got {got} classes for {n} inputs: send one class for all, or one per input",
    "steps": "steps must be an integer in [1, {max}]",
    "steps_unused": "steps applies to the integrated_gradients method only",
    "explain_rows": "steps: inputs x steps must be at most {max}, got {n} x {steps}",
}


def _server_version() -> str:
    try:
        return metadata.version(SERVER_NAME)
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "0"


SERVER_VERSION = _server_version()


def model_metadata(endpoint: Endpoint, versions: list[str]) -> dict[str, Any]:
    """``$metadata_model_response``: the model's versions, its input and its outputs."""
    model = endpoint.model
    spec = endpoint.spec
    return {
        "name": model.name,
        "versions": versions,
        "platform": PLATFORM,
        "inputs": [
            {
                "name": INPUT_NAME,
                "datatype": "FP32",
                "shape": [-1, model.input_size],
                "parameters": {
                    "datatypes": [*FLOAT_DTYPES, *INTEGER_DTYPES],
                    "shapes": [[-1, *shape] for shape in spec.accepted_shapes],
                    "values": "FP16/FP32/FP64 in [0, 1]; integer types 0-255, divided by 255",
                },
            }
        ],
        "outputs": [
            {"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, model.num_classes]},
            {
                "name": LABEL,
                "datatype": "INT64",
                "shape": [-1],
                "parameters": {"class_names": list(model.class_names)},
            },
            {
                "name": ATTRIBUTIONS,
                "datatype": "FP32",
                "shape": [-1, model.input_size],
                "parameters": {
                    "sent": "only when outputs names it",
                    "methods": list(dataplane.EXPLAIN_METHODS),
                    "request_parameters": {
                        "method": f"default {dataplane.DEFAULT_EXPLAIN_METHOD}",
                        "target": "a class, or one per input; default the predicted one",
                        "steps": f"integrated_gradients: 1 to {dataplane.MAX_EXPLAIN_STEPS}, "
                        f"default {dataplane.DEFAULT_EXPLAIN_STEPS}",
                    },
                },
            },
        ],
    }


def top_classes(probabilities: NDArray[np.float32], top: int, class_names: tuple[str, ...]) -> list[str]:
    """Per input, its ``top`` likeliest classes, likeliest first, as Triton writes them."""
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top]
    return [
        f"{row[i]:f}:{i}:{class_names[i]}"
        for row, indices in zip(probabilities.tolist(), order.tolist(), strict=True)
        for i in indices
    ]


def bytes_tensor(values: list[str] | list[bytes]) -> bytes:
    """BYTES elements in binary form: each a 4-byte little-endian length and its bytes."""
    encoded = [value.encode() if isinstance(value, str) else value for value in values]
    return b"".join(struct.pack("<I", len(item)) + item for item in encoded)


def bytes_elements(raw: bytes | memoryview) -> list[bytes]:
    """BYTES elements from their binary form (``bytes_tensor``); ``ValueError`` if malformed."""
    view = memoryview(raw)
    elements = []
    at = 0
    while at < len(view):
        if at + 4 > len(view):
            raise ValueError(f"a BYTES element's 4-byte length is cut short at byte {at}")
        (length,) = struct.unpack_from("<I", view, at)
        at += 4
        if at + length > len(view):
            raise ValueError(f"a BYTES element at byte {at - 4} says {length} bytes; {len(view) - at} remain")
        elements.append(bytes(view[at : at + length]))
        at += length
    return elements
