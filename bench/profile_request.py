"""Where a request's time goes inside the app: one JSON body, in process, no HTTP.

Builds the app as gunicorn does (``BENCH_NOOP=1``, the models in ``--model-dir``), calls it with
the same body that ``bench/serve_load.py`` sends, in a WSGI environ like the one gunicorn's sync
worker builds (``wsgi.input_terminated`` included, so the body is read as under gunicorn), and
prints the mean microseconds per request of the no-op floor and of ``/predict`` (or
``--path``; interleaved, best of the rounds), then a cProfile of it sorted by the time spent in
each function itself. (Flask's test client would cost several times the app itself: building its environ.)

    python bench/profile_request.py                 # the 100-digit batch (predict-100)
    python bench/profile_request.py --body one      # one digit (predict-1)
    python bench/profile_request.py --body one --path /explain   # why that digit (explain-1)

What it leaves out is what ``serve_load.py``'s floor-100 row measures: gunicorn receiving the
body over a socket. One BLAS thread, as in gunicorn.conf.py.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as gunicorn.conf.py, before numpy loads

import argparse  # noqa: E402
import cProfile  # noqa: E402
import io  # noqa: E402
import pstats  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import orjson  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from serve_load import BATCH, _digits  # noqa: E402

from service import StartupError, create_app  # noqa: E402
from service.settings import Settings  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--body", choices=("batch", "one"), default="batch")
    parser.add_argument("--requests", type=int, default=300, help="requests per timing round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model-dir", type=Path, default=REPO / "models")
    parser.add_argument("--top", type=int, default=15, help="functions in the profile")
    parser.add_argument(
        "--path", default="/predict", help="the route to time and profile (/predict, /explain, ...)"
    )
    args = parser.parse_args(argv)
    if args.requests < 1 or args.rounds < 1:
        parser.error("--requests and --rounds must be at least 1")

    pixels = _digits().reshape(BATCH, -1) / 255.0  # what a numpy client sends: x / 255
    body = orjson.dumps({"inputs": (pixels if args.body == "batch" else pixels[:1]).tolist()})
    try:
        app = create_app(Settings.from_env({"MODEL_DIR": str(args.model_dir), "BENCH_NOOP": "1"}))
    except StartupError as exc:
        sys.exit(f"error: {exc}")

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: object = None) -> None:
        if not status.startswith("200"):
            sys.exit(f"error: the app answered {status}")

    def run(path: str) -> float:
        started = time.perf_counter()
        for _ in range(args.requests):
            answer = app(_environ(path, body), start_response)
            b"".join(answer)
            answer.close()  # type: ignore[attr-defined]
        return (time.perf_counter() - started) / args.requests * 1e6

    best = {"/_bench/noop": float("inf"), args.path: float("inf")}
    for _ in range(args.rounds):
        for path in best:
            best[path] = min(best[path], run(path))
    print(f"body: {args.body}, {len(body):,} bytes; best of {args.rounds} rounds of {args.requests} requests")
    print(f"no-op floor {best['/_bench/noop']:8.0f} us/request")
    print(f"{args.path:<11} {best[args.path]:8.0f} us/request\n")

    profile = cProfile.Profile()
    profile.enable()
    run(args.path)
    profile.disable()
    pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)
    return 0


def _environ(path: str, body: bytes) -> dict[str, object]:
    """A POST of ``body`` to ``path`` as gunicorn's sync worker presents it to the app."""
    return {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "RAW_URI": path,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "40000",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "wrk",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.input_terminated": True,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


if __name__ == "__main__":
    sys.exit(main())
