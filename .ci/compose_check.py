"""The compose project's promises, checked from outside (.ci/containers.sh runs it; stdlib only but
for the gRPC check, which needs grpcio from the venv).

    compose_check.py spread URL --containers A,B,C [--requests 300] [--clients 4]
        every predict through the proxy answers 200, and every replica served some of them
        (counted from each replica's own /metrics, read inside its container with podman exec)
    compose_check.py kill URL --container A [--clients 4]
        4 clients send predicts; one replica is SIGKILLed (podman kill) mid-run: at most one
        failed request per client, and none in the last seconds of the run
    compose_check.py slow URL [--clients 24] [--seconds 12]
        24 clients send their headers, then their body a byte every half second; meanwhile
        GET /healthz through the proxy answers 200 within 2 s, every time
    compose_check.py hostile URL
        the HTTP layer's hostile corpus (tests/integration/reliability/http_corpus.py) through
        the proxy: each a JSON 4xx or a closed connection, never a 5xx or HTML; ready afterwards
    compose_check.py unavailable URL
        with every replica stopped: the proxy's own 503 (or 504) in each route's JSON shape
    compose_check.py grpc HOST:PORT [--calls 60]
        gRPC through the proxy's HTTP/2 port: health says SERVING, and ModelInfer of real digits
        answers their labels on every call (needs grpcio: the venv's python, not stdlib alone)

Each prints what it saw on one or a few lines and exits 1 if a promise is broken. All traffic goes
to the URL given (the proxy on 127.0.0.1).
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "tests" / "data" / "mnist-sample" / "t10k-images-idx3-ubyte.gz"
PREDICT = "/predict"
#: A request's own deadline: far above any answer here, so a timeout means a lost request.
REQUEST_TIMEOUT = 15.0
#: The liveness bound the issue sets for /healthz while slow clients hold the proxy.
HEALTHZ_BOUND = 2.0
#: The proxy's answers when no replica answers: unavailable, or timed out connecting.
UNAVAILABLE = (503, 504)
#: After a replica is killed, requests must succeed again within this many seconds.
KILL_SETTLE = 4.0
PREDICT_COUNTER = re.compile(
    r'^digits_http_requests_total\{endpoint="/predict",[^}]*status="200"\} (\S+)$', re.M
)
READ_METRICS = (
    "import urllib.request as u; "
    "opener = u.build_opener(u.ProxyHandler({})); "
    "print(opener.open('http://127.0.0.1:8000/metrics', timeout=5).read().decode())"
)


def digit_body() -> bytes:
    """One real MNIST digit as predict's JSON body (a blank image if the sample is missing)."""
    pixels = [0] * 784
    if SAMPLE.is_file():
        with gzip.open(SAMPLE) as f:
            f.read(16)
            pixels = list(f.read(784))
    return json.dumps({"inputs": [[p / 255 for p in pixels]]}).encode()


def post(url: urllib.parse.SplitResult, body: bytes) -> int | str:
    """POST /predict on a new connection: the status, or the name of the error."""
    return _status(url.hostname or "127.0.0.1", url.port or 80, "POST", PREDICT, body)


def _status(host: str, port: int, method: str, path: str, body: bytes | None = None) -> int | str:
    """One request on a new connection: the status, or the name of the error."""
    conn = http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__
    finally:
        conn.close()


def replica_predicts(container: str) -> float:
    """The /predict 200s one replica has answered (all its workers), from its own /metrics."""
    text = subprocess.run(
        ["podman", "exec", container, "python", "-c", READ_METRICS],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return sum(float(m) for m in PREDICT_COUNTER.findall(text))


def spread(args: argparse.Namespace) -> int:
    url = urllib.parse.urlsplit(args.url)
    body = digit_body()
    containers = args.containers.split(",")
    # each worker moves its numbers into /metrics once a second: let earlier requests arrive
    time.sleep(1.5)
    before = {c: replica_predicts(c) for c in containers}
    statuses: dict[int | str, int] = {}
    lock = threading.Lock()
    todo = iter(range(args.requests))

    def client() -> None:
        while True:
            with lock:
                if next(todo, None) is None:
                    return
            status = post(url, body)
            with lock:
                statuses[status] = statuses.get(status, 0) + 1

    t0 = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    time.sleep(1.5)
    served = {c: int(replica_predicts(c) - before[c]) for c in containers}
    ok = statuses.get(200, 0)
    print(f"   {args.requests} predicts through the proxy in {elapsed:.1f} s: statuses {statuses}")
    print(f"   served per replica: {served} (sum {sum(served.values())})")
    failed = ok != args.requests or any(n == 0 for n in served.values()) or sum(served.values()) != ok
    return 1 if failed else 0


def kill(args: argparse.Namespace) -> int:
    url = urllib.parse.urlsplit(args.url)
    body = digit_body()
    results: list[tuple[float, int | str]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            status = post(url, body)
            with lock:
                results.append((time.monotonic(), status))

    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(args.before)
    killed_at = time.monotonic()
    subprocess.run(["podman", "kill", args.container], capture_output=True, check=True, timeout=30)
    time.sleep(args.after)
    stop.set()
    for t in threads:
        t.join()
    end = time.monotonic()
    failures = [(t - killed_at, s) for t, s in results if s != 200]
    late = [(round(dt, 2), s) for dt, s in failures if dt > KILL_SETTLE]
    print(
        f"   {len(results)} predicts by {args.clients} clients in {end - t0:.1f} s; "
        f"{args.container} SIGKILLed at {killed_at - t0:.1f} s"
    )
    print(
        f"   failed: {len(failures)} {[(round(dt, 2), s) for dt, s in failures]} "
        f"(at most {args.clients}, none later than {KILL_SETTLE:.0f} s after the kill)"
    )
    after = sum(1 for t, s in results if t - killed_at > KILL_SETTLE and s == 200)
    print(f"   answered 200 from {KILL_SETTLE:.0f} s after the kill to the end: {after}")
    return 1 if len(failures) > args.clients or late or after == 0 else 0


def slow(args: argparse.Namespace) -> int:
    url = urllib.parse.urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    length = 100_000
    head = (
        f"POST {PREDICT} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()
    sockets = []
    for _ in range(args.clients):
        s = socket.create_connection((host, port), timeout=5)
        s.sendall(head)
        sockets.append(s)
    stop = threading.Event()
    dropped = []

    def trickle() -> None:  # one byte of each body every half second, until the end
        while not stop.wait(0.5):
            for s in sockets:
                try:
                    s.sendall(b" ")
                except OSError:
                    dropped.append(s)

    feeder = threading.Thread(target=trickle)
    feeder.start()
    latencies: list[float] = []
    bad: list[int | str] = []
    deadline = time.monotonic() + args.seconds
    try:
        while time.monotonic() < deadline:
            t = time.monotonic()
            conn = http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT)
            try:
                conn.request("GET", "/healthz")
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    bad.append(response.status)
            except (OSError, http.client.HTTPException) as exc:
                bad.append(type(exc).__name__)
            finally:
                conn.close()
            latencies.append(time.monotonic() - t)
            time.sleep(0.25)
    finally:
        stop.set()
        feeder.join()
        for s in sockets:
            s.close()
    worst = max(latencies)
    print(
        f"   {args.clients} slow clients ({len(set(map(id, dropped)))} dropped by the proxy) for "
        f"{args.seconds:.0f} s: GET /healthz {len(latencies)} times, slowest {worst * 1000:.0f} ms, "
        f"median {sorted(latencies)[len(latencies) // 2] * 1000:.0f} ms, failed {bad}"
    )
    return 1 if bad or worst > HEALTHZ_BOUND else 0


def hostile(args: argparse.Namespace) -> int:
    """The corpus the integration tests send to gunicorn, through the proxy (nginx reads HTTP
    first: its own refusals must keep the same promise)."""
    sys.path.insert(0, str(REPO / "tests" / "integration" / "reliability"))
    from http_corpus import CASES, exchange, problem

    host, port = _host_port(args.url)
    failed, statuses = [], []
    for case in CASES:
        # lenient: nginx takes a bare LF as a line end (RFC 9112 2.2 allows it): a valid request
        answer = exchange(host, port, case, trickle_for=3.0)
        statuses.append(f"{case.id}={answer.status or 'closed'}")
        trouble = problem(case, answer, lenient=True)
        if trouble is not None:
            failed.append(f"{case.id}: {trouble}")
        if answer.status is not None and 400 <= answer.status < 500 and "x-request-id" not in answer.headers:
            failed.append(f"{case.id}: no X-Request-ID")
        ready = _get(args.url + "/readyz")
        if ready != 200:
            failed.append(f"{case.id}: GET /readyz then answered {ready}")
    print(f"   {len(CASES)} hostile requests through the proxy: {' '.join(statuses)}")
    for line in failed:
        print(f"   FAILED {line}")
    return 1 if failed else 0


def unavailable(args: argparse.Namespace) -> int:
    """Every replica stopped (by the caller): the proxy's own 503, in each route's shape.

    Or its 504: a stopped replica's address may drop a connection attempt rather than refuse it,
    and then the first request waits out proxy_connect_timeout (2 s) before nginx gives up on the
    upstream; the answer is the proxy's own, in the route's JSON shape, either way."""
    checks = [
        ("POST", "/predict", lambda e: isinstance(e, dict) and e["status"] in UNAVAILABLE),
        ("POST", "/v2/models/mnist/infer", lambda e: isinstance(e, str)),
        ("POST", "/v1/models/mnist:predict", lambda e: isinstance(e, str)),
    ]
    host, port = _host_port(args.url)
    failed = []
    for method, path, shape in checks:
        conn = http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT)
        try:
            conn.request(method, path, body=b"{}", headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            body = response.read()
            error = json.loads(body)["error"]
            ok = response.status in UNAVAILABLE and shape(error) and response.getheader("X-Request-ID")
            print(f"   {method} {path} with no replica: {response.status} {body[:100]!r}")
            if not ok:
                failed.append(path)
        except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
            failed.append(f"{path}: {type(exc).__name__}")
        finally:
            conn.close()
    return 1 if failed else 0


def grpc_check(args: argparse.Namespace) -> int:
    """The proxy carries gRPC (grpc_pass over HTTP/2) to the replicas: health, then ModelInfer."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    sys.path.insert(0, str(REPO))
    from service.proto import open_inference_pb2 as pb

    with gzip.open(SAMPLE) as f:
        pixels = f.read()[16 : 16 + 784 * 8]  # 8 real test digits, UINT8
    with gzip.open(SAMPLE.with_name("t10k-labels-idx1-ubyte.gz")) as f:
        labels = list(f.read()[8 : 8 + 8])
    request = pb.ModelInferRequest(
        model_name="mnist",
        inputs=[pb.ModelInferRequest.InferInputTensor(name="input", datatype="UINT8", shape=[8, 784])],
        outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="label")],
        raw_input_contents=[pixels],
    )
    channel = grpc.insecure_channel(args.address)
    infer = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelInferResponse.FromString,
    )
    failed: list[str] = []
    try:
        status = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=REQUEST_TIMEOUT
        )
        serving = health_pb2.HealthCheckResponse.ServingStatus.Name(status.status)
        if serving != "SERVING":
            failed.append(f"health says {serving}")
        answers = set()
        for _ in range(args.calls):
            response = infer(request, timeout=REQUEST_TIMEOUT)
            answers.add(
                tuple(
                    int.from_bytes(response.raw_output_contents[0][i : i + 8], "little")
                    for i in range(0, 64, 8)
                )
            )
        right = [sum(a == t for a, t in zip(answer, labels, strict=True)) for answer in answers]
        print(
            f"   gRPC through the proxy: health {serving}; {args.calls} ModelInfer calls, "
            f"{min(right)}/8 or better right, {len(answers)} distinct answer(s)"
        )
        if len(answers) != 1 or min(right) < 7:
            failed.append(f"labels {sorted(answers)} against {labels}")
    except grpc.RpcError as exc:
        failed.append(f"{exc.code().name}: {exc.details()}")
    finally:
        channel.close()
    for line in failed:
        print(f"   FAILED {line}")
    return 1 if failed else 0


def _host_port(url: str) -> tuple[str, int]:
    parsed = urllib.parse.urlsplit(url)
    return parsed.hostname or "127.0.0.1", parsed.port or 80


def _get(url: str) -> int | str:
    return _status(*_host_port(url), "GET", urllib.parse.urlsplit(url).path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="check", required=True)
    p = sub.add_parser("spread", help="every predict succeeds and every replica serves some")
    p.add_argument("url")
    p.add_argument("--containers", required=True, help="the API replicas' container names, comma-separated")
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--clients", type=int, default=4)
    p.set_defaults(run=spread)
    p = sub.add_parser("kill", help="a replica killed under load costs at most the requests in flight")
    p.add_argument("url")
    p.add_argument("--container", required=True)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--before", type=float, default=3.0, help="seconds of load before the kill")
    p.add_argument("--after", type=float, default=8.0, help="seconds of load after it")
    p.set_defaults(run=kill)
    p = sub.add_parser("slow", help="slow clients on the proxy leave /healthz answering")
    p.add_argument("url")
    p.add_argument("--clients", type=int, default=24)
    p.add_argument("--seconds", type=float, default=12.0)
    p.set_defaults(run=slow)
    p = sub.add_parser("hostile", help="the HTTP layer's hostile corpus through the proxy")
    p.add_argument("url")
    p.set_defaults(run=hostile)
    p = sub.add_parser("unavailable", help="no replica: the proxy's own 503 in JSON")
    p.add_argument("url")
    p.set_defaults(run=unavailable)
    p = sub.add_parser("grpc", help="gRPC health and ModelInfer through the proxy's HTTP/2 port")
    p.add_argument("address", help="HOST:PORT of the proxy's gRPC port")
    p.add_argument("--calls", type=int, default=60)
    p.set_defaults(run=grpc_check)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
