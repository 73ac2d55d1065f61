"""gunicorn configuration: `gunicorn -c gunicorn.conf.py` serves service.wsgi:app.

Every value comes from service.settings.Settings (environment variables: PORT, HOST,
WEB_CONCURRENCY, WORKER_THREADS, TIMEOUT, GRACEFUL_TIMEOUT, ACCESS_LOG, ...). A bad setting or
model file stops start-up with one line on stderr and a non-zero exit status.
"""

import atexit
import ctypes
import os
import shutil
import sys
import tempfile
from pathlib import Path

# One BLAS thread per worker: the workers already use every core, and OpenBLAS threads fighting
# over them made a batch forward pass several times slower. Must be set before numpy loads.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

# /metrics adds up every worker's numbers (prometheus_client's multiprocess mode): each process
# writes its values to files in PROMETHEUS_MULTIPROC_DIR, which must be set before
# prometheus_client is imported. Unset: a new temporary directory, removed when the master
# exits, however it exits (a failed start too). Either way it is emptied at start (on_starting).
# (On HUP this file is read again: the variable is set by then.)
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir = tempfile.mkdtemp(
        prefix=f"digits-metrics-{os.getpid()}-")
    _master_pid = os.getpid()
    # workers inherit this handler and run it too when they exit: only the master removes
    atexit.register(lambda: os.getpid() == _master_pid and shutil.rmtree(_metrics_dir, True))

from service.errors import StartupError  # noqa: E402
from service.settings import Settings  # noqa: E402

try:
    settings = Settings.from_env()
except StartupError as _exc:
    sys.exit(f"error: {_exc}")

wsgi_app = "service.wsgi:app"
bind = [f"{settings.host}:{settings.port}"]
workers = settings.workers
threads = settings.threads
# sync when one thread per worker: measured faster for this CPU-bound app (see bench/);
# gthread when WORKER_THREADS > 1, e.g. behind a proxy that keeps connections alive.
# (gunicorn's own workers, whose answers to requests it cannot parse are in the API's JSON
# error shape: service/workers.py)
worker_class = "service.workers.ThreadWorker" if settings.threads > 1 else "service.workers.SyncWorker"
timeout = settings.timeout
graceful_timeout = settings.graceful_timeout
keepalive = 5
accesslog = "-" if settings.access_log else None
errorlog = "-"
loglevel = "info"
# JSON lines: gunicorn's error log, the app's logs and (ACCESS_LOG=1) the access log, each line
# with the request id of its request (service/logs.py)
logger_class = "service.logs.GunicornLogger"
# gunicorn 25+ opens a control socket (gunicornc: add workers, reload, stop) by default: an admin
# door without our auth, and one shared path for every server a user runs. Off.
control_socket_disable = True


def _reuse_freed_memory(mmap_threshold=16 * 1024 * 1024, trim_threshold=64 * 1024 * 1024):
    """Let glibc's malloc keep freed blocks of up to 16 MiB for reuse (set before the fork).

    By default every block over 128 KiB is a fresh mmap, given back on free: each batch
    request's body, parse buffers and arrays then arrive as new pages, and the page faults
    cost about as much CPU as receiving the body. MALLOC_MMAP_THRESHOLD_ in the environment,
    if set, wins; elsewhere than glibc this does nothing.
    """
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt parameters, from <malloc.h>
    libc.mallopt(m_mmap_threshold, mmap_threshold)
    libc.mallopt(m_trim_threshold, trim_threshold)


_reuse_freed_memory()


def on_starting(server):  # noqa: ARG001 - gunicorn's hook signature
    """Load and check the models once in the master, before binding: one line if they are bad.

    Done here rather than at the top of this file because gunicorn re-reads this file on HUP,
    and a bad model then must not kill the running master.
    """
    from service import create_app

    try:
        create_app(settings)
    except StartupError as exc:
        sys.exit(f"error: {exc}")
    _check_grpc_port()
    # after the check, which counted its model loads: only the workers' numbers are served
    for path in Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).glob("*.db"):
        path.unlink()


def _check_grpc_port():
    """GRPC_PORT must be free: each worker binds it with SO_REUSEPORT (service/grpc_server.py),
    which would quietly share it with another server of the same user. The master never imports
    gRPC (it forks), so a plain socket checks."""
    if not settings.grpc_port:
        return
    import socket

    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((settings.host.strip("[]"), settings.grpc_port))
        except OSError as exc:
            sys.exit(f"error: GRPC_PORT {settings.grpc_port} on {settings.host}: {exc.strerror} "
                     "(choose another port, or GRPC_PORT=0 for no gRPC)")


def post_worker_init(worker):
    """This worker's threads, started after the fork: one polls MODEL_DIR for new model files,
    one moves the request numbers into the metrics every second (service/metrics.py), and the
    gRPC server's (service/grpc_server.py) on GRPC_PORT, over this worker's app."""
    from service.metrics import start_flushing
    from service.reload import start_polling

    start_polling(worker.wsgi, master_pid=worker.ppid)
    start_flushing()
    if settings.grpc_port:
        from service import grpc_server

        try:
            grpc_server.start(worker.wsgi, settings)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            sys.exit(4)  # gunicorn's APP_LOAD_ERROR: the master stops instead of retrying


def worker_exit(server, worker):  # noqa: ARG001 - gunicorn's hook signature
    """A worker that stops (SIGHUP, SIGTERM): its gRPC calls in flight finish (half the
    graceful timeout at most; its HTTP requests have), and its last numbers still count."""
    from service.metrics import flush

    if settings.grpc_port:
        from service import grpc_server

        grpc_server.stop(grace=settings.graceful_timeout / 2)
    flush()


def child_exit(server, worker):  # noqa: ARG001 - gunicorn's hook signature
    """A worker is gone: its in-flight gauge must stop counting (its counters still do)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
