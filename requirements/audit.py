"""Audit the locked packages against known vulnerabilities with pip-audit (`make audit`).

Each lock is checked with pip-audit's OSV service, then PyPI's JSON API if OSV cannot be reached.
Exit status 1: a vulnerability is known for a locked version (upgrade it: UPGRADE=PKG make lock).
Where no vulnerability database answers (a machine that reaches PyPI's package index alone, as
this project's CI machine does), it says so in one line and exits 0: that is "not audited", not
"no vulnerabilities", and the line says which.

usage: python requirements/audit.py [LOCK ...]   (default: the locks the images install)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

LOCKS = ("requirements/serve.txt", "requirements/train.txt")  # what the images ship
SERVICES = ("osv", "pypi")  # pip-audit's vulnerability services, in the order tried
PIP_AUDIT = Path(sys.executable).with_name("pip-audit")


def audit(lock: str, service: str) -> dict | str:
    """pip-audit's JSON report, or why the service gave none."""
    try:
        result = subprocess.run(
            [
                str(PIP_AUDIT),
                "--disable-pip",
                "--require-hashes",
                "--requirement",
                lock,
                "--vulnerability-service",
                service,
                "--format",
                "json",
                "--progress-spinner",
                "off",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
    except subprocess.TimeoutExpired:
        return f"{service}: no answer in 600 s"
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return f"{service}: {last[:200]}"
    audited = [d for d in report["dependencies"] if "skip_reason" not in d]
    if not audited:  # every package skipped: the service knows none of them, i.e. it did not answer
        first = report["dependencies"][0]["skip_reason"] if report["dependencies"] else "empty lock"
        return f"{service}: every package skipped ({first})"
    return report


def main(argv: list[str]) -> int:
    vulnerable, not_audited = [], []
    for lock in argv or LOCKS:
        reasons = []
        for service in SERVICES:
            report = audit(lock, service)
            if isinstance(report, str):
                reasons.append(report)
                continue
            found = [(d["name"], d["version"], v) for d in report["dependencies"] for v in d.get("vulns", [])]
            skipped = [d["name"] for d in report["dependencies"] if "skip_reason" in d]
            print(
                f"audit: {lock}: {len(report['dependencies']) - len(skipped)} packages audited via {service},"
                f" {len(found)} known vulnerabilities"
                + (f"; not audited: {', '.join(skipped)}" if skipped else "")
            )
            for name, version, vuln in found:
                fixes = ", ".join(vuln.get("fix_versions", [])) or "no fixed version yet"
                print(f"  {name} {version}: {vuln['id']} (fixed in: {fixes})")
            vulnerable += found
            break
        else:
            not_audited.append(lock)
            why = "; ".join(reasons)
            print(f"audit: NOT AUDITED: {lock}: no vulnerability database could be reached ({why})")
    if not_audited:
        print(
            "audit: NOT AUDITED means unknown, not safe: run `make audit` where OSV (api.osv.dev) or "
            "PyPI's JSON API (pypi.org/pypi/NAME/VERSION/json) answers"
        )
    if vulnerable:
        print("audit: upgrade each with `UPGRADE=PACKAGE make lock`; commit pyproject.toml and requirements/")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
