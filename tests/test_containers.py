"""What the container files say for themselves: the service binds 127.0.0.1 unless told otherwise,
so the API image and the compose file must set HOST=0.0.0.0 (a published port cannot reach
loopback inside a container). Parsed from the files; no container is started."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_the_service_defaults_to_loopback() -> None:
    assert Settings().host == Settings.from_env({}).host == "127.0.0.1"


def _stage_env(dockerfile: str, stage: str) -> dict[str, str]:
    """The ENV values set in one stage of a Dockerfile (``ENV K=V`` lines, continuations joined)."""
    text = re.sub(r"\\\n\s*", " ", dockerfile)
    env: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["FROM"]:
            current = words[-1] if "AS" in words else None
        elif words[:1] == ["ENV"] and current == stage:
            env.update(word.split("=", 1) for word in words[1:] if "=" in word)
    return env


def test_the_api_image_listens_on_all_interfaces() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert _stage_env(dockerfile, "api").get("HOST") == "0.0.0.0"
    assert "HOST" not in _stage_env(dockerfile, "runtime")  # the train image serves nothing


def test_compose_sets_host_for_the_api() -> None:
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["api"]["environment"]["HOST"] == "0.0.0.0"
