"""Service settings: one frozen dataclass, built once from environment variables and checked.

Variable names are the plain, conventional ones (``PORT`` and ``WEB_CONCURRENCY`` are what
container platforms set). A bad value raises ``SettingsError`` whose message is one line naming
the variable, so start-up fails before the first request instead of on it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from dataclasses import field as dataclass_field
from functools import cached_property
from pathlib import Path
from typing import Any

from service.errors import StartupError

MIB = 1024 * 1024
#: Environment variable for each setting (the dataclass field of the same meaning).
ENV_NAMES = {
    "model_dir": "MODEL_DIR",
    "default_model": "DEFAULT_MODEL",
    "host": "HOST",
    "port": "PORT",
    "grpc_port": "GRPC_PORT",
    "workers": "WEB_CONCURRENCY",
    "threads": "WORKER_THREADS",
    "timeout": "TIMEOUT",
    "graceful_timeout": "GRACEFUL_TIMEOUT",
    "max_batch_size": "MAX_BATCH_SIZE",
    "max_request_bytes": "MAX_REQUEST_BYTES",
    "max_image_pixels": "MAX_IMAGE_PIXELS",
    "access_log": "ACCESS_LOG",
    "bench_noop": "BENCH_NOOP",
    "model_poll_seconds": "MODEL_POLL_SECONDS",
    "auth_token": "AUTH_TOKEN",
    "auth_token_file": "AUTH_TOKEN_FILE",
    "cors_origins": "CORS_ORIGINS",
    "feedback_dir": "FEEDBACK_DIR",
    "feedback_max_files": "FEEDBACK_MAX_FILES",
    "feedback_max_bytes": "FEEDBACK_MAX_BYTES",
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
#: What an Authorization header can carry: visible ASCII, no spaces.
_TOKEN = re.compile(r"[\x21-\x7e]+")
#: An origin as browsers send it: scheme, host and optional port, no path.
_ORIGIN = re.compile(r"https?://[^\s/?#]+")


class SettingsError(StartupError):
    """A setting is missing its meaning: the message names the variable and the bad value."""


@dataclass(frozen=True)
class Settings:
    """Everything the service and its gunicorn configuration read from the environment."""

    model_dir: Path = Path("models")
    default_model: str = "mnist"
    #: Loopback: `make serve` stays off the network. HOST=0.0.0.0 listens on all interfaces,
    #: as a container must; the API image and docker-compose.yml set it themselves.
    host: str = "127.0.0.1"
    port: int = 8000
    #: The Open Inference Protocol over gRPC (``service/grpc_server.py``), on HOST; 0: off.
    grpc_port: int = 8081
    workers: int = 2
    #: 1 runs gunicorn's sync worker; more runs gthread with this many threads per worker.
    threads: int = 1
    timeout: int = 30
    graceful_timeout: int = 10
    max_batch_size: int = 1000
    max_request_bytes: int = 16 * MIB
    #: Width x height above which an image is refused with 413 before it is decoded.
    max_image_pixels: int = 4096 * 4096
    access_log: bool = False
    #: Adds POST /_bench/noop, the framework floor that bench/serve_load.sh measures against.
    bench_noop: bool = False
    #: Seconds between each worker's checks of MODEL_DIR for new, changed or removed model
    #: files (``service/reload.py``); 0 turns polling off.
    model_poll_seconds: float = 2.0
    #: The bearer token that inference and model routes need, and admin routes always need
    #: (``service/auth.py``); None leaves them open. Kept out of the repr.
    auth_token: str | None = dataclass_field(default=None, repr=False)
    #: A file holding the token instead (a mounted secret); set one of the two, not both.
    auth_token_file: Path | None = None
    #: Origins whose pages may call the API from a browser (CORS), or "*" for any; empty: off.
    cors_origins: tuple[str, ...] = ()
    #: Where ``POST .../feedback`` stores corrections (``service/feedback_store.py``); None: off.
    feedback_dir: Path | None = None
    #: The quota of that directory, over every model: image files, and their bytes.
    feedback_max_files: int = 100_000
    feedback_max_bytes: int = 1024 * MIB

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_dir", Path(self.model_dir))
        if not self.default_model or "/" in self.default_model:
            raise SettingsError(f"DEFAULT_MODEL must be a model name, got {self.default_model!r}")
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"PORT must be in [0, 65535], got {self.port}")
        if not 0 <= self.grpc_port <= 65535:
            raise SettingsError(f"GRPC_PORT must be in [0, 65535] (0: no gRPC), got {self.grpc_port}")
        if self.grpc_port and self.grpc_port == self.port:
            raise SettingsError(f"GRPC_PORT must differ from PORT ({self.port}), or be 0 for no gRPC")
        for name in (
            "workers",
            "threads",
            "timeout",
            "graceful_timeout",
            "max_batch_size",
            "max_request_bytes",
            "max_image_pixels",
            "feedback_max_files",
            "feedback_max_bytes",
        ):
            value = getattr(self, name)
            if value < 1:
                raise SettingsError(f"{ENV_NAMES[name]} must be a positive integer, got {value}")
        if not 0 <= self.model_poll_seconds < float("inf"):
            raise SettingsError(
                f"MODEL_POLL_SECONDS must be a number >= 0 (0: off), got {self.model_poll_seconds}"
            )
        if self.auth_token_file is not None:
            object.__setattr__(self, "auth_token_file", Path(self.auth_token_file))
        if self.feedback_dir is not None:
            object.__setattr__(self, "feedback_dir", Path(self.feedback_dir))
            if self.feedback_dir.exists() and not self.feedback_dir.is_dir():
                raise SettingsError(f"FEEDBACK_DIR {self.feedback_dir} is not a directory")
        object.__setattr__(self, "cors_origins", tuple(map(_origin, self.cors_origins)))
        _ = self.token  # read and checked now: a bad token stops start-up, not a request

    @cached_property
    def token(self) -> str | None:
        """The bearer token: ``AUTH_TOKEN``, or what ``AUTH_TOKEN_FILE`` holds (whitespace around
        it, such as the file's last newline, dropped); None if neither is set."""
        if self.auth_token is not None and self.auth_token_file is not None:
            raise SettingsError("set AUTH_TOKEN or AUTH_TOKEN_FILE, not both")
        if self.auth_token_file is not None:
            name = "AUTH_TOKEN_FILE"
            try:
                token = self.auth_token_file.read_bytes().decode("latin-1").strip()
            except OSError as exc:
                raise SettingsError(
                    f"{name} {self.auth_token_file}: cannot read it ({exc.strerror})"
                ) from None
        elif self.auth_token is not None:
            name, token = "AUTH_TOKEN", self.auth_token
        else:
            return None
        if not token:
            raise SettingsError(f"{name} is empty: set a token, or unset it to leave the API open")
        if not _TOKEN.fullmatch(token):
            raise SettingsError(
                f"{name} must be printable ASCII without spaces, e.g. the output of `openssl rand -hex 32`"
            )
        return token

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``environ`` (default ``os.environ``); unset variables keep defaults."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in fields(cls):
            env_name = ENV_NAMES[field.name]
            raw = environ.get(env_name)
            if raw is None:
                continue
            default = field.default
            if isinstance(default, bool):
                values[field.name] = _parse_bool(env_name, raw)
            elif isinstance(default, int):
                values[field.name] = _parse_int(env_name, raw)
            elif isinstance(default, float):
                values[field.name] = _parse_float(env_name, raw)
            elif isinstance(default, tuple):  # comma-separated; empty: none
                values[field.name] = tuple(item for item in raw.split(",") if item.strip())
            elif raw.strip():
                values[field.name] = raw.strip()
            else:
                raise SettingsError(f"{env_name} is set but empty")
        return cls(**values)


def _origin(value: str) -> str:
    origin = value.strip().lower()
    if origin != "*" and not _ORIGIN.fullmatch(origin):
        raise SettingsError(
            f"CORS_ORIGINS: {value.strip()!r} is not an origin such as "
            "https://app.example.com (scheme, host, port; no path) or *"
        )
    return origin


def _parse_int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None


def _parse_float(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{name} must be one of 1/0, true/false, yes/no, on/off; got {raw!r}")
