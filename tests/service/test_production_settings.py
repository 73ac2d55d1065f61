"""No debug mode in production, and no internals in a 500.

The service never calls ``app.run`` and has no debug setting: gunicorn serves ``create_app()``.
Flask would still turn debug on by itself when ``FLASK_DEBUG`` is in the environment, so
``create_app`` switches it off; these tests hold both.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from service import create_app
from service.settings import Settings

SERVICE = Path(__file__).resolve().parents[2] / "service"


def production_app(model_dir: Path) -> Flask:
    """The app as gunicorn builds it: settings from the environment, only MODEL_DIR given."""
    return create_app(Settings.from_env({"MODEL_DIR": str(model_dir)}))


def test_default_settings_are_not_debug(model_dir: Path) -> None:
    app = production_app(model_dir)
    assert app.debug is False and app.testing is False
    assert not app.config["PROPAGATE_EXCEPTIONS"]


@pytest.mark.parametrize("name", ["FLASK_DEBUG", "FLASK_ENV"])
def test_debug_in_the_environment_is_ignored(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Regression: FLASK_DEBUG=1 in the environment made ``app.debug`` True."""
    monkeypatch.setenv(name, "1" if name == "FLASK_DEBUG" else "development")
    monkeypatch.setenv("MODEL_DIR", str(model_dir))
    assert create_app().debug is False


def test_no_debug_switch_in_the_source() -> None:
    for path in SERVICE.rglob("*.py"):
        text = path.read_text()
        for needle in ("debug=True", "app.run(", "use_debugger", "use_reloader", "FLASK_ENV"):
            assert needle not in text, f"{path}: {needle}"


def test_unhandled_exception_is_the_json_500_without_a_traceback(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = production_app(model_dir)

    @app.post("/_test/bug")
    def bug() -> None:
        raise RuntimeError("internal detail: /srv/secret/path")

    response = app.test_client().post("/_test/bug", json={"inputs": [[0.0] * 784]})
    assert response.status_code == 500
    assert response.content_type == "application/json"
    assert response.get_json() == {
        "error": {"status": 500, "code": "internal_error", "message": "internal server error"}
    }
    text = response.get_data(as_text=True)
    for leak in ("Traceback", "RuntimeError", "internal detail", "/srv/secret", 'File "'):
        assert leak not in text
    assert "unhandled error" in caplog.text  # the operator still gets the traceback, in the log
