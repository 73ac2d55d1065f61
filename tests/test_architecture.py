"""The shape of the house, checked from the source: what may import what."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "training")


def imports(path: Path) -> list[tuple[str, str | None]]:
    """(module, name or None) for every import statement in ``path``."""
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found += [(node.module, alias.name) for alias in node.names]
    return found


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_one_module_reads_json_numbers() -> None:
    """Every protocol's JSON goes through one reader (service/inputs.py)."""
    readers = [
        path.relative_to(ROOT).as_posix()
        for path in sources("service")
        if any(module.split(".")[0] == "simdjson" for module, _ in imports(path))
    ]
    assert readers == ["service/inputs.py"]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_imports_another_modules_private_name(package: str) -> None:
    offenders = [
        f"{path.relative_to(ROOT)}: from {module} import {name}"
        for path in sources(package)
        for module, name in imports(path)
        if module.split(".")[0] in PACKAGES and name is not None and name.startswith("_")
    ]
    assert offenders == []


def test_training_does_not_import_the_service_or_its_frameworks() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}: {module}"
        for path in sources("training")
        for module, _ in imports(path)
        if module.split(".")[0] in ("service", "flask", "marshmallow", "werkzeug", "gunicorn")
    ]
    assert offenders == []


def test_protocols_do_not_import_each_other() -> None:
    """A protocol's module imports shared state and the data plane, never another protocol."""
    protocols = {"service.views", "service.v2", "service.grpc_v2", "service.tfserving"}
    offenders = [
        f"{path.relative_to(ROOT)}: {module}"
        for path in sources("service")
        if f"service.{path.stem}" in protocols
        for module, _ in imports(path)
        if module in protocols - {f"service.{path.stem}"}
    ]
    assert offenders == []


def test_the_app_does_not_import_grpc() -> None:
    """gunicorn's master builds the app to check the models, then forks the workers: gRPC must
    not be loaded in a process that forks (service/grpc_server.py starts in each worker)."""
    import subprocess
    import sys

    code = "import sys; import service; service.create_app; print('grpc' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
