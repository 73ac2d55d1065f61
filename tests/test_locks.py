"""The lock files (requirements/*.txt) against pyproject.toml, offline.

`make lock-check` (CI) is the authority: it re-resolves with uv and compares. These checks need
no network and catch the usual slip, a requirement edited in pyproject.toml without `make lock`.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCKS = ROOT / "requirements"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")
# each lock and the extras of pyproject.toml it installs (the core dependencies come with all)
LOCKED_EXTRAS = {"runtime": [], "serve": ["serve"], "train": ["train"], "dev": ["dev"]}
SELF = "digits-serving"


def pins(lock: str) -> dict[str, set[str]]:
    """{package: versions} (a package may have one version per Python, by environment marker)."""
    found: dict[str, set[str]] = {}
    for line in (LOCKS / f"{lock}.txt").read_text().splitlines():
        match = PIN.match(line)
        if match:
            found.setdefault(canonicalize_name(match[1]), set()).add(match[2])
    return found


def requirements(extras: list[str]) -> list[Requirement]:
    """What pyproject.toml asks for with these extras, self-references followed."""
    found = [Requirement(line) for line in PYPROJECT["project"]["dependencies"]]
    todo = list(extras)
    while todo:
        for line in PYPROJECT["project"]["optional-dependencies"][todo.pop()]:
            requirement = Requirement(line)
            if canonicalize_name(requirement.name) == SELF:
                todo += sorted(requirement.extras)
            else:
                found.append(requirement)
    return found


@pytest.mark.parametrize("lock", [*LOCKED_EXTRAS, "bootstrap"])
def test_every_pin_carries_sha256_hashes(lock: str) -> None:
    text = (LOCKS / f"{lock}.txt").read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2].strip())
    assert entries, lock
    unhashed = [entry.split()[0] for entry in entries if "--hash=sha256:" not in entry]
    assert unhashed == []
    assert "make lock" in text.splitlines()[1]  # written by `make lock`, not by hand


@pytest.mark.parametrize(("lock", "extras"), LOCKED_EXTRAS.items())
def test_each_lock_pins_what_pyproject_asks_for(lock: str, extras: list[str]) -> None:
    pinned = pins(lock)
    wrong = [
        f"{requirement}: {sorted(pinned.get(canonicalize_name(requirement.name), [])) or 'not locked'}"
        for requirement in requirements(extras)
        if not pinned.get(canonicalize_name(requirement.name))
        or not all(
            requirement.specifier.contains(v, prereleases=True)
            for v in pinned[canonicalize_name(requirement.name)]
        )
    ]
    assert wrong == [], "run `make lock` and commit pyproject.toml with requirements/"


@pytest.mark.parametrize("lock", ["runtime", "serve", "train", "bootstrap"])
def test_a_package_has_one_version_in_every_lock(lock: str) -> None:
    """The smaller locks are resolved within dev.txt: the tests run on what the images ship."""
    dev = pins("dev")
    differs = {
        name: (versions, dev.get(name)) for name, versions in pins(lock).items() if versions != dev.get(name)
    }
    assert differs == {}


def test_the_api_image_lock_has_no_test_lint_or_training_package() -> None:
    serve = pins("serve")
    forbidden = {canonicalize_name(r.name) for r in requirements(["test"]) + requirements(["dev"])}
    forbidden |= {
        canonicalize_name(r.name) for name in ("train", "plots", "bench") for r in requirements([name])
    }
    forbidden -= {canonicalize_name(r.name) for r in requirements(["serve"])}
    assert forbidden >= {"pytest", "hypothesis", "kserve", "ruff", "tqdm", "pooch", "matplotlib", "torch"}
    assert sorted(forbidden & serve.keys()) == []


def test_bench_is_not_locked() -> None:
    """torch's CPU wheel is not what PyPI serves for Linux (README.md, "Dependencies")."""
    assert "torch" not in pins("dev")
