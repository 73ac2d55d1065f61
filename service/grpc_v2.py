"""The Open Inference Protocol ("KServe V2") over gRPC: ``inference.GRPCInferenceService``, so
Triton's ``tritonclient.grpc``, KServe's ``InferenceGRPCClient`` and grpcurl call this service
unchanged.

An adapter over the data plane like ``service.v2`` (REST), and nothing else: it decodes a
protobuf request into the data plane's terms and encodes the answer. The rules for what an
input may be, the forward pass, the explanations and the prediction counts are
``service.dataplane``'s; the protocol's names, metadata and wording are ``service.oip``'s, shared
with REST; the models are the worker's ``ServiceState`` (``service.state``), read once per RPC, so
hot reload needs nothing here. What every RPC shares (auth, request id, metrics, logs, status
codes) is ``service.grpc_server``'s.

Input ``input``, as over REST: FP32 (or FP16, FP64) ``[N, 784]`` or ``[N, 28, 28]`` in [0, 1], or
UINT8 (or another integer type) pixels 0-255, as typed ``contents`` or as ``raw_input_contents``
(little-endian bytes: what Triton's client sends). Over gRPC also BYTES ``[N]`` (or ``[N, 1]``):
each element an image file (PNG, JPEG, ...) preprocessed like an upload (input parameter
``preprocess``: false takes an MNIST-like 28x28 image as it is). Outputs as over REST:
``probabilities``, ``label``, and ``attributions`` when asked for (request parameters
``method``, ``target``, ``steps``); ``classification: k`` on ``probabilities`` sends the top k as
``"<probability>:<index>:<class name>"`` BYTES. Outputs are always sent as
``raw_output_contents``, as Triton's server does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service import dataplane, oip
from service.dataplane import InputSpec
from service.errors import APIError
from service.proto import open_inference_pb2 as pb
from service.state import Endpoint, ServiceState

#: Which field of ``InferTensorContents`` holds each datatype's values (the protocol's table).
CONTENTS_FIELD = {
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "BYTES": "bytes_contents",
}


class BadRequest(APIError):
    """INVALID_ARGUMENT: the request does not fit the protocol or the model."""


def parameter(p: Any) -> Any:
    """An ``InferParameter``'s value (None if it has none)."""
    which = p.WhichOneof("parameter_choice")
    return None if which is None else getattr(p, which)


# --- the RPCs -----------------------------------------------------------------------------
# Each takes the state the worker serves now and the request; returns the response or raises
# an ``APIError`` (``ModelNotFound``: NOT_FOUND; ``BadRequest``: INVALID_ARGUMENT; 413s:
# RESOURCE_EXHAUSTED), which ``service.grpc_server`` turns into the RPC's status.


def server_live(state: ServiceState, request: Any) -> Any:
    return pb.ServerLiveResponse(live=True)


def server_ready(state: ServiceState, request: Any) -> Any:
    return pb.ServerReadyResponse(ready=state.ready)


def model_ready(state: ServiceState, request: Any) -> Any:
    """Ready once in the registry (loaded and validated before that); NOT_FOUND otherwise, as
    over REST."""
    lookup(state, request.name, request.version)
    return pb.ModelReadyResponse(ready=True)


def server_metadata(state: ServiceState, request: Any) -> Any:
    return pb.ServerMetadataResponse(
        name=oip.SERVER_NAME, version=oip.SERVER_VERSION, extensions=oip.EXTENSIONS
    )


def model_metadata(state: ServiceState, request: Any) -> Any:
    """The REST metadata's names, datatypes and shapes (gRPC's TensorMetadata has no parameters)."""
    endpoint = lookup(state, request.name, request.version)
    doc = oip.model_metadata(endpoint, state.versions(endpoint.model.name))
    tensor = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name=doc["name"],
        versions=doc["versions"],
        platform=doc["platform"],
        inputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in doc["inputs"]],
        outputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in doc["outputs"]],
    )


def model_infer(state: ServiceState, request: Any) -> Any:
    endpoint = lookup(state, request.model_name, request.model_version)
    x = input_batch(request, endpoint.spec)
    outputs = requested_outputs(request, endpoint.model.num_classes)
    options = explain_options(request, outputs, len(x), endpoint.spec)
    if options is None:
        return infer_response(endpoint, request.id, outputs, dataplane.infer(endpoint.model, x))
    explanation = dataplane.explain(endpoint.model, x, *options)
    return infer_response(endpoint, request.id, outputs, explanation.inference, explanation.attributions)


#: Method name -> (handler, request message, response message, open to callers without a token).
RPCS: dict[str, tuple[Callable[[ServiceState, Any], Any], Any, Any, bool]] = {
    "ServerLive": (server_live, pb.ServerLiveRequest, pb.ServerLiveResponse, True),
    "ServerReady": (server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse, True),
    "ModelReady": (model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse, True),
    "ServerMetadata": (server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse, False),
    "ModelMetadata": (model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse, False),
    "ModelInfer": (model_infer, pb.ModelInferRequest, pb.ModelInferResponse, False),
}


def lookup(state: ServiceState, name: str, version: str) -> Endpoint:
    """The endpoint serving ``name`` at ``version`` (empty: the newest); NOT_FOUND names what
    exists. An empty name is not the default model here: the protocol always names one."""
    if not name:
        raise BadRequest("model_name is empty: name a model (ModelMetadata lists its inputs)")
    return state.lookup(name, version or None)


# --- the request --------------------------------------------------------------------------
def input_batch(request: Any, spec: InputSpec) -> NDArray[np.float32]:
    """The batch (N, D) float32 in [0, 1] that the request's input holds; INVALID_ARGUMENT with
    why if it does not fit the model (datatype, shape, batch size, element count, values)."""
    inputs = request.inputs
    if len(inputs) != 1:
        raise BadRequest(f"the model takes one input, {oip.INPUT_NAME!r}; got {len(inputs)}")
    tensor = inputs[0]
    name = tensor.name
    if name != oip.INPUT_NAME:
        raise BadRequest(f"unexpected input {name!r}: the model's input is {oip.INPUT_NAME!r}")
    raw_inputs = request.raw_input_contents
    if len(raw_inputs) > 1:
        raise BadRequest(f"raw_input_contents has {len(raw_inputs)} entries for 1 input")
    raw = raw_inputs[0] if raw_inputs else None
    if raw is not None and tensor.HasField("contents"):
        raise BadRequest(f"input {name!r}: send contents or raw_input_contents, not both")
    datatype = tensor.datatype
    shape = list(tensor.shape)
    try:
        if datatype == "BYTES":
            return _image_batch(tensor, shape, spec, raw)
        dtype = oip.FLOAT_DTYPES.get(datatype) or oip.INTEGER_DTYPES.get(datatype)
        if dtype is None:
            raise BadRequest(
                f"input {name!r}: datatype {datatype or '(none)'} is not supported; send {oip.SUPPORTED}, "
                "or BYTES image files"
            )
        if any(dim < 0 for dim in shape):
            raise BadRequest(f"input {name!r}: shape {shape} has a negative dimension")
        dataplane.check_tensor_shape(shape, spec)
        count = math.prod(shape)
        if raw is not None:
            if len(raw) != count * dtype.itemsize:
                raise BadRequest(
                    f"input {name!r}: {datatype} {shape} is {count * dtype.itemsize} bytes; "
                    f"raw_input_contents has {len(raw)}"
                )
            flat = np.frombuffer(raw, dtype=dtype)
        else:
            field = CONTENTS_FIELD.get(datatype)
            if field is None:  # FP16: no typed field in the protocol
                raise BadRequest(f"input {name!r}: {datatype} travels in raw_input_contents only")
            flat = np.asarray(getattr(tensor.contents, field), dtype=dtype)
        values = dataplane.tensor_array(shape, flat)
        integers = datatype in oip.INTEGER_DTYPES
        return dataplane.model_input(
            values, spec, top=dataplane.PIXEL_MAX if integers else 1.0, whole=integers, shape_checked=True
        )
    except dataplane.InputError as exc:
        raise BadRequest(f"input {name!r}: " + exc.message(oip.MESSAGES, datatype=datatype)) from None


def _image_batch(tensor: Any, shape: list[int], spec: InputSpec, raw: bytes | None) -> NDArray[np.float32]:
    """BYTES elements holding image files -> the model's batch, preprocessed like uploads."""
    name = tensor.name
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or any(dim < 0 for dim in shape):
        raise BadRequest(
            f"input {name!r}: BYTES shape must be [N] or [N, 1] (one image file each), got {shape}"
        )
    if raw is not None:
        try:
            files: Sequence[bytes] = oip.bytes_elements(raw)
        except ValueError as exc:
            raise BadRequest(f"input {name!r}: raw_input_contents: {exc}") from None
    else:
        files = tensor.contents.bytes_contents
    if len(files) != shape[0]:
        raise BadRequest(f"input {name!r}: shape {shape} holds {shape[0]} image files, got {len(files)}")
    preprocess = parameter(tensor.parameters["preprocess"]) if "preprocess" in tensor.parameters else True
    if not isinstance(preprocess, bool):
        raise BadRequest(f"input {name!r}: parameter preprocess must be a bool")
    return dataplane.batch_from_images(list(files), spec, preprocess)


def requested_outputs(request: Any, num_classes: int) -> list[tuple[str, int]]:
    """(name, top k or 0) for each output to send, in the order asked for."""
    asked = request.outputs
    if not asked:
        return [(name, 0) for name in oip.DEFAULT_OUTPUTS]
    outputs: list[tuple[str, int]] = []
    for output in asked:
        name = output.name
        if name not in oip.OUTPUT_NAMES:
            raise BadRequest(
                f"unknown output {name!r}: the model's outputs are {', '.join(oip.OUTPUT_NAMES)}"
            )
        if any(name == seen for seen, _ in outputs):
            raise BadRequest(f"output {name!r} is asked for twice")
        top = parameter(output.parameters["classification"]) if "classification" in output.parameters else 0
        if isinstance(top, bool) or not isinstance(top, int) or top < 0:
            raise BadRequest(f"output {name!r}: classification must be a non-negative integer")
        if top and name != oip.PROBABILITIES:
            raise BadRequest(f"output {name!r}: classification applies to {oip.PROBABILITIES!r} only")
        outputs.append((name, min(top, num_classes)))
    return outputs


def explain_options(
    request: Any, outputs: list[tuple[str, int]], n: int, spec: InputSpec
) -> tuple[str, NDArray[np.intp] | None, int | None] | None:
    """What ``attributions`` explains, from the request's parameters; None if not asked for."""
    parameters = request.parameters
    given = [name for name in oip.EXPLAIN_PARAMETERS if name in parameters]
    if not any(name == oip.ATTRIBUTIONS for name, _ in outputs):
        if given:
            raise BadRequest(
                f"parameters.{', parameters.'.join(given)}: for the {oip.ATTRIBUTIONS!r} output only; "
                "ask for it in 'outputs'"
            )
        return None
    values = [parameter(parameters[name]) if name in parameters else None for name in oip.EXPLAIN_PARAMETERS]
    try:
        return dataplane.explain_options(n, spec, *values)
    except dataplane.InputError as exc:
        raise BadRequest("parameters." + exc.message(oip.MESSAGES, datatype="")) from None


# --- the response -------------------------------------------------------------------------
def infer_response(
    endpoint: Endpoint,
    request_id: str,
    outputs: list[tuple[str, int]],
    result: dataplane.Inference,
    attributions: NDArray[np.floating] | None = None,
) -> Any:
    model = endpoint.model
    probabilities = result.probabilities.astype("<f4", copy=False)
    batch, num_classes = probabilities.shape
    response = pb.ModelInferResponse(model_name=model.name, model_version=model.version, id=request_id)
    tensors = []
    chunks = []
    for name, top in outputs:
        if name == oip.LABEL:
            tensors.append(
                pb.ModelInferResponse.InferOutputTensor(name=name, datatype="INT64", shape=[batch])
            )
            chunks.append(result.labels.astype("<i8", copy=False).tobytes())
        elif name == oip.ATTRIBUTIONS:
            assert attributions is not None  # (asked for: computed)
            tensors.append(
                pb.ModelInferResponse.InferOutputTensor(name=name, datatype="FP32", shape=attributions.shape)
            )
            chunks.append(attributions.astype("<f4", copy=False).tobytes())
        elif top:
            tensors.append(
                pb.ModelInferResponse.InferOutputTensor(name=name, datatype="BYTES", shape=[batch, top])
            )
            chunks.append(oip.bytes_tensor(oip.top_classes(probabilities, top, model.class_names)))
        else:
            tensors.append(
                pb.ModelInferResponse.InferOutputTensor(
                    name=name, datatype="FP32", shape=[batch, num_classes]
                )
            )
            chunks.append(probabilities.tobytes())
    response.outputs.extend(tensors)
    response.raw_output_contents.extend(chunks)
    return response
