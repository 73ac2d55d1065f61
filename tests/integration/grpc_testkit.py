"""A gRPC client for the tests, on grpcio alone: the protocol's RPCs with the service's own
message classes (``service.proto.open_inference_pb2``, in a descriptor pool of their own, so
KServe's client can be imported beside them), plus the health service."""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.grpc_v2 import RPCS
from service.proto import open_inference_pb2 as pb

SERVICE = "inference.GRPCInferenceService"


class Client:
    """``client.ModelInfer(request, metadata=...)`` and so on, for every RPC of the service."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        for method, (_, request_type, response_type, _) in RPCS.items():
            call = self.channel.unary_unary(
                f"/{SERVICE}/{method}",
                request_serializer=request_type.SerializeToString,
                response_deserializer=response_type.FromString,
            )
            setattr(self, method, call)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def health_status(self, service: str = "") -> str:
        response = self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    def close(self) -> None:
        self.channel.close()

    def __getattr__(self, name: str) -> Any:  # (the RPCs, set above: for mypy)
        raise AttributeError(name)


def code_of(call: Any, *args: Any, **kwargs: Any) -> grpc.StatusCode:
    """The status code of a call that should fail."""
    try:
        call(*args, timeout=30, **kwargs)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def wait_serving(address: str, timeout: float = 30.0) -> None:
    """Until gRPC health says SERVING on ``address``."""
    deadline = time.monotonic() + timeout
    client = Client(address)
    try:
        while time.monotonic() < deadline:
            try:
                if client.health_status() == "SERVING":
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    finally:
        client.close()
    pytest.fail(f"gRPC on {address} not SERVING after {timeout}s")


def infer_request(pixels: Any, datatype: str = "UINT8", model: str = "mnist", **fields: Any) -> Any:
    """A ModelInferRequest with ``pixels`` (N, ...) as raw little-endian bytes."""
    tensor = pb.ModelInferRequest.InferInputTensor(name="input", datatype=datatype, shape=list(pixels.shape))
    return pb.ModelInferRequest(
        model_name=model, inputs=[tensor], raw_input_contents=[pixels.tobytes()], **fields
    )
