"""The WSGI entry point: ``gunicorn -c gunicorn.conf.py service.wsgi:app``.

A bad setting or model prints one line and exits with status 4, which gunicorn's arbiter reads
as "App failed to load" and stops, instead of restarting the worker forever.
"""

import sys

from service import StartupError, create_app

#: gunicorn's APP_LOAD_ERROR exit status for a worker.
APP_LOAD_ERROR = 4

try:
    app = create_app(strict=False)  # the master has checked every file strictly
except StartupError as exc:
    print(f"error: {exc}", file=sys.stderr, flush=True)
    sys.exit(APP_LOAD_ERROR)
