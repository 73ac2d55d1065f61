"""Integration tests: each starts a real process and waits on it: gunicorn on a loopback port,
headless Chromium, Triton's client against gunicorn, a training run SIGKILLed or signalled, a
bench script, the bounded soak, schemathesis. They take about nine tenths of ``make test``'s
time; a new test that does any of this belongs here.

Every test under this directory is marked ``integration`` by the hook below, so a new one cannot
miss it: ``make test-unit`` (``pytest -m "not integration"``) runs the unit tests alone, and
``make test`` runs both. The fixtures shared with the unit tests (``model_dir``, ``settings`` ->
``app`` -> ``client``, ...) are in tests/service_fixtures.py; gunicorn's helpers in
gunicorn_testkit.py here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from service_testkit import TEST_MAX_BATCH, TEST_MAX_REQUEST_BYTES

HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="module")
def server_env(model_dir: Path) -> dict[str, str]:
    """gunicorn's environment for the session's models, with the test client's limits."""
    return {
        "MODEL_DIR": str(model_dir),
        "DEFAULT_MODEL": "mnist",
        "MAX_BATCH_SIZE": str(TEST_MAX_BATCH),
        "MAX_REQUEST_BYTES": str(TEST_MAX_REQUEST_BYTES),
        "WEB_CONCURRENCY": "2",
    }
