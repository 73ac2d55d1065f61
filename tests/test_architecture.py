"""The shape of the house, checked from the source: what may import what."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
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


# --- what the service imports, against what its install (the serve extra) carries ----------------


def normalized(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def requirement_names(requirements: list[str]) -> set[str]:
    return {normalized(re.split(r"[\s\[<>=!~;]", line, maxsplit=1)[0]) for line in requirements}


def extra(name: str) -> set[str]:
    """The distributions an extra of pyproject.toml names, without the project's own."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return requirement_names(extras[name]) - {"digits-serving"}


def module_path(module: str) -> Path | None:
    """The source file of one of our modules (a package's __init__.py), or None for anyone else's."""
    if module.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


#: in service/ but never loaded by serving: the developers' generator of the gRPC message module
#: (``python -m service.proto.generate``, grpcio-tools from the dev set)
DEVELOPER_TOOLS = {ROOT / "service" / "proto" / "generate.py"}


def service_closure() -> list[Path]:
    """Every module of ours that serving can load: service/ and the training modules it reaches,
    following every import, also those inside functions."""
    todo, seen = [path for path in sources("service") if path not in DEVELOPER_TOOLS], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module, name in imports(path):
            for candidate in (module, f"{module}.{name}"):
                found = module_path(candidate)
                if found is not None:
                    todo.append(found)
                    parent = found.parent  # importing training.x runs training/__init__.py
                    while parent != ROOT:
                        todo.append(parent / "__init__.py")
                        parent = parent.parent
    return sorted(seen)


def third_party_imports(paths: list[Path]) -> dict[str, set[str]]:
    """{top-level module: files importing it}, standard library and our own packages left out."""
    found: dict[str, set[str]] = {}
    for path in paths:
        for module, _ in imports(path):
            top = module.split(".")[0]
            # _typeshed: type checkers' stubs, imported under TYPE_CHECKING only
            if top in sys.stdlib_module_names or top in PACKAGES or top in ("__future__", "_typeshed"):
                continue
            found.setdefault(top, set()).add(path.relative_to(ROOT).as_posix())
    return found


def test_the_service_imports_only_what_its_extra_installs() -> None:
    """The API image installs requirements/serve.txt (the core dependencies and the serve extra):
    a module the service reaches may import nothing else, not even lazily inside a function."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    allowed = requirement_names(project["dependencies"]) | extra("serve")
    distributions = importlib.metadata.packages_distributions()
    outside = {
        module: sorted(files)
        for module, files in third_party_imports(service_closure()).items()
        if not {normalized(d) for d in distributions.get(module, [module])} & allowed
    }
    assert outside == {}


def test_training_only_packages_stay_out_of_the_service() -> None:
    """Progress bars, dataset downloads and plots (the train and plots extras) belong to training:
    the training modules the service shares (the network, the weight loader) import none of them."""
    # (a package both jobs use, Pillow for the one image preprocessing, is not training-only)
    training_only = (extra("train") | extra("plots")) - extra("serve")
    assert {"tqdm", "pooch", "requests", "platformdirs", "matplotlib"} <= training_only
    distributions = importlib.metadata.packages_distributions()
    offenders = {
        module: sorted(files)
        for module, files in third_party_imports(service_closure()).items()
        if {normalized(d) for d in distributions.get(module, [module])} & training_only
    }
    assert offenders == {}
    # and the walk does reach training: the shared modules are in it, the training-only ones not
    reached = {path.relative_to(ROOT).as_posix() for path in service_closure()}
    assert {"training/__init__.py", "training/nets.py", "training/export.py"} <= reached
    assert not reached & {"training/datasets.py", "training/cli.py", "training/plots.py"}


def test_a_started_service_has_loaded_no_training_only_module() -> None:
    """The same, from a real start: the app factory on the shipped models, then sys.modules."""
    code = (
        "import sys; from service import create_app; create_app(); "
        "print(' '.join(sorted({name.split('.')[0] for name in sys.modules})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(result.stdout.split())
    assert {"flask", "numpy", "training", "service"} <= loaded
    assert loaded & {"tqdm", "pooch", "requests", "platformdirs", "matplotlib", "threadpoolctl"} == set()


def test_the_app_does_not_import_grpc() -> None:
    """gunicorn's master builds the app to check the models, then forks the workers: gRPC must
    not be loaded in a process that forks (service/grpc_server.py starts in each worker)."""
    import subprocess
    import sys

    code = "import sys; import service; service.create_app; print('grpc' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
