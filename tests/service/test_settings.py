"""Settings from the environment: defaults, parsing, and one-line errors."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from service.errors import StartupError
from service.settings import ENV_NAMES, MIB, Settings, SettingsError


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s == Settings()
    assert (s.model_dir, s.default_model, s.host, s.port) == (Path("models"), "mnist", "127.0.0.1", 8000)
    assert (s.max_batch_size, s.max_request_bytes, s.workers, s.threads) == (1000, 16 * MIB, 2, 1)
    assert not s.bench_noop and not s.access_log


def test_every_field_has_an_environment_variable() -> None:
    from dataclasses import fields

    assert {f.name for f in fields(Settings)} == set(ENV_NAMES)


def test_values_from_the_environment() -> None:
    s = Settings.from_env(
        {
            "MODEL_DIR": "/srv/models",
            "DEFAULT_MODEL": "fashion-mnist",
            "PORT": "9000",
            "WEB_CONCURRENCY": "4",
            "WORKER_THREADS": "8",
            "MAX_BATCH_SIZE": "64",
            "MAX_REQUEST_BYTES": "1_048_576",
            "BENCH_NOOP": "yes",
            "ACCESS_LOG": "0",
            "UNRELATED": "ignored",
        }
    )
    assert s.model_dir == Path("/srv/models") and s.default_model == "fashion-mnist"
    assert (s.port, s.workers, s.threads, s.max_batch_size) == (9000, 4, 8, 64)
    assert s.max_request_bytes == MIB
    assert s.bench_noop is True and s.access_log is False


def test_settings_are_frozen() -> None:
    with pytest.raises(FrozenInstanceError):
        Settings().port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "env,message",
    [
        ({"PORT": "eighty"}, "PORT must be an integer, got 'eighty'"),
        ({"PORT": "70000"}, "PORT must be in [0, 65535], got 70000"),
        ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY must be a positive integer, got 0"),
        ({"MAX_BATCH_SIZE": "-5"}, "MAX_BATCH_SIZE must be a positive integer, got -5"),
        ({"MAX_REQUEST_BYTES": "16M"}, "MAX_REQUEST_BYTES must be an integer, got '16M'"),
        ({"BENCH_NOOP": "maybe"}, "BENCH_NOOP must be one of"),
        ({"MODEL_DIR": "  "}, "MODEL_DIR is set but empty"),
        ({"DEFAULT_MODEL": "a/b"}, "DEFAULT_MODEL must be a model name, got 'a/b'"),
    ],
)
def test_bad_values_fail_with_one_line_naming_the_variable(env: dict, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    text = str(info.value)
    assert text.startswith(message)
    assert "\n" not in text
    assert isinstance(info.value, StartupError)
