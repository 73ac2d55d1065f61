"""HTTP serving speed: the framework floor and the inference endpoints, in one run.

Starts gunicorn with the repo's ``gunicorn.conf.py`` on a loopback port, with ``BENCH_NOOP=1``
so the app also answers ``POST /_bench/noop`` (reads the body, returns a constant JSON: the
framework floor), and drives every scenario with wrk at the same concurrency:

    floor        POST /_bench/noop   the single-image JSON body
    predict-1    POST /predict       one real MNIST digit as 784 numbers in [0, 1]
    floor-100    POST /_bench/noop   the 100-digit body (what receiving 500 KB costs)
    predict-100  POST /predict       100 real digits
    png-28       POST /predict       one 28x28 PNG of a digit (preprocessing on)
    png-200      POST /predict       the digit photographed: 240x240, black on white, off-centre
    v2-1         POST /v2/models/mnist/infer   predict-1's 784 numbers as an FP32 JSON tensor
    v2-bin-1     POST /v2/models/mnist/infer   the same image as binary FP32 (tritonclient's default)
    v2-bin-100   POST /v2/models/mnist/infer   predict-100's digits as one binary FP32 tensor
    tfs-1        POST /v1/models/mnist:predict  predict-1's image as TF Serving's {"instances": [...]}
    explain-1    POST /explain       predict-1's image, integrated gradients at the default 64 steps

With ``--stages`` (not run otherwise), predict-100 step by step: ``POST /_bench/stages/STEP``
is a predict of the 100-digit body that stops after STEP, so each row adds one step's cost:

    parse-100    simdjson alone: the numbers into numpy, nothing checked (any reader's floor)
    checks-100   our reader and every check: the model's float32 batch
    forward-100  and the network's forward pass
    infer-100    and labels, confidence and their metrics (predict-100 adds the response)

Scenarios run in rounds, in an order that rotates every round, and the medians are reported, so
whatever else the machine is doing hits all of them alike; the ratios to the floor of the same
run are what count. Gunicorn settings come from the environment as in production
(``WEB_CONCURRENCY``, ``WORKER_THREADS``, ...), so configurations can be compared:

    python bench/serve_load.py [--duration 10] [--rounds 2] [--connections 16] [--check]
    python bench/serve_load.py --only floor,predict-1,v2-1      # some scenarios (floor always)
    python bench/serve_load.py --stages                         # where a batch's time goes
    WORKER_THREADS=4 python bench/serve_load.py      # gthread instead of sync

Models: ``--model-dir`` (default ``models/`` if it has ``mnist.npz``, else a random-weight
784-100-10 float32 stand-in written to a temporary directory: speed does not depend on weights).
Needs ``wrk`` (``apt-get install -y wrk``). Exits 0 unless ``--check`` is given and a target fails.
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
LUA = Path(__file__).with_name("serve_post.lua")
SAMPLE = REPO / "tests" / "data" / "mnist-sample" / "t10k-images-idx3-ubyte.gz"
BATCH = 100
#: The targets of the service's speed spec, at 16 concurrent connections on 2 cores.
PREDICT_FLOOR_RATIO = 0.8
PREDICT_P99_MS = 5.0
BATCH_IMAGES_PER_S = 50_000
#: Issue 13: predict-1's p99 at most this multiple of the floor's p99, and 100-image JSON
#: batches at least this fraction of the floor's req/s.
PREDICT_P99_FLOOR_RATIO = 1.3
BATCH_FLOOR_RATIO = 0.2
PNG_FLOOR_RATIO = 0.5
BENCH_LINE = re.compile(r"^BENCH (.*)$", re.M)
LISTENING = re.compile(r"Listening at: (http://127\.0\.0\.1:\d+)")
V2_INFER = "/v2/models/mnist/infer"
#: Issue 10: the same image through v2 infer reaches at least this fraction of v1 predict's req/s.
V2_V1_RATIO = 0.95
#: Issue 12: explaining one image (64 steps: one batched pass of 64 rows) reaches at least this
#: fraction of predicting it.
EXPLAIN_PREDICT_RATIO = 0.5


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    body: str  # file name in the work directory
    content_type: str
    images: int = 1
    #: Open Inference Protocol binary extension: the JSON header's length (a file in the work
    #: directory holding the number), or "" for a plain JSON body.
    header_length: str = ""
    #: Run without --only (the stages run with --stages or --only).
    default: bool = True


def _stage(step: str) -> Scenario:
    return Scenario(
        f"{step}-100",
        f"/_bench/stages/{step}",
        "batch.json",
        "application/json",
        images=BATCH,
        default=False,
    )


#: predict-100 step by step (``/_bench/stages``, see ``service.views.BENCH_STAGES``): what each
#: step adds to the cost of a 100-image JSON batch, floor-100 before and predict-100 after.
STAGES = ("parse", "checks", "forward", "infer")

SCENARIOS = (
    Scenario("floor", "/_bench/noop", "one.json", "application/json"),
    Scenario("predict-1", "/predict", "one.json", "application/json"),
    Scenario("floor-100", "/_bench/noop", "batch.json", "application/json"),
    *(_stage(step) for step in STAGES),
    Scenario("predict-100", "/predict", "batch.json", "application/json", images=BATCH),
    Scenario("png-28", "/predict", "digit28.png", "image/png"),
    Scenario("png-200", "/predict", "photo240.png", "image/png"),
    Scenario("v2-1", V2_INFER, "v2-one.json", "application/json"),
    Scenario("v2-bin-1", V2_INFER, "v2-one.bin", "application/octet-stream", header_length="v2-one.len"),
    Scenario(
        "v2-bin-100",
        V2_INFER,
        "v2-batch.bin",
        "application/octet-stream",
        images=BATCH,
        header_length="v2-batch.len",
    ),
    Scenario("tfs-1", "/v1/models/mnist:predict", "tfs-one.json", "application/json"),
    Scenario("explain-1", "/explain", "one.json", "application/json"),
)


@dataclass(frozen=True)
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    #: CPU time the gunicorn processes spent per request: unlike req/s, barely moved by
    #: whatever else runs on the machine, so it shows where the time goes on a busy one.
    cpu_us: float


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per scenario run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--wrk-threads", type=int, default=1, help="wrk threads (they share the cores with the server)"
    )
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated scenario names (the floor "
        f"always runs): {', '.join(s.name for s in SCENARIOS)}",
    )
    parser.add_argument(
        "--stages",
        action="store_true",
        help="only floor-100, predict-100 and the steps between them: "
        + ", ".join(f"{step}-100" for step in STAGES),
    )
    args = parser.parse_args(argv)
    names = {s.name for s in SCENARIOS}
    wanted = {name.strip() for name in args.only.split(",") if name.strip()}
    if args.stages:
        wanted |= {"floor-100", "predict-100", *(f"{step}-100" for step in STAGES)}
    if wanted - names:
        print(
            f"error: --only: unknown scenario(s) {', '.join(sorted(wanted - names))}; "
            f"choose from {', '.join(sorted(names))}",
            file=sys.stderr,
        )
        return 2
    scenarios = tuple(s for s in SCENARIOS if s.name in wanted | {"floor"} or (not wanted and s.default))

    if shutil.which("wrk") is None:
        print("error: wrk not found; install it with `apt-get install -y wrk`", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        work = Path(tmp)
        model_dir = args.model_dir or _model_dir(work)
        _write_bodies(work)
        env = {
            **os.environ,
            "MODEL_DIR": str(model_dir),
            "DEFAULT_MODEL": "mnist",
            "BENCH_NOOP": "1",
            "ACCESS_LOG": "0",
        }
        server, url, log = _start_gunicorn(env, work)
        try:
            print(_describe(env, url, model_dir, args), flush=True)
            for scenario in scenarios:  # warm-up, and a check that every body is accepted
                _check_body(url, scenario, work)
                _wrk(url, scenario, work, args, duration=1, server=server.pid)
            results: dict[str, list[Result]] = {s.name: [] for s in scenarios}
            for round_ in range(args.rounds):
                shift = round_ % len(scenarios)
                for scenario in scenarios[shift:] + scenarios[:shift]:
                    results[scenario.name].append(
                        _wrk(url, scenario, work, args, args.duration, server=server.pid)
                    )
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        if "Traceback" in log.read_text():
            print(log.read_text(), file=sys.stderr)
            return 1
    return _report(results, args.check)


def _model_dir(work: Path) -> Path:
    shipped = REPO / "models"
    if (shipped / "mnist.npz").is_file():
        return shipped
    sys.path.insert(0, str(REPO))
    from training import TwoLayerNet, save_model

    net = TwoLayerNet(784, 100, 10, weight_init_std="xavier", dtype=np.float32)
    (work / "models").mkdir()
    save_model(
        work / "models" / "mnist.npz",
        net,
        {"input_shape": [28, 28], "class_names": [str(d) for d in range(10)]},
    )
    print("note: models/mnist.npz not found; serving a random-weight 784-100-10 stand-in")
    return work / "models"


def _digits() -> np.ndarray:
    """(BATCH, 28, 28) uint8 real digits from the test sample, or blobs if it is missing."""
    if SAMPLE.is_file():
        sys.path.insert(0, str(REPO))
        from training.idx import read_idx

        return read_idx(SAMPLE)[:BATCH]
    rng = np.random.default_rng(0)
    digits = np.zeros((BATCH, 28, 28), np.uint8)
    digits[:, 6:22, 11:17] = rng.integers(128, 256, (BATCH, 16, 6))
    return digits


def _write_bodies(work: Path) -> None:
    digits = _digits()
    pixels = digits.reshape(BATCH, -1) / 255.0  # what a numpy client sends: x / 255 as floats
    (work / "one.json").write_bytes(orjson.dumps({"inputs": pixels[:1].tolist()}))
    (work / "batch.json").write_bytes(orjson.dumps({"inputs": pixels.tolist()}))
    (work / "tfs-one.json").write_bytes(orjson.dumps({"instances": pixels[:1].tolist()}))
    (work / "digit28.png").write_bytes(_png(Image.fromarray(digits[0])))
    photo = Image.new("L", (240, 240), 255)
    photo.paste(Image.fromarray(255 - digits[0]).resize((140, 140)), (30, 50))
    (work / "photo240.png").write_bytes(_png(photo))
    (work / "v2-one.json").write_bytes(
        orjson.dumps(
            {"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": pixels[0].tolist()}]}
        )
    )
    for name, batch in (("v2-one", pixels[:1]), ("v2-batch", pixels)):
        raw = batch.astype("<f4").tobytes()
        header = orjson.dumps(
            {
                "inputs": [
                    {
                        "name": "input",
                        "shape": list(batch.shape),
                        "datatype": "FP32",
                        "parameters": {"binary_data_size": len(raw)},
                    }
                ],
                "outputs": [{"name": "probabilities"}, {"name": "label"}],
            }
        )
        (work / f"{name}.bin").write_bytes(header + raw)
        (work / f"{name}.len").write_text(str(len(header)))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _start_gunicorn(env: dict[str, str], work: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    log = work / "gunicorn.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(REPO / "gunicorn.conf.py"), "--bind", "127.0.0.1:0"],
            cwd=REPO,
            env={"GRPC_PORT": "0", **env},  # no gRPC unless asked: its default port is shared
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"gunicorn exited with {server.returncode}:\n{log.read_text()}")
        match = LISTENING.search(log.read_text())
        if match:
            try:
                with urllib.request.urlopen(match.group(1) + "/readyz", timeout=2) as response:
                    if response.status == 200:
                        return server, match.group(1), log
            except OSError:
                pass
        time.sleep(0.2)
    server.kill()
    sys.exit(f"gunicorn did not become ready:\n{log.read_text()}")


def _check_body(url: str, scenario: Scenario, work: Path) -> None:
    headers = {"Content-Type": scenario.content_type}
    if scenario.header_length:
        headers["Inference-Header-Content-Length"] = (work / scenario.header_length).read_text()
    request = urllib.request.Request(
        url + scenario.path, data=(work / scenario.body).read_bytes(), headers=headers
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body = orjson.loads(response.read())
    if scenario.path.startswith("/_bench/"):
        if body != {"ok": True}:
            sys.exit(f"{scenario.name}: unexpected answer {body}")
        return
    if "predictions" in body or "explanations" in body:
        answered = len(body.get("predictions", body.get("explanations", [])))
    else:
        answered = body["outputs"][0]["shape"][0]
    if answered != scenario.images:
        sys.exit(f"{scenario.name}: unexpected answer {body}")


def _cpu_seconds(master: int) -> float:
    """User + system CPU time of the gunicorn master and its workers so far."""
    ticks = 0
    pids = [master, *map(int, Path(f"/proc/{master}/task/{master}/children").read_text().split())]
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except FileNotFoundError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def _wrk(
    url: str, scenario: Scenario, work: Path, args: argparse.Namespace, duration: int, server: int
) -> Result:
    env = {
        **os.environ,
        "BENCH_BODY": str(work / scenario.body),
        "BENCH_CONTENT_TYPE": scenario.content_type,
        "BENCH_HEADER_LENGTH": (
            (work / scenario.header_length).read_text() if scenario.header_length else ""
        ),
    }
    cpu_before = _cpu_seconds(server)
    out = subprocess.run(
        [
            "wrk",
            f"-t{args.wrk_threads}",
            f"-c{args.connections}",
            f"-d{duration}s",
            "--timeout",
            "10s",
            "-s",
            str(LUA),
            url + scenario.path,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cpu = _cpu_seconds(server) - cpu_before
    fields = wrk_fields(out)
    return Result(
        rps=fields["requests"] / (fields["duration_us"] / 1e6),
        p50_ms=fields["p50_us"] / 1000,
        p99_ms=fields["p99_us"] / 1000,
        errors=fields["bad_status"] + fields["socket_errors"],
        cpu_us=cpu / max(fields["requests"], 1) * 1e6,
    )


def wrk_fields(out: str) -> dict[str, int]:
    """The numbers serve_post.lua prints on its BENCH line (requests, duration_us, p50_us, ...)."""
    match = BENCH_LINE.search(out)
    if not match:
        sys.exit(f"wrk printed no BENCH line:\n{out}")
    return {k: int(v) for k, v in (item.split("=") for item in match.group(1).split())}


def _describe(env: dict[str, str], url: str, model_dir: Path, args: argparse.Namespace) -> str:
    sys.path.insert(0, str(REPO))
    from service.settings import Settings

    s = Settings.from_env(env)
    worker = f"gthread x{s.threads} threads" if s.threads > 1 else "sync"
    return (
        f"gunicorn {url}: {s.workers} workers, {worker}; models {model_dir}\n"
        f"wrk: {args.connections} connections, {args.wrk_threads} thread(s), "
        f"{args.duration}s x {args.rounds} rounds per scenario; {os.cpu_count()} CPUs"
    )


def _report(results: dict[str, list[Result]], check: bool) -> int:
    med = {
        name: Result(
            *(
                statistics.median(getattr(r, f) for r in runs)
                for f in ("rps", "p50_ms", "p99_ms", "errors", "cpu_us")
            )
        )
        for name, runs in results.items()
    }
    floor = med["floor"].rps
    print(
        f"\n{'scenario':<12} {'req/s':>9} {'images/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'x floor':>8} {'CPU us/req':>11} {'errors':>7}   "
        f"(median of {len(results['floor'])} runs)"
    )
    for scenario in SCENARIOS:
        if scenario.name not in med:
            continue
        r = med[scenario.name]
        print(
            f"{scenario.name:<12} {r.rps:>9,.0f} {r.rps * scenario.images:>10,.0f} "
            f"{r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.rps / floor:>8.2f} {r.cpu_us:>11,.0f} "
            f"{r.errors:>7.0f}"
        )
    if "parse-100" in med and "predict-100" in med:
        steps = ["floor-100", *(f"{step}-100" for step in STAGES), "predict-100"]
        names = [name for name in steps if name in med]
        print("\nserver CPU each step adds to a 100-image JSON batch (us/request):")
        for before, after in itertools.pairwise(names):
            added = med[after].cpu_us - med[before].cpu_us
            print(f"  {after.removesuffix('-100'):<10} {added:>+8,.0f}")
        print(
            f"predict-100 keeps {med['predict-100'].rps / med['parse-100'].rps:.2f}x of parse-100's "
            "req/s (simdjson alone, nothing checked: the floor of a JSON batch on this stack)"
        )
    targets = []
    if "predict-1" in med:
        one = med["predict-1"]
        targets += [
            (f"predict-1 >= {PREDICT_FLOOR_RATIO}x floor", one.rps / floor >= PREDICT_FLOOR_RATIO),
            (f"predict-1 p99 <= {PREDICT_P99_MS} ms", one.p99_ms <= PREDICT_P99_MS),
            (
                f"predict-1 p99 <= {PREDICT_P99_FLOOR_RATIO}x the floor's p99 "
                f"(got {one.p99_ms / med['floor'].p99_ms:.2f}x)",
                one.p99_ms <= PREDICT_P99_FLOOR_RATIO * med["floor"].p99_ms,
            ),
        ]
        if "v2-1" in med:
            ratio = med["v2-1"].rps / one.rps
            targets.append((f"v2-1 >= {V2_V1_RATIO}x predict-1 (got {ratio:.2f}x)", ratio >= V2_V1_RATIO))
        if "explain-1" in med:
            ratio = med["explain-1"].rps / one.rps
            targets.append(
                (
                    f"explain-1 >= {EXPLAIN_PREDICT_RATIO}x predict-1 (got {ratio:.2f}x)",
                    ratio >= EXPLAIN_PREDICT_RATIO,
                )
            )
    if "predict-100" in med:
        targets.append(
            (
                f"predict-100 >= {BATCH_IMAGES_PER_S:,} images/s",
                med["predict-100"].rps * BATCH >= BATCH_IMAGES_PER_S,
            )
        )
        ratio = med["predict-100"].rps / floor
        targets.append(
            (f"predict-100 >= {BATCH_FLOOR_RATIO}x floor (got {ratio:.2f}x)", ratio >= BATCH_FLOOR_RATIO)
        )
    if "png-28" in med:
        targets.append((f"png-28 >= {PNG_FLOOR_RATIO}x floor", med["png-28"].rps / floor >= PNG_FLOOR_RATIO))
    targets.append(("no errors", all(r.errors == 0 for r in med.values())))
    print()
    for text, ok in targets:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return 1 if check and not all(ok for _, ok in targets) else 0


if __name__ == "__main__":
    sys.exit(main())
