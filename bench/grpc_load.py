"""gRPC serving speed: ModelInfer over gRPC against HTTP v2 binary on the same server, and
against MLServer's gRPC on the same weights, in one run.

Starts gunicorn with the repo's ``gunicorn.conf.py`` (2 sync workers, gRPC on a loopback port)
and, with ``--mlserver-python``, MLServer from a separate virtualenv (never a dependency of this
project: ``python -m venv /tmp/mlserver && /tmp/mlserver/bin/pip install mlserver==1.7.1``)
with a custom runtime (bench/mlserver_runtime.py) that wraps the same numpy forward pass
(``training.load_model(...).network().predict``) on the same ``.npz``. Then drives each
scenario for ``--duration`` seconds with the same closed-loop client, 16 calls in flight (2
processes x 8 threads, one connection each, as wrk's 16 connections in serve_load.py):

    v2-bin-1     POST /v2/models/mnist/infer   one real digit as binary FP32 (Triton's HTTP client)
    v2-bin-100   the same, 100 digits
    grpc-1       ModelInfer, one digit as FP32 raw_input_contents (Triton's gRPC client)
    grpc-100     the same, 100 digits
    mlserver-grpc-1, mlserver-grpc-100   the same gRPC requests to MLServer

The client sends prebuilt request bytes and reads the answers without decoding them, so the
client costs every scenario alike and as little as it can; scenarios rotate every round and
medians are reported. Targets (issue 20): grpc-100's images/s at least v2-bin-100's; grpc-1's
requests/s at least 3x mlserver-grpc-1's.

    python bench/grpc_load.py [--duration 5] [--rounds 2] [--check] \\
        [--mlserver-python /tmp/mlserver/bin/python]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BATCHES = (1, 100)
PROCESSES = 2
THREADS = 8


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _digits(n: int) -> np.ndarray:
    sys.path.insert(0, str(REPO))
    from training.idx import read_idx

    sample = REPO / "tests" / "data" / "mnist-sample" / "t10k-images-idx3-ubyte.gz"
    images = read_idx(sample)[:n]
    return (images.reshape(len(images), 784) / 255.0).astype("<f4")


def grpc_body(x: np.ndarray) -> bytes:
    from service.proto import open_inference_pb2 as pb

    tensor = pb.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=list(x.shape))
    request = pb.ModelInferRequest(model_name="mnist", inputs=[tensor], raw_input_contents=[x.tobytes()])
    return bytes(request.SerializeToString())


def http_body(x: np.ndarray) -> tuple[bytes, int]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "outputs": [{"name": "probabilities"}, {"name": "label"}],
        }
    ).encode()
    return header + x.tobytes(), len(header)


# --- the client: one process drives `threads` calls in flight for `duration` seconds ---------
def drive(target: str, body_path: str, duration: float, concurrency: int) -> int:
    """One client process: ``concurrency`` gRPC calls in flight for ``duration`` seconds."""
    body = Path(body_path).read_bytes()
    return asyncio.run(_grpc_calls(target, body, time.monotonic() + duration, concurrency))


async def _grpc_calls(target: str, body: bytes, stop_at: float, concurrency: int) -> int:
    """``concurrency`` calls in flight, each on a connection of its own, on grpc's asyncio
    client: about half the client CPU per call of its threaded one, which matters when client
    and server share two cores."""
    import grpc

    counts = [0] * concurrency

    async def loop(i: int) -> None:
        async with grpc.aio.insecure_channel(
            target, options=[("grpc.use_local_subchannel_pool", 1)]
        ) as channel:
            call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")  # bytes in, bytes out
            await call(body, timeout=30)  # connected before the clock counts
            while time.monotonic() < stop_at:
                await call(body, timeout=30)
                counts[i] += 1

    await asyncio.gather(*(loop(i) for i in range(concurrency)))
    return sum(counts)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and every process under it, so far."""
    total = 0.0
    pending = [pid]
    tick = os.sysconf("SC_CLK_TCK")
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            pending += map(int, Path(f"/proc/{current}/task/{current}/children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def run_wrk(target: str, body: Path, duration: float, header_length: int) -> float:
    """HTTP v2 binary driven by wrk (16 connections, 2 threads), as bench/serve_load.py does."""
    from serve_load import LUA, wrk_fields

    env = {
        **os.environ,
        "BENCH_BODY": str(body),
        "BENCH_CONTENT_TYPE": "application/octet-stream",
        "BENCH_HEADER_LENGTH": str(header_length),
    }
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{PROCESSES * THREADS}",
            f"-d{int(duration)}s",
            "--timeout",
            "10s",
            "-s",
            str(LUA),
            f"http://{target}/v2/models/mnist/infer",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    fields = wrk_fields(out)
    if fields["bad_status"] or fields["socket_errors"]:
        raise SystemExit(f"error: wrk saw errors: {fields}")
    return fields["requests"] / (fields["duration_us"] / 1e6)


def run_scenario(kind: str, target: str, body: Path, duration: float, header_length: int = 0) -> float:
    """Requests per second with PROCESSES x THREADS calls in flight."""
    if kind == "wrk":
        return run_wrk(target, body, duration, header_length)
    command = [sys.executable, __file__, "--drive", target, str(body), str(duration)]
    started = time.monotonic()
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO) for _ in range(PROCESSES)]
    total = 0
    for proc in procs:
        out, _ = proc.communicate(timeout=duration + 60)
        if proc.returncode != 0:
            raise SystemExit(f"error: the {kind} client for {target} failed")
        total += int(out.split()[-1])
    elapsed = time.monotonic() - started
    return total / max(duration, elapsed - 1.5)  # (start-up of the client processes excluded, roughly)


# --- the servers -----------------------------------------------------------------------------
def start_gunicorn(work: Path, model_dir: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    http_port, grpc_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "MODEL_DIR": str(model_dir),
        "PORT": str(http_port),
        "GRPC_PORT": str(grpc_port),
        "WEB_CONCURRENCY": os.environ.get("WEB_CONCURRENCY", "2"),
    }
    log = (work / "gunicorn.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(REPO / "gunicorn.conf.py")],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    _wait_port(grpc_port, proc)
    _wait_port(http_port, proc)
    return proc, f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"


def start_mlserver(python: str, work: Path, model_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    home = work / "mlserver"
    (home / "mnist").mkdir(parents=True)
    grpc_port = _free_port()
    settings = {
        "http_port": _free_port(),
        "grpc_port": grpc_port,
        "metrics_port": _free_port(),
        "parallel_workers": 0,
    }
    (home / "settings.json").write_text(json.dumps(settings))
    (home / "mnist" / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "mnist",
                "implementation": "mlserver_runtime.DigitsRuntime",
                "parameters": {"uri": str(model_dir / "mnist.npz")},
            }
        )
    )
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'bench'}:{REPO}", "OPENBLAS_NUM_THREADS": "1"}
    log = (work / "mlserver.log").open("wb")
    mlserver = str(Path(python).with_name("mlserver"))
    proc = subprocess.Popen(
        [mlserver, "start", str(home)], cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    _wait_port(grpc_port, proc, timeout=120)
    time.sleep(2)  # the model loads after the port opens
    return proc, f"127.0.0.1:{grpc_port}"


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"error: a server exited with {proc.returncode} (see its log)")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"error: nothing listens on port {port} after {timeout} s")


def _check_answers(grpc_target: str, body: bytes, n: int) -> None:
    """A scenario's request is answered with n labels (not an error that would be fast)."""
    import grpc

    from service.proto import open_inference_pb2 as pb

    with grpc.insecure_channel(grpc_target) as channel:
        raw = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")(body, timeout=30)
    response = pb.ModelInferResponse.FromString(raw)
    shapes = {o.name: list(o.shape) for o in response.outputs}
    assert shapes["label"] == [n], shapes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--mlserver-python", help="python of a virtualenv with mlserver installed")
    parser.add_argument("--model-dir", type=Path, default=REPO / "models")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO))
    work = Path(tempfile.mkdtemp(prefix="grpc-load-"))
    servers: list[subprocess.Popen[bytes]] = []
    try:
        gunicorn, http_target, grpc_target = start_gunicorn(work, args.model_dir)
        servers.append(gunicorn)
        targets = {"v2-bin": ("wrk", http_target), "grpc": ("grpc", grpc_target)}
        pids = {"v2-bin": gunicorn.pid, "grpc": gunicorn.pid}
        if args.mlserver_python:
            mlserver, mlserver_target = start_mlserver(args.mlserver_python, work, args.model_dir)
            servers.append(mlserver)
            targets["mlserver-grpc"] = ("grpc", mlserver_target)
            pids["mlserver-grpc"] = mlserver.pid
        scenarios = []
        for n in BATCHES:
            x = _digits(n)
            (work / f"grpc-{n}.bin").write_bytes(grpc_body(x))
            body, length = http_body(x)
            (work / f"http-{n}.bin").write_bytes(body)
            _check_answers(grpc_target, (work / f"grpc-{n}.bin").read_bytes(), n)
            for prefix, (kind, target) in targets.items():
                file = work / f"{'grpc' if kind == 'grpc' else 'http'}-{n}.bin"
                scenarios.append(
                    (f"{prefix}-{n}", n, kind, target, file, 0 if kind == "grpc" else length, pids[prefix])
                )
        results: dict[str, list[float]] = {name: [] for name, *_ in scenarios}
        cpu: dict[str, list[float]] = {name: [] for name, *_ in scenarios}
        for round_ in range(args.rounds):
            order = scenarios[round_ % len(scenarios) :] + scenarios[: round_ % len(scenarios)]
            for name, _, kind, target, file, length, pid in order:
                cpu_before = cpu_seconds(pid)
                results[name].append(run_scenario(kind, target, file, args.duration, length))
                # the server's CPU per request: what the machine's other load cannot change
                cpu[name].append((cpu_seconds(pid) - cpu_before) / (results[name][-1] * args.duration) * 1e6)
                print(
                    f"round {round_ + 1} {name}: {results[name][-1]:.0f} req/s, "
                    f"{cpu[name][-1]:.0f} us CPU/req",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        for server in servers:
            server.send_signal(signal.SIGTERM)
        for server in servers:
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()

    medians = {name: statistics.median(values) for name, values in results.items()}
    cpu_medians = {name: statistics.median(values) for name, values in cpu.items()}
    sizes = {name: n for name, n, *_ in scenarios}
    print(
        f"median of {args.rounds} rounds of {args.duration:g} s, 16 calls in flight; "
        f"load {os.getloadavg()[0]:.1f}"
    )
    print("| scenario | req/s | images/s | server CPU µs/req |")
    print("| --- | --- | --- | --- |")
    for name, rate in medians.items():
        print(f"| {name} | {rate:,.0f} | {rate * sizes[name]:,.0f} | {cpu_medians[name]:,.0f} |")
    ok = True
    ratio = medians["grpc-100"] / medians["v2-bin-100"]
    print(f"grpc-100 / v2-bin-100 images/s: {ratio:.2f} (target >= 1.0)")
    ok &= ratio >= 1.0
    if "mlserver-grpc-1" in medians:
        ratio = medians["grpc-1"] / medians["mlserver-grpc-1"]
        print(f"grpc-1 / mlserver-grpc-1 req/s: {ratio:.2f} (target >= 3.0)")
        cpu_ratio = cpu_medians["mlserver-grpc-1"] / cpu_medians["grpc-1"]
        print(f"mlserver-grpc-1 / grpc-1 server CPU per request: {cpu_ratio:.2f}")
        print(
            f"grpc-100 / mlserver-grpc-100 images/s: {medians['grpc-100'] / medians['mlserver-grpc-100']:.2f}"
        )
        ok &= ratio >= 3.0
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--drive":
        target, body, duration = sys.argv[2:5]
        print(drive(target, body, float(duration), THREADS))
        raise SystemExit(0)
    raise SystemExit(main())
