"""Load and faults against a real gunicorn: zero errors under sustained load, memory flat, and
faults that cost only what they must.

Starts gunicorn with the repo's ``gunicorn.conf.py`` on a loopback port (auth on, the access log
on, MODEL_DIR polled every second) and drives it from ``--concurrency`` clients (default 32) with
a mix of requests: predict (one digit), loss (one digit), accuracy (ten digits) and Open
Inference Protocol v2 infer (one digit, UINT8), each client cycling through them. Each request
is a new connection (gunicorn's sync workers close every connection) and carries its own
``X-Request-ID``, so the server's access log can be matched against what the clients received.

Phases, one after the other, on the same server:

1. **soak** (``--duration``, default 300 s): sustained load. A third of the way in, a corrupt
   version of the default model is dropped into MODEL_DIR (it must be refused, the old version
   keeps serving, no request fails); two thirds in, a valid new version (it must take over with
   no request failing). Workers' resident memory is sampled every 5 s; its growth from minute 1
   (or a quarter of the run, if shorter) to the end must stay under 5%.
2. **kill-worker** (``--fault-seconds``): SIGKILL one worker in the middle. The master starts a
   new one; only the request the killed worker held may fail: as a closed connection, or, when
   the kill lands while its answer is being written (headers and body are two writes), as an
   answer cut short of its Content-Length, which every HTTP client reports as an error. Never
   a 5xx, never more than that one request.
3. **sigterm-master**: SIGTERM the master under load. Every answer that started arrives whole,
   nothing is a 5xx, the master exits 0; connections still waiting in the listen queue are
   closed unanswered (nothing ran for them: safe to retry); after that, connections are refused.

Throughout: no 5xx, no cut answer (but the killed worker's), and every request the server
logged as answered was received by its client (``lost`` = 0). ``--check`` exits 1 if any promise is broken.

    python bench/soak.py                                  # the long run: 5 minutes of soak
    python bench/soak.py --duration 20 --fault-seconds 6  # CI's bounded run
    python bench/soak.py --json report.json               # the figures, machine-readable

Models: ``--model-dir`` (default ``models/``: ``mnist.npz`` becomes version 1 of ``mnist``, the
other files are copied as they are); without one, random-weight 784-100-10 stand-ins. All
traffic goes to the server this script starts on 127.0.0.1; every loop is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "tests" / "data" / "mnist-sample"
LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")
#: The promises' numbers, from the reliability issue.
MAX_RSS_GROWTH = 0.05
RSS_SAMPLE_SECONDS = 5.0
RSS_REFERENCE_SECONDS = 60.0
POLL_SECONDS = 1.0
REQUEST_TIMEOUT = 30.0
GRACEFUL_TIMEOUT = 10


# --- the server ---------------------------------------------------------------------------
def model_dir(source: Path | None, work: Path) -> Path:
    """A writable MODEL_DIR with ``mnist`` as version 1 (``mnist/1/model.npz``)."""
    target = work / "models"
    (target / "mnist" / "1").mkdir(parents=True)
    if source is not None and (source / "mnist.npz").is_file():
        for path in source.glob("*.npz"):
            dest = target / "mnist" / "1" / "model.npz" if path.stem == "mnist" else target / path.name
            shutil.copyfile(path, dest)
        return target
    sys.path.insert(0, str(REPO))
    from training import TwoLayerNet, save_model

    net = TwoLayerNet(784, 100, 10, weight_init_std="xavier", rng=np.random.default_rng(0), dtype=np.float32)
    save_model(
        target / "mnist" / "1" / "model.npz",
        net,
        {"input_shape": [28, 28], "class_names": [str(d) for d in range(10)]},
    )
    print("note: no models/mnist.npz; serving a random-weight 784-100-10 stand-in")
    return target


def new_version(models: Path, version: int, data: bytes) -> None:
    """Publish ``mnist/<version>/model.npz`` whole, as a deploy should (temp file, rename)."""
    directory = models / "mnist" / str(version)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / ".model.npz.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, directory / "model.npz")


def start_gunicorn(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], int]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(REPO / "gunicorn.conf.py"), "--bind", "127.0.0.1:0"],
            cwd=REPO,
            env={"GRPC_PORT": "0", **env},  # no gRPC unless asked: its default port is shared
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gunicorn exited with {proc.returncode}:\n{log.read_text()}")
        match = LISTENING.search(log.read_text(errors="replace"))
        if match and len(workers(proc.pid)) >= int(env.get("WEB_CONCURRENCY", "2")):
            time.sleep(1.0)  # the workers load their models
            return proc, int(match.group(1))
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"gunicorn not ready after 60 s:\n{log.read_text()}")


def workers(master: int) -> list[int]:
    try:
        return sorted(map(int, Path(f"/proc/{master}/task/{master}/children").read_text().split()))
    except FileNotFoundError:
        return []


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return None


# --- the requests -------------------------------------------------------------------------
def digits() -> tuple[np.ndarray, np.ndarray]:
    """Ten real digits (uint8 (10, 784)) and their labels; blobs if the sample is missing."""
    images, labels = SAMPLE / "t10k-images-idx3-ubyte.gz", SAMPLE / "t10k-labels-idx1-ubyte.gz"
    if images.is_file():
        x = np.frombuffer(gzip.decompress(images.read_bytes())[16:], np.uint8).reshape(-1, 784)
        t = np.frombuffer(gzip.decompress(labels.read_bytes())[8:], np.uint8)
        return x[:10], t[:10].astype(int)
    x = np.zeros((10, 784), np.uint8)
    x[:, 300:500] = 255
    return x, np.arange(10)


def request_mix(token: str, port: int) -> list[tuple[str, bytes, bytes]]:
    """(kind, head without the request id, body) for each kind of request in the mix."""
    x, t = digits()
    one = (x[:1] / 255).round(4).tolist()
    bodies = {
        "predict": ("/predict", {"inputs": one}),
        "loss": ("/loss", {"inputs": one, "labels": t[:1].tolist()}),
        "accuracy": ("/accuracy", {"inputs": (x / 255).round(4).tolist(), "labels": t.tolist()}),
        "v2-infer": (
            "/v2/models/mnist/infer",
            {"inputs": [{"name": "input", "datatype": "UINT8", "shape": [1, 784], "data": x[0].tolist()}]},
        ),
    }
    mix = []
    for kind, (path, payload) in bodies.items():
        body = json.dumps(payload).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n"
        ).encode()
        mix.append((kind, head, body))
    return mix


# --- the clients --------------------------------------------------------------------------
@dataclass
class Phase:
    """What the clients saw in one phase."""

    name: str
    started: float = 0.0
    ended: float = 0.0
    ok: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    versions: Counter[str] = field(default_factory=Counter)
    received: set[str] = field(default_factory=set)
    events: list[str] = field(default_factory=list)
    #: (seconds into the phase, error kind) of each failure
    failures: list[tuple[float, str]] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(self.ok.values()) + sum(self.errors.values())

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies) or [0.0]
        seconds = max(self.ended - self.started, 1e-9)
        return {
            "phase": self.name,
            "seconds": round(seconds, 1),
            "requests": self.requests,
            "ok": dict(self.ok),
            "errors": dict(self.errors),
            "rps": round(sum(self.ok.values()) / seconds, 1),
            "p50_ms": round(1000 * lat[len(lat) // 2], 2),
            "p99_ms": round(1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))], 2),
            "versions": dict(self.versions),
            "events": self.events,
            "failures": [(round(t, 3), kind) for t, kind in self.failures[:20]],
        }


VERSION = re.compile(rb'"(?:model_)?version":"([^"]*)"')


async def one_request(port: int, head: bytes, body: bytes, rid: str) -> tuple[str, bytes]:
    """("ok" | an error kind, the answer's body)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), REQUEST_TIMEOUT)
    except ConnectionRefusedError:
        return "refused", b""
    except (TimeoutError, OSError):
        return "connect-failed", b""
    try:
        writer.write(head + f"X-Request-ID: {rid}\r\n\r\n".encode() + body)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), REQUEST_TIMEOUT)
    except (ConnectionResetError, BrokenPipeError):
        return "closed-unanswered", b""
    except TimeoutError:
        return "timeout", b""
    except OSError:
        return "closed-unanswered", b""
    finally:
        writer.close()
    if not raw:
        return "closed-unanswered", b""
    head_end = raw.find(b"\r\n\r\n")
    if head_end < 0:
        return "cut", b""
    status = int(raw[9:12])
    match = re.search(rb"(?im)^content-length: *(\d+)", raw[:head_end])
    answer = raw[head_end + 4 :]
    if match is None or len(answer) != int(match.group(1)):
        return "cut", b""
    if status != 200:
        return f"status-{status}", answer
    return "ok", answer


async def client(
    port: int,
    mix: list[tuple[str, bytes, bytes]],
    offset: int,
    phase: Phase,
    stop_at: float,
    prefix: str,
    stop_on_refused: bool,
) -> None:
    i = offset
    loop = asyncio.get_running_loop()
    while loop.time() < stop_at:
        kind, head, body = mix[i % len(mix)]
        rid = f"{prefix}{offset}-{i}"
        i += 1
        started = loop.time()
        outcome, answer = await one_request(port, head, body, rid)
        took = loop.time() - started
        if outcome == "ok":
            phase.ok[kind] += 1
            phase.latencies.append(took)
            phase.received.add(rid)
            if (version := VERSION.search(answer)) is not None:
                phase.versions[version.group(1).decode()] += 1
        else:
            phase.errors[outcome] += 1
            phase.failures.append((started - phase.started, outcome))
            if outcome == "refused" and stop_on_refused:
                return
            if outcome in ("refused", "connect-failed"):
                await asyncio.sleep(0.05)


async def drive(
    port: int,
    mix: list[tuple[str, bytes, bytes]],
    concurrency: int,
    seconds: float,
    phase: Phase,
    prefix: str,
    stop_on_refused: bool = False,
) -> None:
    loop = asyncio.get_running_loop()
    phase.started = loop.time()
    stop_at = phase.started + seconds
    await asyncio.gather(
        *(client(port, mix, c, phase, stop_at, prefix, stop_on_refused) for c in range(concurrency))
    )
    phase.ended = loop.time()


async def get_json(port: int, path: str, token: str) -> Any:
    head = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n"
    ).encode()
    outcome, body = await one_request(port, head, b"", "soak-check")
    return json.loads(body) if outcome == "ok" else None


# --- the phases ---------------------------------------------------------------------------
@dataclass
class Run:
    proc: subprocess.Popen[bytes]
    port: int
    token: str
    models: Path
    log: Path
    concurrency: int
    mix: list[tuple[str, bytes, bytes]]
    problems: list[str] = field(default_factory=list)

    def promise(self, ok: bool, text: str) -> None:
        print(("  ok    " if ok else "  FAIL  ") + text, flush=True)
        if not ok:
            self.problems.append(text)


async def served_versions(run: Run, want: str, deadline: float) -> list[str] | None:
    """Ask until both workers report ``want`` as mnist's serving version (or the deadline)."""
    seen: list[str] = []
    while time.monotonic() < deadline:
        answers = [await get_json(run.port, "/v1/models/mnist", run.token) for _ in range(6)]
        seen = [a["version"] for a in answers if a]
        if seen and all(v == want for v in seen):
            return seen
        await asyncio.sleep(POLL_SECONDS / 2)
    return seen or None


async def soak(run: Run, seconds: float) -> tuple[Phase, dict[str, Any]]:
    phase = Phase("soak")
    rss: list[tuple[float, dict[int, int]]] = []
    corrupt = (run.models / "mnist" / "1" / "model.npz").read_bytes()
    valid_new = corrupt  # the same weights as a new version: the swap itself is under test
    reference_at = min(RSS_REFERENCE_SECONDS, seconds / 4)

    async def sample_rss() -> None:
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            pids = workers(run.proc.pid)
            rss.append(
                (time.monotonic() - start, {pid: kib for pid in pids if (kib := rss_kib(pid)) is not None})
            )
            await asyncio.sleep(min(RSS_SAMPLE_SECONDS, max(seconds / 20, 0.5)))
        rss.append(
            (time.monotonic() - start, {pid: kib for pid in workers(run.proc.pid) if (kib := rss_kib(pid))})
        )

    async def faults() -> None:
        await asyncio.sleep(seconds / 3)
        new_version(run.models, 2, corrupt[: len(corrupt) // 2])
        phase.events.append(f"{seconds / 3:.0f}s: corrupt mnist/2 dropped in")
        deadline = time.monotonic() + 6 * POLL_SECONDS + 10
        while time.monotonic() < deadline and not failed_loads(run.log, "/mnist/2/"):
            await asyncio.sleep(POLL_SECONDS / 2)
        seen = await served_versions(run, "1", time.monotonic() + 5)
        run.promise(
            len(failed_loads(run.log, "/mnist/2/")) >= 2 and seen is not None and set(seen) == {"1"},
            f"corrupt version refused by every worker and logged; version 1 serves ({seen})",
        )
        await asyncio.sleep(max(0.0, 2 * seconds / 3 - (time.monotonic() - t0)))
        new_version(run.models, 3, valid_new)
        phase.events.append(f"{2 * seconds / 3:.0f}s: valid mnist/3 dropped in")
        seen = await served_versions(run, "3", time.monotonic() + 6 * POLL_SECONDS + 10)
        run.promise(
            seen is not None and set(seen) == {"3"}, f"valid version 3 took over on every worker ({seen})"
        )

    t0 = time.monotonic()
    await asyncio.gather(
        drive(run.port, run.mix, run.concurrency, seconds, phase, "s"), sample_rss(), faults()
    )
    reference = min(rss, key=lambda sample: abs(sample[0] - reference_at))
    end = rss[-1]
    growth = {pid: (end[1][pid] - kib) / kib for pid, kib in reference[1].items() if pid in end[1]}
    total_ref = sum(reference[1][pid] for pid in growth)
    total_end = sum(end[1][pid] for pid in growth)
    memory = {
        "reference_at_s": round(reference[0], 1),
        "end_at_s": round(end[0], 1),
        "reference_mib": {pid: round(kib / 1024, 1) for pid, kib in reference[1].items()},
        "end_mib": {pid: round(kib / 1024, 1) for pid, kib in end[1].items()},
        "growth": {pid: round(g, 4) for pid, g in growth.items()},
        "total_growth": round((total_end - total_ref) / total_ref, 4) if total_ref else None,
        "samples": [(round(t, 1), {pid: round(k / 1024, 1) for pid, k in s.items()}) for t, s in rss],
    }
    return phase, memory


def failed_loads(log: Path, fragment: str) -> set[int]:
    """Worker pids that logged a failed model load of a path containing ``fragment``."""
    pids = set()
    for line in log.read_text(errors="replace").splitlines():
        if '"model_load_failed"' in line and fragment in line:
            pids.add(json.loads(line)["pid"])
    return pids


async def kill_worker(run: Run, seconds: float) -> Phase:
    phase = Phase("kill-worker")

    async def kill() -> None:
        await asyncio.sleep(seconds / 2)
        before = workers(run.proc.pid)
        victim = before[0]
        os.kill(victim, signal.SIGKILL)
        phase.events.append(f"{seconds / 2:.1f}s: SIGKILL worker {victim}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = workers(run.proc.pid)
            if len(now) == len(before) and victim not in now:
                phase.events.append(f"replaced by {sorted(set(now) - set(before))}")
                return
            await asyncio.sleep(0.1)
        run.promise(False, "the master replaced the killed worker within 30 s")

    await asyncio.gather(drive(run.port, run.mix, run.concurrency, seconds, phase, "k"), kill())
    return phase


async def sigterm_master(run: Run, seconds: float) -> tuple[Phase, int | None, float]:
    phase = Phase("sigterm-master")
    exit_code: int | None = None
    took = 0.0

    async def term() -> None:
        nonlocal exit_code, took
        await asyncio.sleep(seconds)
        phase.events.append(f"{seconds:.1f}s: SIGTERM master {run.proc.pid}")
        started = time.monotonic()
        run.proc.send_signal(signal.SIGTERM)
        while run.proc.poll() is None and time.monotonic() - started < GRACEFUL_TIMEOUT + 20:
            await asyncio.sleep(0.05)
        took = time.monotonic() - started
        exit_code = run.proc.poll()

    # the clients go on until the server refuses them (or 3 graceful timeouts)
    await asyncio.gather(
        drive(
            run.port,
            run.mix,
            run.concurrency,
            seconds + 3 * GRACEFUL_TIMEOUT,
            phase,
            "t",
            stop_on_refused=True,
        ),
        term(),
    )
    return phase, exit_code, took


def access_log_ids(log: Path) -> dict[str, int]:
    """request id -> status of every POST the server logged as answered."""
    answered = {}
    for line in log.read_text(errors="replace").splitlines():
        if '"logger":"access"' in line and '"method":"POST"' in line:
            entry = json.loads(line)
            answered[entry["request_id"]] = entry["status"]
    return answered


# --- main ---------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of soak")
    parser.add_argument(
        "--fault-seconds",
        type=float,
        default=30.0,
        help="seconds of load around the worker kill, and before the SIGTERM",
    )
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--model-dir", type=Path, default=REPO / "models")
    parser.add_argument("--json", type=Path, help="write the report here too")
    parser.add_argument("--check", action="store_true", help="exit 1 if a promise is broken")
    args = parser.parse_args(argv)
    if not Path("/proc/self/status").exists():
        print("error: needs Linux's /proc (worker memory and processes)", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        work = Path(tmp)
        models = model_dir(args.model_dir, work)
        token = secrets.token_hex(16)
        env = {
            **os.environ,
            "MODEL_DIR": str(models),
            "DEFAULT_MODEL": "mnist",
            "AUTH_TOKEN": token,
            "ACCESS_LOG": "1",
            "MODEL_POLL_SECONDS": str(POLL_SECONDS),
            "GRACEFUL_TIMEOUT": str(GRACEFUL_TIMEOUT),
        }
        env.setdefault("WEB_CONCURRENCY", "2")
        log = work / "gunicorn.log"
        proc, port = start_gunicorn(env, log)
        run = Run(proc, port, token, models, log, args.concurrency, request_mix(token, port))
        print(
            f"gunicorn on 127.0.0.1:{port}, {env['WEB_CONCURRENCY']} workers, "
            f"{args.concurrency} clients; mix: {', '.join(k for k, _, _ in run.mix)}",
            flush=True,
        )
        try:
            report = asyncio.run(phases(run, args))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        log_text = log.read_text(errors="replace")
        tracebacks = log_text.count("Traceback")
        run.promise(tracebacks == 0, f"no traceback in the server's log ({tracebacks})")
        report["tracebacks"] = tracebacks
    report["problems"] = run.problems
    for key in ("soak", "kill_worker", "sigterm_master"):
        print(key, json.dumps({k: v for k, v in report[key].items() if k != "failures"}, default=str))
    memory = report["memory"]
    print(
        "worker RSS MiB at",
        memory["reference_at_s"],
        "s:",
        memory["reference_mib"],
        "at",
        memory["end_at_s"],
        "s:",
        memory["end_mib"],
        "growth:",
        memory["growth"],
    )
    print(
        f"server answered {report['server_answered']} POSTs, clients received "
        f"{report['client_answers']}, lost {len(report['lost'])}; "
        f"{len(run.problems)} promise(s) broken"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 1 if args.check and run.problems else 0


async def phases(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    print(f"soak: {args.duration:.0f} s", flush=True)
    cpu = time.process_time()
    soaked, memory = await soak(run, args.duration)
    cpu = time.process_time() - cpu
    print(f"kill-worker: {args.fault_seconds:.0f} s", flush=True)
    killed = await kill_worker(run, args.fault_seconds)
    print("sigterm-master", flush=True)
    termed, exit_code, took = await sigterm_master(run, max(args.fault_seconds / 4, 2.0))
    answered = access_log_ids(run.log)
    received = soaked.received | killed.received | termed.received
    lost = sorted(set(answered) - received)

    s = soaked.summary()
    run.promise(not soaked.errors, f"soak: {s['requests']} requests, errors {dict(soaked.errors)}")
    run.promise(
        memory["total_growth"] is not None and max(memory["growth"].values()) < MAX_RSS_GROWTH,
        f"soak: worker RSS growth {memory['growth']} from {memory['reference_at_s']} s "
        f"to {memory['end_at_s']} s < {MAX_RSS_GROWTH:.0%}",
    )
    run.promise("2" not in soaked.versions, f"soak: versions answered {dict(soaked.versions)}")
    bad = {k: n for k, n in killed.errors.items() if k not in ("closed-unanswered", "cut")}
    run.promise(
        not bad and sum(killed.errors.values()) <= 1,
        f"kill-worker: failures {dict(killed.errors)} (at most the killed worker's one "
        "request, closed unanswered or cut short)",
    )
    bad = {k: n for k, n in termed.errors.items() if k not in ("closed-unanswered", "refused")}
    run.promise(not bad, f"sigterm-master: no 5xx, no cut answer ({dict(termed.errors)})")
    run.promise(
        exit_code == 0 and took <= GRACEFUL_TIMEOUT + 5,
        f"sigterm-master: master exited {exit_code} after {took:.1f} s",
    )
    run.promise(
        not lost,
        f"every answer the server logged reached its client ({len(answered)} logged, {len(lost)} lost)",
    )
    s["client_cpu_share"] = round(cpu / max(s["seconds"], 1e-9), 2)  # of one core: the load
    return {
        "soak": s,
        "memory": memory,
        "kill_worker": killed.summary(),
        "sigterm_master": {**termed.summary(), "exit_code": exit_code, "exit_seconds": round(took, 1)},
        "server_answered": len(answered),
        "lost": lost[:20],
        "client_answers": len(received),
    }


if __name__ == "__main__":
    sys.exit(main())
