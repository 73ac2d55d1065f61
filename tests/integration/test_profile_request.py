"""bench/profile_request.py runs: the README quotes it, so it must keep working."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "profile_request.py"


def test_it_times_the_floor_and_predict_and_profiles_the_parse(model_dir: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--model-dir",
            str(model_dir),
            "--requests",
            "3",
            "--rounds",
            "1",
            "--top",
            "40",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    floor = re.search(r"no-op floor\s+(\d+) us/request", result.stdout)
    predict = re.search(r"/predict\s+(\d+) us/request", result.stdout)
    assert floor and predict, result.stdout
    assert int(predict.group(1)) > 0 and int(floor.group(1)) > 0
    assert "inputs.py" in result.stdout and "(_parse)" in result.stdout  # the profile's rows


def test_a_model_dir_without_models_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--model-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [f"error: MODEL_DIR {tmp_path}: no .npz model files in it"]
