"""gunicorn configuration: `gunicorn -c gunicorn.conf.py` serves service.wsgi:app.

Every value comes from service.settings.Settings (environment variables: PORT, HOST,
WEB_CONCURRENCY, WORKER_THREADS, TIMEOUT, GRACEFUL_TIMEOUT, ACCESS_LOG, ...). A bad setting or
model file stops start-up with one line on stderr and a non-zero exit status.
"""

import os
import sys

# One BLAS thread per worker: the workers already use every core, and OpenBLAS threads fighting
# over them made a batch forward pass several times slower. Must be set before numpy loads.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

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
worker_class = "gthread" if settings.threads > 1 else "sync"
timeout = settings.timeout
graceful_timeout = settings.graceful_timeout
keepalive = 5
accesslog = "-" if settings.access_log else None
errorlog = "-"
loglevel = "info"


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
