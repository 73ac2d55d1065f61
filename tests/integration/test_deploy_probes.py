"""The API containers the manifests declare, run for real: gunicorn started with the environment
the pod would get (the rendered Deployment's, and the KServe overlay's ServingRuntime's: env and
ConfigMap), only its paths swapped for temporary ones (MODEL_DIR, the token file) and HOST for
loopback. Every probe the manifest declares answers 200 with the probe's own headers, as do the
Prometheus scrape path without a token, and the token file is what guards the API."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from deploy_testkit import BASE, KSERVE, Doc, api_deployment_container, environment, one, render
from gunicorn_testkit import gunicorn, stop, wait_ready

TOKEN = "deploy-probe-test-token"
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
CASES: dict[str, tuple[Path, Callable[[tuple[Doc, ...]], Doc]]] = {
    "deployment": (BASE, api_deployment_container),
    "kserve": (KSERVE, lambda docs: one(docs, "ServingRuntime")["spec"]["containers"][0]),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def pod(
    request: pytest.FixtureRequest, model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Doc, str, dict[str, str]]]:
    """(the container spec, the server's URL, the environment it was started with)"""
    directory, pick = CASES[request.param]
    docs = render(directory)
    spec = pick(docs)
    env = environment(docs, spec)
    secrets = tmp_path_factory.mktemp("secrets")
    (secrets / "token").write_text(TOKEN + "\n")
    assert env["AUTH_TOKEN_FILE"].endswith("/token")
    # the manifest's paths inside the pod -> temporary ones here; loopback, not all interfaces
    env.update(MODEL_DIR=str(model_dir), AUTH_TOKEN_FILE=str(secrets / "token"), HOST="127.0.0.1")
    log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    proc = gunicorn(env, log)
    try:
        yield spec, wait_ready(proc, log), env
    finally:
        assert stop(proc) == 0
        assert "Traceback" not in log.read_text()


def test_every_declared_probe_answers_200(pod: tuple[Doc, str, dict[str, str]]) -> None:
    spec, url, _ = pod
    declared = [p for p in PROBES if p in spec]
    assert {"readinessProbe", "livenessProbe"} <= set(declared)
    for probe in declared:
        get = spec[probe]["httpGet"]
        headers = {h["name"]: h["value"] for h in get.get("httpHeaders", [])}
        response = requests.get(url + get["path"], headers=headers, timeout=5)
        assert response.status_code == 200, (probe, get["path"], response.text)


def test_it_serves_with_the_manifest_settings(pod: tuple[Doc, str, dict[str, str]]) -> None:
    _, url, env = pod
    # /metrics, which Prometheus scrapes without a token
    assert requests.get(f"{url}/metrics", timeout=5).status_code == 200
    # the token file guards inference
    body = {"inputs": [[0.0] * 784]}
    assert requests.post(f"{url}/predict", json=body, timeout=5).status_code == 401
    answer = requests.post(
        f"{url}/predict", json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
    )
    assert answer.status_code == 200
    assert answer.json()["model"] == env["DEFAULT_MODEL"]
    # the manifest's cap on bodies is the one the server applies
    big = b"0" * (int(env["MAX_REQUEST_BYTES"]) + 1)
    refused = requests.post(
        f"{url}/predict",
        data=big,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        timeout=10,
    )
    assert refused.status_code == 413
