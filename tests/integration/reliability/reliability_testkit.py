"""Helpers for the reliability tests: small random-weight models, a real gunicorn on a loopback
port (on ``gunicorn_testkit``'s helpers), and its workers' memory. The model directory they
serve is the ``model_dir`` fixture of this directory's conftest.py.

Every request these tests make goes to a server they started on 127.0.0.1.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gunicorn_testkit import gunicorn, stop, wait_ready
from service_testkit import DIGITS

from training import TwoLayerNet, save_model

#: The bearer token of the servers here: the API's auth is on, as production should have it.
TOKEN = "reliability-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HIDDEN = 32


def write_model(
    path: Path, seed: int, classes: list[str] = DIGITS, input_shape: tuple[int, ...] = (28, 28)
) -> None:
    """A 784-32-C float32 model with random weights: what these tests check does not depend
    on what the model knows."""
    net = TwoLayerNet(
        784, HIDDEN, len(classes), weight_init_std="xavier", rng=np.random.default_rng(seed), dtype=np.float32
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(
        path, net, {"input_shape": list(input_shape), "class_names": classes, "dataset": {"name": "random"}}
    )


def server_environment(model_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "MODEL_DIR": str(model_dir),
        "DEFAULT_MODEL": "mnist",
        "WEB_CONCURRENCY": "2",
        "AUTH_TOKEN": TOKEN,
        "ACCESS_LOG": "0",
        **extra,
    }


@dataclass
class Server:
    """A running gunicorn: its URL, port, master process and log."""

    url: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def master(self) -> int:
        return self.proc.pid

    def workers(self) -> list[int]:
        """The master's child processes: its workers."""
        return worker_pids(self.master)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def worker_pids(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children")
    try:
        return sorted(int(pid) for pid in children.read_text().split())
    except FileNotFoundError:
        return []


def rss_kib(pid: int) -> int:
    """Resident memory of a process (``VmRSS`` in ``/proc/<pid>/status``), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def serve(env: dict[str, str], log: Path) -> Iterator[Server]:
    """gunicorn with ``env`` until the generator is closed; no traceback in its log, exit 0."""
    try:
        yield from serve_unchecked(env, log)
    finally:
        assert "Traceback" not in log.read_text(errors="replace")


def serve_unchecked(env: dict[str, str], log: Path) -> Iterator[Server]:
    """``serve`` for servers whose workers get killed on purpose (their log has the reason)."""
    proc = gunicorn(env, log)
    try:
        url = wait_ready(proc, log)
        yield Server(url=url, port=int(url.rsplit(":", 1)[1]), proc=proc, log=log)
    finally:
        if proc.poll() is None:
            assert stop(proc) == 0, log.read_text()
