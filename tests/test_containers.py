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


def _run_commands(dockerfile: str) -> dict[str, list[str]]:
    """{stage: its RUN commands}, continuations joined."""
    text = re.sub(r"\\\n\s*", " ", dockerfile)
    runs: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["FROM"]:
            current = words[-1] if "AS" in words else ""
        elif words[:1] == ["RUN"]:
            runs.setdefault(current, []).append(line)
    return runs


def test_the_images_install_their_locks_with_every_hash_checked() -> None:
    """Every package an image gets comes from a lock file with --require-hashes; the one thing
    installed otherwise is the project's own wheel, built in the same build, without dependencies."""
    runs = _run_commands((ROOT / "Dockerfile").read_text())
    installs = [
        (stage, part.strip())
        for stage, commands in runs.items()
        for command in commands
        for part in command.split("&&")
        if re.search(r"\b(pip|uv pip) install\b", part)
    ]
    assert installs
    for stage, command in installs:
        if "--requirement" in command:
            assert "--require-hashes" in command, (stage, command)
            assert "--only-binary :all:" in command, (stage, command)
        else:  # the project's wheel from the wheel stage: nothing from an index, nothing else
            assert "--no-index" in command and "--no-deps" in command and "/wheels/" in command, command
    locks = {stage: re.findall(r"requirements/\w+\.txt", " ".join(runs[stage])) for stage in runs}
    assert locks["venv-api"] == ["requirements/serve.txt"]
    assert locks["venv-train"] == ["requirements/train.txt"]
    assert locks["builder"] == ["requirements/bootstrap.txt"]
