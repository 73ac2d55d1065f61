"""The benchmark scripts' own errors: one line saying what is wrong and how to fix it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A script in bench/ as a module (in ``sys.modules`` while the test runs: its dataclasses
    look themselves up there)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_train_speed_without_the_bench_extra_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without torch the script used to start its workers and die in one with a traceback."""
    train_speed = load("train_speed", monkeypatch)
    real_find_spec = importlib.util.find_spec
    hidden = {"torch", "sklearn"}  # (whether or not this machine has them)
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in hidden else real_find_spec(name, *a)
    )
    assert train_speed.main(["--data-dir", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "train_speed: torch and sklearn not installed; install the bench extra: "
        "pip install -e '.[bench]' (torch==2.13.0 is the CPU wheel)"
    ]


def test_serve_load_runs_the_steps_the_service_has(monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve_load.py --stages`` drives ``/_bench/stages/STEP`` for the service's own steps, in
    its order, between floor-100 and predict-100."""
    from service.views import BENCH_STAGES

    serve_load = load("serve_load", monkeypatch)
    assert serve_load.STAGES == BENCH_STAGES
    names = [s.name for s in serve_load.SCENARIOS]
    steps = [f"{step}-100" for step in BENCH_STAGES]
    assert names[names.index("floor-100") : names.index("predict-100") + 1] == [
        "floor-100",
        *steps,
        "predict-100",
    ]
    stages = [s for s in serve_load.SCENARIOS if s.name in steps]
    assert [s.path for s in stages] == [f"/_bench/stages/{step}" for step in BENCH_STAGES]
    assert not any(s.default for s in stages)  # only with --stages or --only


def test_blas_threads_without_data_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    blas_threads = load("blas_threads", monkeypatch)
    assert blas_threads.main(["--data-dir", str(tmp_path / "nowhere")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert err.startswith("blas_threads: ") and "nowhere" in err and "does not exist" in err
    assert blas_threads.main(["--data-dir", str(tmp_path), "--rounds", "0"]) == 2
