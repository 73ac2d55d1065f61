"""Hot reload in one process: ModelWatcher.reload swaps whole states, and never for a bad file."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from flask import Flask
from prometheus_client import REGISTRY

from service import create_app
from service.reload import watcher
from service.settings import Settings
from service.state import EXTENSION
from training.fileio import atomic_write_bytes

ONE_INPUT = {"inputs": [[0.0] * 784]}


@pytest.fixture
def files(model_dir: Path) -> dict[str, bytes]:
    mnist = (model_dir / "mnist.npz").read_bytes()
    return {"mnist": mnist, "fashion": (model_dir / "fashion-mnist.npz").read_bytes(), "corrupt": mnist[:500]}


@pytest.fixture
def live(tmp_path: Path, files: dict[str, bytes]) -> Path:
    atomic_write_bytes(tmp_path / "mnist" / "1" / "model.npz", files["mnist"])
    atomic_write_bytes(tmp_path / "fashion-mnist.npz", files["fashion"])
    return tmp_path


@pytest.fixture
def live_app(live: Path) -> Flask:
    return create_app(Settings(model_dir=live, default_model="mnist"))


def failures(model: str) -> float:
    return REGISTRY.get_sample_value("digits_model_load_failures_total", {"model": model}) or 0.0


def served(app: Flask, path: str = "/predict") -> str:
    answer = app.test_client().post(path, json=ONE_INPUT)
    assert answer.status_code == 200, answer.get_json()
    return str(answer.get_json()["version"])


def test_nothing_changed_keeps_the_same_state(live_app: Flask) -> None:
    state = live_app.extensions[EXTENSION]
    report = watcher(live_app).reload()
    assert (report["changed"], report["loaded"], report["failed"]) == (False, [], [])
    assert live_app.extensions[EXTENSION] is state
    assert report["serving"]["mnist"] == {"version": "1", "versions": ["1"]}


def test_a_new_version_is_swapped_in_and_unchanged_models_are_kept(
    live_app: Flask, live: Path, files: dict[str, bytes]
) -> None:
    before = live_app.extensions[EXTENSION]
    atomic_write_bytes(live / "mnist" / "2" / "model.npz", files["mnist"])
    report = watcher(live_app).reload()
    assert report["changed"] and report["loaded"] == [{"model": "mnist", "version": "2"}]
    after = live_app.extensions[EXTENSION]
    assert after.settings is before.settings
    assert after.models["mnist"]["1"] is before.models["mnist"]["1"]  # not read again
    assert after.serving()["fashion-mnist"] is before.serving()["fashion-mnist"]
    assert after.openapi is not before.openapi  # a new version: the document lists it
    assert (
        "2"
        in json.loads(after.openapi)["paths"]["/v1/models/{name}/versions/{version}"]["get"]["parameters"][1][
            "schema"
        ]["enum"]
    )
    assert served(live_app) == "2"
    assert served(live_app, "/v1/models/mnist/versions/1/predict") == "1"


def test_a_changed_flat_file_gets_its_new_hash_as_version(
    live_app: Flask, live: Path, model_dir: Path
) -> None:
    old = served(live_app, "/v1/models/fashion-mnist/predict")
    atomic_write_bytes(live / "fashion-mnist.npz", (model_dir / "mnist.npz").read_bytes())
    watcher(live_app).reload()
    new = served(live_app, "/v1/models/fashion-mnist/predict")
    assert new != old and len(new) == 12


def test_an_invalid_file_is_logged_counted_once_and_never_served(
    live_app: Flask, live: Path, files: dict[str, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    failed_before = failures("mnist")
    atomic_write_bytes(live / "mnist" / "2" / "model.npz", files["corrupt"])
    atomic_write_bytes(live / "mnist" / "1" / "model.npz", files["corrupt"])  # the serving one
    with caplog.at_level(logging.ERROR, logger="service.reload"):
        report = watcher(live_app).reload()
    assert not report["changed"]
    assert sorted(f["version"] for f in report["failed"]) == ["1", "2"]
    assert served(live_app) == "1"
    assert failures("mnist") == failed_before + 2
    records = [r for r in caplog.records if getattr(r, "event", None) == "model_load_failed"]
    assert {r.version for r in records} == {"1", "2"}  # type: ignore[attr-defined]
    watcher(live_app).reload()  # unchanged bad files are not tried again
    assert failures("mnist") == failed_before + 2
    atomic_write_bytes(live / "mnist" / "2" / "model.npz", files["mnist"])  # fixed: loads
    assert watcher(live_app).reload()["loaded"] == [{"model": "mnist", "version": "2"}]
    assert served(live_app) == "2"


def test_removed_versions_and_models_stop_serving_but_the_default_stays(
    live_app: Flask, live: Path, files: dict[str, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    atomic_write_bytes(live / "mnist" / "2" / "model.npz", files["mnist"])
    atomic_write_bytes(live / "extra.npz", files["fashion"])
    watcher(live_app).reload()
    assert sorted(live_app.extensions[EXTENSION].models) == ["extra", "fashion-mnist", "mnist"]
    spec = json.loads(live_app.extensions[EXTENSION].openapi)
    assert "extra" in spec["paths"]["/v1/models/{name}"]["get"]["parameters"][0]["schema"]["enum"]
    os.unlink(live / "extra.npz")
    os.unlink(live / "mnist" / "2" / "model.npz")
    report = watcher(live_app).reload()
    assert sorted(r["model"] for r in report["removed"]) == ["extra", "mnist"]
    assert served(live_app) == "1"
    assert live_app.test_client().post("/v1/models/extra/predict", json=ONE_INPUT).status_code == 404
    os.unlink(live / "mnist" / "1" / "model.npz")  # the default model: kept while it has no file
    with caplog.at_level(logging.ERROR, logger="service.reload"):
        watcher(live_app).reload()
        watcher(live_app).reload()
    assert served(live_app) == "1"
    assert [getattr(r, "event", None) for r in caplog.records if r.levelno >= logging.ERROR] == [
        "default_model_kept"
    ]  # once


def test_a_vanished_directory_keeps_everything_serving(
    live_app: Flask, live: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = live_app.extensions[EXTENSION]
    live.rename(live.with_name(live.name + "-moved"))
    with caplog.at_level(logging.ERROR, logger="service.reload"):
        report = watcher(live_app).reload()
        watcher(live_app).reload()
    assert report["failed"] == [{"error": f"MODEL_DIR {live}: no such directory"}]
    assert live_app.extensions[EXTENSION] is state and served(live_app) == "1"
    assert [getattr(r, "event", None) for r in caplog.records if r.levelno >= logging.ERROR] == [
        "model_dir_failed"
    ]  # once


def test_the_admin_route_is_in_the_admin_blueprint(live_app: Flask) -> None:
    rules = {rule.rule: rule for rule in live_app.url_map.iter_rules()}
    rule = rules["/v1/admin/reload"]
    assert rule.endpoint.partition(".")[0] == "admin" and rule.methods is not None
    assert "POST" in rule.methods


def test_a_worker_skips_an_invalid_version_and_counts_it(live: Path, files: dict[str, bytes]) -> None:
    atomic_write_bytes(live / "mnist" / "2" / "model.npz", files["corrupt"])
    failed_before = failures("mnist")
    app = create_app(Settings(model_dir=live, default_model="mnist"), strict=False)
    assert served(app) == "1"
    assert failures("mnist") == failed_before + 1
    watcher(app).reload()  # already reported at start-up: not again
    assert failures("mnist") == failed_before + 1
