"""A real gunicorn on a loopback port, for the integration tests: start it with the repo's
gunicorn.conf.py, wait until it is ready, stop it with SIGTERM, or watch it refuse to start."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "gunicorn.conf.py"
START_TIMEOUT = 30.0
LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")


def gunicorn(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """gunicorn with the repo's config on an ephemeral loopback port (bound by gunicorn: no race)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(CONF), "--bind", "127.0.0.1:0"],
            cwd=REPO,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def failed_start(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str, list[str]]:
    """Start gunicorn expecting it to refuse: (process, its output, the ``error:`` lines)."""
    proc = gunicorn(env, log)
    try:
        code = proc.wait(timeout=START_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = log.read_text()
    assert code != 0, output
    return proc, output, [ln for ln in output.splitlines() if ln.startswith("error:")]


def wait_ready(proc: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + START_TIMEOUT
    url = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"gunicorn exited with {proc.returncode}:\n{log.read_text()}")
        if url is None and (match := LISTENING.search(log.read_text())):
            url = f"http://127.0.0.1:{match.group(1)}"
        if url is not None:
            try:
                if requests.get(f"{url}/readyz", timeout=1).status_code == 200:
                    return url
            except (requests.ConnectionError, requests.Timeout):  # not yet, or a loaded machine
                pass
        time.sleep(0.1)
    pytest.fail(f"gunicorn not ready after {START_TIMEOUT}s:\n{log.read_text()}")


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
