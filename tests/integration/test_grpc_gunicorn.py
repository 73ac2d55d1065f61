"""The Open Inference Protocol over gRPC, from outside: gunicorn with the repo's config, the
shipped models, ``GRPC_PORT`` and ``AUTH_TOKEN`` set, called by Triton's ``tritonclient.grpc``,
KServe's ``InferenceGRPCClient``, the standard health and reflection clients and plain grpcio.
The answers are held to HTTP v2's on the same server: the same labels, the same metadata."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import requests
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_testkit import Client, code_of, infer_request, wait_serving
from gunicorn_testkit import REPO, free_port, gunicorn, stop, wait_ready
from numpy.typing import NDArray

from service.proto import open_inference_pb2 as pb

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient is not installed")
kserve = pytest.importorskip("kserve", reason="kserve is not installed (pip install -e '.[test]')")

TOKEN = "grpc-test-token-0123456789"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
HERE = Path(__file__).parent
Sample = tuple[NDArray[np.uint8], NDArray[np.intp]]


@dataclass
class Server:
    url: str
    grpc: str
    model_dir: Path
    proc: subprocess.Popen[bytes]
    log: Path


def start(tmp: Path, **extra: str) -> Server:
    """gunicorn on a copy of the shipped models (a directory the tests may drop files into)."""
    model_dir = tmp / "models"
    model_dir.mkdir()
    for path in (REPO / "models").glob("*.npz"):
        shutil.copy(path, model_dir / path.name)
    port = free_port()
    env = {
        "MODEL_DIR": str(model_dir),
        "DEFAULT_MODEL": "mnist",
        "AUTH_TOKEN": TOKEN,
        "GRPC_PORT": str(port),
        "MODEL_POLL_SECONDS": "1",
        **extra,
    }
    log = tmp / "gunicorn.log"
    proc = gunicorn(env, log)
    try:
        url = wait_ready(proc, log)
        address = f"127.0.0.1:{port}"
        wait_serving(address)
    except BaseException:  # never leave a server behind
        proc.kill()
        proc.wait()
        raise
    return Server(url, address, model_dir, proc, log)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    served = start(tmp_path_factory.mktemp("grpc"))
    try:
        yield served
    finally:
        assert stop(served.proc) == 0
        assert "Traceback" not in served.log.read_text()


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    grpc_client = Client(server.grpc)
    yield grpc_client
    grpc_client.close()


def http_v2_labels(server: Server, pixels: NDArray[np.uint8]) -> NDArray[np.int64]:
    """HTTP v2's answer for ``pixels`` as FP32 in [0, 1], sent as Triton's HTTP client does."""
    triton = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    inp = httpclient.InferInput("input", [len(pixels), 784], "FP32")
    inp.set_data_from_numpy((pixels.reshape(len(pixels), 784) / 255.0).astype(np.float32))
    labels = triton.infer("mnist", [inp], headers=dict(AUTH)).as_numpy("label")
    triton.close()
    return labels  # type: ignore[no-any-return]


def test_health_says_serving_and_reflection_lists_the_services(client: Client, server: Server) -> None:
    assert client.health_status("") == "SERVING"
    assert client.health_status("inference.GRPCInferenceService") == "SERVING"
    with pytest.raises(grpc.RpcError) as info:
        client.health_status("no.such.Service")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND

    # what grpcurl does: list the services, then describe one from the server's descriptors
    database = ProtoReflectionDescriptorDatabase(client.channel)
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= set(database.get_services())
    from google.protobuf.descriptor_pool import DescriptorPool

    service = DescriptorPool(database).FindServiceByName("inference.GRPCInferenceService")
    assert {m.name for m in service.methods} == {
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
    }


def test_triton_grpc_client(server: Server, mnist_sample: Sample, tmp_path: Path) -> None:
    """Every RPC through tritonclient.grpc: 1,000 real test digits as FP32 [N, 784] give HTTP
    v2's labels exactly (and >= 97% right), UINT8 [N, 28, 28] the same, PNG files as BYTES what
    an upload gives; the errors as the protocol's status codes."""
    pixels, truth = mnist_sample
    digits = tmp_path / "digits.npz"
    np.savez(digits, pixels=pixels)
    run = subprocess.run(
        [sys.executable, str(HERE / "triton_grpc_client.py"), server.grpc, TOKEN, str(digits)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)

    assert (out["live"], out["ready"], out["model_ready"]) == (True, True, True)
    assert out["server_metadata"]["name"] == "digits-serving"
    assert set(out["server_metadata"]["extensions"]) == {"binary_tensor_data", "classification"}
    http_metadata = requests.get(f"{server.url}/v2/models/mnist", headers=dict(AUTH), timeout=10).json()
    grpc_metadata = out["model_metadata"]
    for kind in ("inputs", "outputs"):
        assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in grpc_metadata[kind]] == [
            (t["name"], t["datatype"], t["shape"]) for t in http_metadata[kind]
        ]
    assert grpc_metadata["versions"] == http_metadata["versions"]

    labels = np.asarray(out["fp32_labels"])
    assert len(labels) == len(pixels) == 1000
    assert np.array_equal(labels, http_v2_labels(server, pixels))
    assert (labels == truth).mean() >= 0.97
    assert out["uint8_labels"] == out["fp32_labels"]
    assert out["fp32_probabilities_shape"] == [1000, 10]
    assert out["response_id"] == "req-7"

    # image files as BYTES: what the same PNGs get as uploads
    uploads = [
        requests.post(
            f"{server.url}/predict",
            data=_png(p),
            headers={**dict(AUTH), "Content-Type": "image/png"},
            timeout=10,
        ).json()["predictions"][0]["label"]
        for p in pixels[:4]
    ]
    assert out["png_labels"] == uploads

    assert len(out["classification"]) == 2 and len(out["classification"][0]) == 3
    assert out["classification"][0][0].split(":")[1] == str(labels[0])
    assert out["attributions_shape"] == [2, 784]
    assert out["attributions_outputs"] == ["attributions", "label"]
    assert out["errors"] == {
        "no_token": "UNAUTHENTICATED",
        "wrong_token": "UNAUTHENTICATED",
        "unknown_model": "NOT_FOUND",
        "unknown_model_ready": "NOT_FOUND",
        "783_values": "INVALID_ARGUMENT",
        "nan": "INVALID_ARGUMENT",
    }
    # worded as HTTP v2 words it
    http_error = requests.post(
        f"{server.url}/v2/models/mnist/infer",
        json={"inputs": [{"name": "input", "shape": [1, 783], "datatype": "FP32", "data": [0.0] * 783}]},
        headers=dict(AUTH),
        timeout=10,
    ).json()["error"]
    assert out["783_message"] == http_error


def _png(pixels: NDArray[np.uint8]) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_kserve_grpc_client(server: Server, mnist_sample: Sample) -> None:
    pixels, _ = mnist_sample
    x = (pixels[:50].reshape(50, 784) / 255.0).astype(np.float32)

    async def calls() -> tuple[Any, ...]:
        client = kserve.InferenceGRPCClient(server.grpc)
        try:
            live = await client.is_server_live()
            ready = await client.is_server_ready()
            model_ready = await client.is_model_ready("mnist")
            inp = kserve.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            request = kserve.InferRequest(model_name="mnist", infer_inputs=[inp], request_id="kserve-1")
            response = await client.infer(request, headers=AUTH)
            refused = None
            try:
                await client.infer(request)
            except grpc.RpcError as exc:
                refused = exc.code()
            return live, ready, model_ready, response, refused
        finally:
            await client.close()

    live, ready, model_ready, response, refused = asyncio.run(calls())
    assert (live, ready, model_ready) == (True, True, True)
    assert response.id == "kserve-1"
    outputs = {o.name: o.as_numpy() for o in response.outputs}
    assert np.array_equal(outputs["label"], http_v2_labels(server, pixels[:50]))
    assert outputs["probabilities"].shape == (50, 10)
    assert refused == grpc.StatusCode.UNAUTHENTICATED


def test_every_rpc_and_the_request_id(client: Client, server: Server, mnist_sample: Sample) -> None:
    pixels, _ = mnist_sample
    assert client.ServerLive(pb.ServerLiveRequest(), timeout=10).live
    assert client.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
    assert client.ModelReady(pb.ModelReadyRequest(name="fashion-mnist"), timeout=10).ready
    metadata = client.ServerMetadata(pb.ServerMetadataRequest(), metadata=AUTH, timeout=10)
    assert metadata.name == "digits-serving"
    assert client.ModelMetadata(pb.ModelMetadataRequest(name="mnist"), metadata=AUTH, timeout=10).inputs[
        0
    ].name == ("input")
    response, call = client.ModelInfer.with_call(
        infer_request(pixels[:3]), metadata=(*AUTH, ("x-request-id", "abc-123")), timeout=10
    )
    assert list(response.outputs[1].shape) == [3]
    assert dict(call.trailing_metadata())["x-request-id"] == "abc-123"
    # typed contents, not raw: the same answer
    typed = pb.ModelInferRequest(
        model_name="mnist",
        inputs=[
            pb.ModelInferRequest.InferInputTensor(
                name="input",
                datatype="UINT8",
                shape=[3, 784],
                contents=pb.InferTensorContents(uint_contents=pixels[:3].ravel().tolist()),
            )
        ],
    )
    again = client.ModelInfer(typed, metadata=AUTH, timeout=10)
    assert again.raw_output_contents == response.raw_output_contents
    # the health RPCs are open, as over HTTP; the others need the token
    assert code_of(client.ServerMetadata, pb.ServerMetadataRequest()) == grpc.StatusCode.UNAUTHENTICATED
    assert (
        code_of(client.ModelMetadata, pb.ModelMetadataRequest(name="mnist"))
        == grpc.StatusCode.UNAUTHENTICATED
    )
    assert code_of(client.ModelReady, pb.ModelReadyRequest(name="nope")) == grpc.StatusCode.NOT_FOUND

    # counted in the same /metrics as HTTP: each worker flushes within a second, and the calls may
    # have reached different workers, so wait for every line, not the first
    expected = [
        'digits_grpc_requests_total{code="OK",method="ModelInfer",model="mnist"}',
        'digits_grpc_requests_total{code="UNAUTHENTICATED",method="ServerMetadata",model=""}',
        'digits_grpc_request_duration_seconds_count{method="ModelInfer",model="mnist"}',
    ]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = requests.get(f"{server.url}/metrics", timeout=10).text
        if all(line in text for line in expected):
            break
        time.sleep(0.2)
    assert [line for line in expected if line not in text] == []


def test_a_25_mb_message_is_refused_and_the_server_stays_ready(client: Client, server: Server) -> None:
    big = np.zeros((25 * 1024 * 1024 // 4 // 784 + 1, 784), dtype=np.float32)  # 25 MB of FP32
    assert big.nbytes >= 25 * 1024 * 1024
    assert code_of(client.ModelInfer, infer_request(big, "FP32"), metadata=AUTH) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    assert client.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
    assert client.health_status() == "SERVING"
    assert requests.get(f"{server.url}/readyz", timeout=10).status_code == 200


def test_a_model_dropped_into_model_dir_is_ready_over_grpc(client: Client, server: Server) -> None:
    tmp = server.model_dir / ".digits.npz.tmp"
    shutil.copy(REPO / "models" / "mnist.npz", tmp)
    os.replace(tmp, server.model_dir / "digits.npz")
    started = time.monotonic()
    # both workers must have it: new channels land on either (the kernel spreads connections)
    ready = 0
    while time.monotonic() - started < 20 and ready < 6:
        fresh = Client(server.grpc)
        ok = code_of(fresh.ModelReady, pb.ModelReadyRequest(name="digits")) == grpc.StatusCode.OK
        ready = ready + 1 if ok else 0
        fresh.close()
        time.sleep(0.1)
    assert ready >= 6, f"not ready over gRPC within 20 s (log: {server.log})"
    pixels = np.zeros((1, 28, 28), dtype=np.uint8)
    response = client.ModelInfer(infer_request(pixels, model="digits"), metadata=AUTH, timeout=10)
    assert response.model_name == "digits"


def children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return set(map(int, path.read_text().split())) if path.exists() else set()


def refused(host_port: str) -> bool:
    host, port = host_port.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return True
    return False


def test_a_killed_worker_is_replaced_and_grpc_keeps_serving(tmp_path: Path) -> None:
    served = start(tmp_path)
    try:
        workers = children(served.proc.pid)
        assert len(workers) == 2
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (
            len(children(served.proc.pid)) < 2 or victim in children(served.proc.pid)
        ):
            time.sleep(0.1)
        replaced = children(served.proc.pid)
        assert victim not in replaced and len(replaced) == 2
        # the replacement serves gRPC too: every new connection, to whichever worker, answers
        wait_serving(served.grpc)
        for _ in range(10):
            fresh = Client(served.grpc)
            assert fresh.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
            fresh.close()
    finally:
        assert stop(served.proc) == 0


def test_sigterm_drains_and_closes_both_ports(tmp_path: Path) -> None:
    """A call in flight when SIGTERM arrives is answered; then both ports close and every
    process is gone within 30 s."""
    served = start(tmp_path, GRACEFUL_TIMEOUT="20")
    pids = {served.proc.pid, *children(served.proc.pid)}
    http = served.url.removeprefix("http://")
    assert not refused(http) and not refused(served.grpc)
    # a slow call: integrated gradients at 256 steps for 64 inputs (16,384 backward rows)
    slow = infer_request(
        np.full((64, 784), 128, np.uint8),
        outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="attributions")],
    )
    slow.parameters["steps"].int64_param = 256
    client = Client(served.grpc)
    answered: list[Any] = []
    caller = threading.Thread(
        target=lambda: answered.append(client.ModelInfer.future(slow, metadata=AUTH).result())
    )
    caller.start()
    time.sleep(0.2)
    started = time.monotonic()
    served.proc.send_signal(signal.SIGTERM)
    caller.join(timeout=30)
    assert len(answered) == 1 and list(answered[0].outputs[0].shape) == [64, 784]
    client.close()
    assert served.proc.wait(timeout=30) == 0
    while time.monotonic() - started < 30 and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.1)
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids), "a process outlived the master"
    assert time.monotonic() - started < 30
    assert refused(http) and refused(served.grpc)
    assert "Traceback" not in served.log.read_text()
