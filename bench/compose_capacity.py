"""Capacity through the proxy: docker-compose.yml with 1, 2 and 3 API replicas, driven with wrk.

For each replica count, brings the compose project up (``up -d --scale api=N``), waits until
every replica answers through the proxy, then runs each scenario with wrk against the proxy on
127.0.0.1, in rounds whose order rotates, and reports the medians, with how busy the machine's
CPUs were meanwhile (from /proc/stat: the containers, the proxy and wrk share them) and the CPU
time the API replicas and the proxy spent per request (their processes' utime + stime, read from
/proc on the host): 1 s / the API's CPU per request is what one core of API replicas can serve,
the figure to size replicas by, whatever else the machine was doing.

    predict-1    POST /predict                one MNIST digit, JSON
    predict-100  POST /predict                100 digits, JSON (0.5 MB)
    v2-bin-100   POST /v2/models/mnist/infer  the same 100 digits as one binary FP32 tensor

The bodies and the wrk script are bench/serve_load.py's. The images must be built (the names are
docker-compose.yml's, or API_IMAGE / PROXY_IMAGE); with podman, source podman-env.sh first:

    . ../shared/container/podman-env.sh
    .venv/bin/python bench/compose_capacity.py --compose podman-compose     # about 3 minutes
    .venv/bin/python bench/compose_capacity.py --replicas 1,2 --duration 10 --rounds 3

Needs wrk (``apt-get install -y wrk``) and docker compose or podman-compose. Exits 0 unless a
request failed (wrk counts non-2xx answers and socket errors).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serve_load  # noqa: E402  (bench/ is not a package: its bodies and wrk script)

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = tuple(s for s in serve_load.SCENARIOS if s.name in ("predict-1", "predict-100", "v2-bin-100"))
PROJECT = "digits-capacity"


@dataclass(frozen=True)
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_busy: float  # the machine's CPUs, busy fraction (1.0 = every core all the time)
    #: CPU time per request of the API replicas' processes (all of them) and of the proxy's:
    #: unlike req/s, barely moved by whatever else runs on the machine
    api_us: float
    proxy_us: float


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compose", default=os.environ.get("COMPOSE", "docker compose"), help="the command")
    parser.add_argument("--replicas", default="1,2,3", help="comma-separated replica counts")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--port", type=int, default=18290, help="the proxy's port on 127.0.0.1")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("error: wrk not found; install it with `apt-get install -y wrk`", file=sys.stderr)
        return 2
    compose = [*shlex.split(args.compose), "-p", PROJECT, "-f", str(REPO / "docker-compose.yml")]
    env = {**os.environ, "API_PORT": str(args.port), "API_BIND": "127.0.0.1"}
    url = f"http://127.0.0.1:{args.port}"
    results: dict[tuple[int, str], list[Run]] = {}
    counts = [int(n) for n in args.replicas.split(",")]
    print(
        f"wrk: {args.connections} connections, {args.duration}s x {args.rounds} rounds per scenario, "
        f"through the proxy at {url}; {os.cpu_count()} CPUs; load average {_load()}"
    )
    with tempfile.TemporaryDirectory(prefix="compose-capacity-") as tmp:
        work = Path(tmp)
        serve_load._write_bodies(work)
        try:
            for replicas in counts:
                _down(compose, env)
                _run(compose + ["up", "-d", "--scale", f"api={replicas}"], env)
                _wait(url, work, replicas)
                roots = _container_pids(compose, env)
                for round_ in range(args.rounds):
                    shift = round_ % len(SCENARIOS)
                    for scenario in SCENARIOS[shift:] + SCENARIOS[:shift]:
                        run = _wrk(url, scenario, work, args, roots=roots)
                        results.setdefault((replicas, scenario.name), []).append(run)
                        print(
                            f"  {replicas} replica(s) {scenario.name:<12} {run.rps:>8,.0f} req/s "
                            f"(machine CPU {run.cpu_busy:.0%}; CPU per request: API {run.api_us:,.0f} us, "
                            f"proxy {run.proxy_us:,.0f} us)",
                            flush=True,
                        )
        finally:
            _down(compose, env)
    print(f"\nload average at the end: {_load()} (other processes on this machine count in it)")
    return _report(results, counts)


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _run(command: list[str], env: dict[str, str]) -> None:
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        sys.exit(f"{shlex.join(command)} failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")


def _down(compose: list[str], env: dict[str, str]) -> None:
    subprocess.run(compose + ["down", "-t", "10"], env=env, capture_output=True, timeout=600)
    # podman-compose 1.6.0's `down` leaves replicas that `--scale` added: remove them by label
    if shutil.which("podman") and "podman" in compose[0]:
        names = subprocess.run(
            ["podman", "ps", "-a", "-q", "--filter", f"label=io.podman.compose.project={PROJECT}"],
            capture_output=True,
            text=True,
        ).stdout.split()
        if names:
            subprocess.run(["podman", "rm", "-f", "-t", "0", *names], capture_output=True)


def _wait(url: str, work: Path, replicas: int) -> None:
    """Until the proxy answers, then until a burst of predicts has gone to every replica's
    address (the proxy's DNS answers are cached 2 s), then a warm-up second of each scenario."""
    deadline = time.monotonic() + 120
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while time.monotonic() < deadline:
        try:
            with opener.open(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        time.sleep(0.5)
    else:
        sys.exit(f"the proxy at {url} did not answer /readyz within 120 s")
    time.sleep(5)  # the replicas that started last, and the proxy's next DNS lookup
    for scenario in SCENARIOS:
        serve_load._check_body(url, scenario, work)
        _wrk(url, scenario, work, argparse.Namespace(connections=4), duration=1)


def _container_pids(compose: list[str], env: dict[str, str]) -> dict[str, list[int]]:
    """{"api": [...], "proxy": [...]}: the host PIDs of each container's first process."""
    engine = "podman" if "podman" in compose[0] else "docker"
    roots: dict[str, list[int]] = {"api": [], "proxy": []}
    for service in roots:
        names = subprocess.run(
            [
                engine,
                "ps",
                "-q",
                "--filter",
                f"label=com.docker.compose.project={PROJECT}",
                "--filter",
                f"label=com.docker.compose.service={service}",
            ],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        ).stdout.split()
        for name in names:
            pid = subprocess.run(
                [engine, "inspect", "-f", "{{.State.Pid}}", name],
                capture_output=True,
                text=True,
                check=True,
                env=env,
            ).stdout.strip()
            roots[service].append(int(pid))
    return roots


def _tree_cpu_seconds(roots: list[int]) -> float:
    """utime + stime of these processes and all their descendants."""
    ticks, todo = 0, list(roots)
    while todo:
        pid = todo.pop()
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])
            for task in Path(f"/proc/{pid}/task").iterdir():
                todo += map(int, (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs so far, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _wrk(
    url: str,
    scenario: serve_load.Scenario,
    work: Path,
    args: argparse.Namespace,
    duration: int | None = None,
    roots: dict[str, list[int]] | None = None,
) -> Run:
    env = {
        **os.environ,
        "BENCH_BODY": str(work / scenario.body),
        "BENCH_CONTENT_TYPE": scenario.content_type,
        "BENCH_HEADER_LENGTH": (work / scenario.header_length).read_text() if scenario.header_length else "",
    }
    seconds = duration if duration is not None else args.duration
    roots = roots or {"api": [], "proxy": []}
    busy0, total0 = _cpu_jiffies()
    api0, proxy0 = _tree_cpu_seconds(roots["api"]), _tree_cpu_seconds(roots["proxy"])
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{args.connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(serve_load.LUA),
            url + scenario.path,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    busy1, total1 = _cpu_jiffies()
    api1, proxy1 = _tree_cpu_seconds(roots["api"]), _tree_cpu_seconds(roots["proxy"])
    fields = serve_load.wrk_fields(out)
    return Run(
        rps=fields["requests"] / (fields["duration_us"] / 1e6),
        p50_ms=fields["p50_us"] / 1000,
        p99_ms=fields["p99_us"] / 1000,
        errors=fields["bad_status"] + fields["socket_errors"],
        cpu_busy=(busy1 - busy0) / max(total1 - total0, 1),
        api_us=(api1 - api0) / max(fields["requests"], 1) * 1e6,
        proxy_us=(proxy1 - proxy0) / max(fields["requests"], 1) * 1e6,
    )


def _report(results: dict[tuple[int, str], list[Run]], counts: list[int]) -> int:
    print(
        f"\n{'replicas':>8} {'scenario':<12} {'req/s':>8} {'images/s':>9} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'CPU busy':>8} {'API us/req':>10} {'proxy us/req':>12} {'req/s/API core':>14} {'errors':>6}"
        "   (medians)"
    )
    failed = False
    for scenario in SCENARIOS:
        for replicas in counts:
            runs = results[(replicas, scenario.name)]
            rps = statistics.median(r.rps for r in runs)
            errors = sum(r.errors for r in runs)
            failed |= errors > 0
            api_us = statistics.median(r.api_us for r in runs)
            print(
                f"{replicas:>8} {scenario.name:<12} {rps:>8,.0f} {rps * scenario.images:>9,.0f} "
                f"{statistics.median(r.p50_ms for r in runs):>7.1f} "
                f"{statistics.median(r.p99_ms for r in runs):>7.1f} "
                f"{statistics.median(r.cpu_busy for r in runs):>8.0%} {api_us:>10,.0f} "
                f"{statistics.median(r.proxy_us for r in runs):>12,.0f} {1e6 / max(api_us, 1):>14,.0f} "
                f"{errors:>6}"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
