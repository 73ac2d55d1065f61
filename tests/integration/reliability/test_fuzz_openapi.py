"""Schemathesis against a real gunicorn: every request generated from ``/openapi.json`` gets a
documented status and a body that matches the documented schema, and never a 5xx.

All of schemathesis's checks run but one: ``positive_data_acceptance`` expects every request
the document allows to succeed, and JSON Schema cannot say what the service rightly refuses with
a 4xx: exactly one of ``inputs`` and ``images``, as many labels as inputs, the input width of the
model named in the path. The phases: the document's examples, boundary values of each field
(coverage), random requests valid and invalid (fuzzing), and chains of calls (stateful). Auth is
on, so the ``ignored_auth`` check also sends each request without the token and with a wrong
one, and expects 401.

Bounded for CI (``FUZZ_MAX_EXAMPLES`` cases per operation and phase, default 10, fixed seed);
the long run is ``FUZZ_MAX_EXAMPLES=200`` with a random seed (``make fuzz``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from reliability_testkit import TOKEN, Server, serve, server_environment

CI_MAX_EXAMPLES = 10
CI_SEED = 0
#: The check that JSON Schema cannot satisfy here (see the module's docstring).
EXCLUDED_CHECKS = "positive_data_acceptance"
GENERATED = re.compile(r"(\d+) generated")
CONFIG = """
[dictionaries.versions]
values = {versions}

[parameters]
# the versions that exist, most of the time (else anything: 404)
"path.version" = {{ dictionary = "versions", probability = 0.8 }}

[checks.negative_data_rejection]
# a request that breaks the document must be refused: schemathesis's list of refusals, plus
# those of the HTTP server itself (413 body, 414 request line, 431 headers), which it leaves out
expected-statuses = [{rejections}]
"""
#: schemathesis's default refusals for negative_data_rejection, and the HTTP server's own.
REJECTIONS = [
    "400",
    "401",
    "403",
    "404",
    "405",
    "406",
    "409",
    "413",
    "414",
    "415",
    "422",
    "428",
    "429",
    "431",
    "5xx",
]


def schemathesis_cli() -> list[str]:
    """The CLI of the schemathesis installed beside this Python (the ``test`` extra)."""
    script = Path(sys.executable).with_name("schemathesis")
    if script.exists():
        return [str(script)]
    found = shutil.which("schemathesis")
    if found is None:
        pytest.skip("schemathesis is not installed: make test installs it")
    return [found]


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    feedback = tmp_path_factory.mktemp("fuzz-feedback")  # feedback on: its storing path is fuzzed too
    yield from serve(
        server_environment(model_dir, FEEDBACK_DIR=str(feedback)),
        tmp_path_factory.mktemp("fuzz") / "gunicorn.log",
    )


@pytest.mark.slow
def test_every_generated_request_gets_a_documented_answer(
    server: Server, model_dir: Path, tmp_path: Path
) -> None:
    max_examples = int(os.environ.get("FUZZ_MAX_EXAMPLES", CI_MAX_EXAMPLES))
    seed = os.environ.get("FUZZ_SEED", str(CI_SEED) if max_examples == CI_MAX_EXAMPLES else "")
    config = tmp_path / "schemathesis.toml"
    flat = hashlib.sha256((model_dir / "fashion-mnist.npz").read_bytes()).hexdigest()[:12]
    config.write_text(
        CONFIG.format(versions=json.dumps(["1", "2", flat]), rejections=json.dumps(REJECTIONS)[1:-1])
    )
    command = [
        *schemathesis_cli(),
        "--config-file",
        str(config),
        "run",
        f"{server.url}/openapi.json",
        "--checks",
        "all",
        "--exclude-checks",
        EXCLUDED_CHECKS,
        "--max-examples",
        str(max_examples),
        "--request-timeout",
        "30",
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--generation-database",
        "none",
        "--max-failures",
        "50",
        "--no-color",
        *(["--seed", seed] if seed else []),
    ]
    result = subprocess.run(
        command,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=3600,
        env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"},
    )
    output = result.stdout + result.stderr
    generated = GENERATED.findall(output)
    print(
        f"\nschemathesis: {generated[-1] if generated else '?'} cases generated "
        f"({max_examples} per operation and phase, seed {seed or 'random'}); "
        f"exit {result.returncode}\n" + output[-3000:]
    )
    assert result.returncode == 0, output[-20000:]
    assert generated and int(generated[-1]) >= 20 * max_examples, output[-3000:]
    assert "Traceback" not in server.log_text()
