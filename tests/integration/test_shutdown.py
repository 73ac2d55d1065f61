"""SIGTERM drains: requests in flight when gunicorn's master gets SIGTERM are answered in full,
no new request is taken, and the master exits 0 within GRACEFUL_TIMEOUT.

"In flight" is made certain rather than hoped for: the test waits until the listening socket's
accept queue is empty (``/proc/net/tcp``), i.e. until a worker holds every connection, before
sending SIGTERM. Half the connections have sent half their body by then; the other half have
sent nothing and send their whole request only after ``LATE_SEND`` seconds. gunicorn 23's
gthread worker closed such accepted connections unanswered when its loop stopped (at most a
second after SIGTERM); the CI run that caught it is the reason the late half exists.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from gunicorn_testkit import gunicorn, wait_ready
from service_testkit import TEST_MAX_BATCH

PROC_NET_TCP = Path("/proc/net/tcp")
GRACEFUL_TIMEOUT = 10
#: Seconds after SIGTERM before the connections that sent nothing send their request: longer
#: than one turn (1 s) of a worker's event loop, so a worker that stops at its next turn has.
LATE_SEND = 1.5
TCP_LISTEN = "0A"

pytestmark = pytest.mark.skipif(
    not PROC_NET_TCP.exists(), reason="needs Linux's /proc/net/tcp to see the accept queue"
)


def accept_queue(port: int) -> int:
    """Connections waiting in the accept queue of the socket listening on ``port``."""
    for line in PROC_NET_TCP.read_text().splitlines()[1:]:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        if state == TCP_LISTEN and int(local.split(":")[1], 16) == port:
            return int(queues.split(":")[1], 16)
    raise AssertionError(f"nothing listens on port {port}")


def wait_all_accepted(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while accept_queue(port):
        assert time.monotonic() < deadline, "the workers did not take every connection"
        time.sleep(0.02)


def predict_request(port: int, body: bytes) -> bytes:
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    return head + body


def start_request(port: int, request: bytes, sent: int) -> socket.socket:
    """A connection that has sent the first ``sent`` bytes of ``request``: in flight until the
    rest is sent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(request[:sent])
    return sock


def finish_request(sock: socket.socket, request: bytes, sent: int) -> tuple[int, dict[str, object]]:
    with sock:
        sock.sendall(request[sent:])
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    assert response, f"connection closed unanswered ({sent} bytes sent before SIGTERM)"
    head, _, payload = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


@pytest.mark.parametrize("threads,in_flight", [(1, 2), (3, 6)], ids=["sync", "gthread"])
def test_sigterm_drains_requests_in_flight(
    server_env: dict[str, str],
    tmp_path: Path,
    threads: int,
    in_flight: int,
) -> None:
    log = tmp_path / "gunicorn.log"
    proc = gunicorn(
        {**server_env, "WORKER_THREADS": str(threads), "GRACEFUL_TIMEOUT": str(GRACEFUL_TIMEOUT)}, log
    )
    try:
        url = wait_ready(proc, log)
        port = int(url.rsplit(":", 1)[1])
        deadline = time.monotonic() + 10
        while log.read_text().count("Booting worker") < 2:  # both workers up, not just one
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        for _ in range(4):  # and serving (a worker answers once it has loaded the models)
            assert requests.get(f"{url}/readyz", timeout=5).status_code == 200
        batch = np.random.default_rng(0).random((TEST_MAX_BATCH, 784)).round(4).tolist()
        body = json.dumps({"inputs": batch}).encode()
        expected = requests.post(
            f"{url}/predict", data=body, timeout=10, headers={"Content-Type": "application/json"}
        ).json()

        request = predict_request(port, body)
        # alternately: half the body sent (a worker is reading it), and nothing sent yet
        cuts = [len(request) - len(body) // 2 if i % 2 == 0 else 0 for i in range(in_flight)]
        socks = [start_request(port, request, cut) for cut in cuts]
        wait_all_accepted(port)
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        time.sleep(0.5)  # every worker has the signal: from here on nothing new is served

        late: list[BaseException | int] = []

        def try_a_new_request() -> None:
            try:
                late.append(
                    requests.post(
                        f"{url}/predict",
                        data=body,
                        timeout=GRACEFUL_TIMEOUT,
                        headers={"Content-Type": "application/json"},
                    ).status_code
                )
            except requests.ConnectionError as exc:
                late.append(exc)

        newcomer = threading.Thread(target=try_a_new_request)
        newcomer.start()
        time.sleep(LATE_SEND - 0.5)
        answers = [finish_request(sock, request, cut) for sock, cut in zip(socks, cuts, strict=True)]
        code = proc.wait(timeout=GRACEFUL_TIMEOUT + 5)
        took = time.monotonic() - signalled
        newcomer.join(timeout=GRACEFUL_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log.read_text()
    assert all(status == 200 for status, _ in answers), answers
    assert all(answer == expected for _, answer in answers)
    assert code == 0, output
    assert took < GRACEFUL_TIMEOUT, output
    assert "Shutting down: Master" in output
    assert "Traceback" not in output
    assert len(late) == 1 and isinstance(late[0], requests.ConnectionError), late
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
