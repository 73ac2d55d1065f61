"""CycloneDX SBOMs for the images, and the check of a built image against its SBOM.

    python deploy/sbom.py write            sbom/api.cdx.json and sbom/train.cdx.json (`make sbom`)
    python deploy/sbom.py verify IMAGE SBOM  the Python packages in IMAGE are exactly the SBOM's

An image's SBOM is its lock file (requirements/serve.txt for the API, train.txt for training: what
its Dockerfile stage installs with every hash checked) made into CycloneDX JSON by cyclonedx-py,
for the image's Python (lock lines whose environment marker does not apply are left out), with
the project itself as the root component and every package's PyPI sha256s. `verify` runs the
image's own Python (docker, or podman with CONTAINER=podman) to list what is installed, and fails on
any package missing, extra or at another version. Debian's packages in the image are not in the
SBOM (list them with `docker run --rm --entrypoint dpkg-query IMAGE -W`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from packaging.markers import Marker

ROOT = Path(__file__).resolve().parents[1]
IMAGES = {"api": "requirements/serve.txt", "train": "requirements/train.txt"}
PYTHON = os.environ.get("SBOM_PYTHON", "3.11")  # the images' Python (Dockerfile: python:3.11-slim)
MARKER = re.compile(r"^([^\s#][^;\\]*?)\s*;\s*([^\\]+?)\s*\\$")
LIST_INSTALLED = (
    "import importlib.metadata as m, json; "
    "print(json.dumps(sorted({(d.metadata['Name'], d.version) for d in m.distributions()})))"
)


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def for_python(lock: str, python: str) -> str:
    """The lock without the entries whose marker excludes this Python on Linux (uv's universal locks
    carry one numpy per Python range)."""
    environment = {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "platform_machine": "x86_64",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }
    kept, keep = [], True
    for line in (ROOT / lock).read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            match = MARKER.match(line)
            keep = match is None or Marker(match[2]).evaluate(environment)
        if keep:
            kept.append(line)
    return "\n".join(kept) + "\n"


def write(out_dir: Path) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    cyclonedx = Path(sys.executable).with_name("cyclonedx-py")
    for image, lock in IMAGES.items():
        out = out_dir / f"{image}.cdx.json"
        subprocess.run(
            [
                str(cyclonedx),
                "requirements",
                "-",
                "--pyproject",
                str(ROOT / "pyproject.toml"),
                "--output-reproducible",
                "--of",
                "JSON",
                "--validate",
                "-o",
                str(out),
            ],
            input=for_python(lock, PYTHON),
            text=True,
            check=True,
            cwd=ROOT,
            stderr=subprocess.DEVNULL,  # its warning that a lock has no dependency graph
        )
        count = len(json.loads(out.read_text())["components"])
        shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
        print(f"sbom: {shown}: {count} packages from {lock} (Python {PYTHON})")
    return 0


def verify(image: str, sbom: Path) -> int:
    document = json.loads(sbom.read_text())
    root = document["metadata"]["component"]
    expected = {(normalized(c["name"]), c["version"]) for c in document["components"]}
    expected.add((normalized(root["name"]), root["version"]))
    engine = os.environ.get("CONTAINER", "docker")
    listing = subprocess.run(
        [engine, "run", "--rm", "--entrypoint", "python", image, "-c", LIST_INSTALLED],
        capture_output=True,
        text=True,
        check=True,
    )
    installed = {(normalized(name), version) for name, version in json.loads(listing.stdout)}
    missing, extra = sorted(expected - installed), sorted(installed - expected)
    for name, version in missing:
        print(f"sbom: in the SBOM, not in the image: {name} {version}")
    for name, version in extra:
        print(f"sbom: in the image, not in the SBOM: {name} {version}")
    verdict = "matches" if not (missing or extra) else "does NOT match"
    counts = f"{len(installed)} Python packages installed, {len(expected)} in the SBOM"
    print(f"sbom: {image} {verdict} {sbom} ({counts})")
    return 0 if not (missing or extra) else 1


def main(argv: list[str]) -> int:
    if argv[:1] == ["write"] and len(argv) <= 2:
        return write(Path(argv[1]) if len(argv) == 2 else ROOT / "sbom")
    if argv[:1] == ["verify"] and len(argv) == 3:
        return verify(argv[1], Path(argv[2]))
    print("usage: python deploy/sbom.py write [DIR] | verify IMAGE SBOM", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
