"""The deployment manifests as the cluster would get them: every kustomization under deploy/,
rendered by ``kubectl kustomize``, and the pieces the tests look at (the API's containers, their
environment with the ConfigMap's values, the pod specs)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
BASE = DEPLOY / "kubernetes"
KSERVE = DEPLOY / "overlays" / "kserve"
TRAIN = DEPLOY / "train"

Doc = dict[str, Any]


def kustomizations() -> list[Path]:
    """Every directory under deploy/ that holds a kustomization.yaml."""
    return sorted(path.parent for path in DEPLOY.rglob("kustomization.yaml"))


@cache
def render(directory: Path) -> tuple[Doc, ...]:
    """``kubectl kustomize DIRECTORY``, parsed (skips the test when kubectl is not installed)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: cannot render the kustomizations")
    out = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"kubectl kustomize {directory.relative_to(REPO)}:\n{out.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def one(docs: tuple[Doc, ...], kind: str, name: str | None = None) -> Doc:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''} in the render"
    return found[0]


def kinds(docs: tuple[Doc, ...]) -> set[str]:
    return {d["kind"] for d in docs}


def container(containers: list[Doc], name: str) -> Doc:
    return next(c for c in containers if c["name"] == name)


def api_deployment_container(docs: tuple[Doc, ...]) -> Doc:
    """The base's API container (Deployment digits-api)."""
    return container(one(docs, "Deployment", "digits-api")["spec"]["template"]["spec"]["containers"], "api")


def kserve_container(docs: tuple[Doc, ...]) -> Doc:
    """The KServe overlay's API container (its ServingRuntime's kserve-container)."""
    return container(one(docs, "ServingRuntime")["spec"]["containers"], "kserve-container")


def environment(docs: tuple[Doc, ...], spec: Doc) -> dict[str, str]:
    """A container's environment as its pod would get it: ``envFrom`` ConfigMaps, then ``env``."""
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        config_map = one(docs, "ConfigMap", source["configMapRef"]["name"])
        env.update(config_map["data"])
    for var in spec.get("env", []):
        assert "value" in var, f"{var['name']}: only literal values are read here"
        env[var["name"]] = var["value"]
    return env


def pod_specs(docs: tuple[Doc, ...]) -> Iterator[tuple[str, Doc]]:
    """(what, pod spec) for every workload in the render: Deployments', Jobs' and CronJobs' pod templates,
    and the pods KServe makes (the InferenceService predictor's pod-level fields, its
    ServingRuntime's containers)."""
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in ("Deployment", "Job"):
            yield name, doc["spec"]["template"]["spec"]
        elif doc["kind"] == "CronJob":
            yield name, doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        elif doc["kind"] == "InferenceService":
            runtime = one(docs, "ServingRuntime", doc["spec"]["predictor"]["model"]["runtime"])
            yield name, {**doc["spec"]["predictor"], "containers": runtime["spec"]["containers"]}


def dockerfile_uid(dockerfile: Path, arg: str) -> int:
    """The default of ``ARG NAME=...`` in a Dockerfile (the images' numeric user)."""
    match = re.search(rf"^ARG {arg}=(\d+)$", dockerfile.read_text(), re.M)
    assert match, f"{dockerfile.relative_to(REPO)} sets no ARG {arg}"
    return int(match.group(1))


def quantity_bytes(value: str) -> int:
    """An nginx size (``16m``, ``512k``, ``100``) in bytes."""
    match = re.fullmatch(r"(\d+)([kKmMgG]?)", value)
    assert match, f"not an nginx size: {value!r}"
    return int(match.group(1)) * 1024 ** " kmg".index(match.group(2).lower() or " ")
