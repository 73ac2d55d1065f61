"""kill -9 during training: the model file is the previous one or the complete new one, never torn.

A real ``python -m training train`` writes over an output path that already holds a valid model,
and is SIGKILLed (no handler runs, no cleanup) at chosen moments: while it starts, right after it
prints epoch 1 (writing the checkpoint), right after epoch 2 (exporting the model, writing the
history, removing the checkpoint), and the moment a temp file of the model appears (mid-write).
``training.fileio.atomic_writer`` promises that every reader sees the old file or the new one;
a killed write may leave its ``.NAME.*.tmp`` behind, never anything under the name itself.
(That a resumed run matches an uninterrupted one is tested in test_cli.py.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from training import TwoLayerNet, load_model, save_model
from training.datasets import DATASETS

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["--hidden-size", "16", "--batch-size", "50", "--epochs", "2", "--no-progress"]
#: (moment, extra delay in seconds): each run is killed once, at one of these.
KILLS = [
    ("start", 0.05),
    ("start", 0.3),
    ("epoch 1", 0.0),
    ("epoch 1", 0.004),
    ("epoch 2", 0.0),
    ("epoch 2", 0.002),
    ("epoch 2", 0.005),
    ("epoch 2", 0.01),
    ("epoch 2", 0.02),
    ("model temp file", 0.0),
    ("model temp file", 0.001),
    ("wrote", 0.0),  # after the export: surely the new model
]
#: The line each moment waits for on the trainer's stdout.
LINES = {"epoch 1": "epoch   1/", "epoch 2": "epoch   2/", "wrote": "wrote "}


def spawn(data_dir: Path, output: Path, *extra: str) -> subprocess.Popen[str]:
    cmd = [
        sys.executable,
        "-m",
        "training",
        "train",
        "--data-dir",
        str(data_dir),
        "--output",
        str(output),
        *QUICK,
        *extra,
    ]
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )


def kill_at(proc: subprocess.Popen[str], moment: str, delay: float, output: Path) -> None:
    """SIGKILL ``proc`` ``delay`` seconds after ``moment``; returns once it is dead."""

    def kill() -> None:
        time.sleep(delay)
        proc.kill()  # SIGKILL

    if moment == "start":
        threading.Thread(target=kill, daemon=True).start()
    elif moment == "model temp file":
        while proc.poll() is None and not temp_files(output):
            time.sleep(0.0002)
        kill()
    else:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(LINES[moment]):
                kill()
                break
    proc.communicate(timeout=60)


def temp_files(output: Path, name: str | None = None) -> list[Path]:
    """Temp files of ``name`` (default: the model's) that a killed atomic write left behind."""
    return sorted(output.parent.glob(f".{name or output.name}.*.tmp"))


@pytest.mark.slow
def test_sigkill_leaves_the_previous_model_or_the_new_one(tmp_path: Path, mnist_sample_dir: Path) -> None:
    output = tmp_path / "digits.npz"
    net = TwoLayerNet(784, 16, 10, rng=np.random.default_rng(7), dtype=np.float32)
    save_model(
        output,
        net,
        {
            "input_shape": [28, 28],
            "class_names": list(DATASETS["mnist"].class_names),
            "note": "the previous model",
        },
    )
    previous = output.read_bytes()
    outcomes = []
    for moment, delay in KILLS:
        output.write_bytes(previous)
        proc = spawn(mnist_sample_dir, output)
        kill_at(proc, moment, delay, output)

        assert output.exists(), f"killed at {moment} + {delay}s: the output path is gone"
        model = load_model(output)  # complete, whichever it is: a torn file would raise here
        if output.read_bytes() == previous:
            outcome = "previous"
        else:
            assert model.metadata["training"]["epochs_completed"] == 2
            outcome = "new"
        if proc.returncode == 0:
            outcome += ", finished before the kill"
        else:
            assert proc.returncode == -signal.SIGKILL
        leftovers = temp_files(output)
        if leftovers:
            outcome += f", {len(leftovers)} temp file(s) left"
        leftovers += temp_files(output, "*")  # the checkpoint's and the history's

        history = output.with_suffix(".history.json")
        if history.exists():  # written atomically too
            assert json.loads(history.read_text())["epochs"]
        checkpoint = output.with_suffix(".ckpt")
        if checkpoint.exists():  # and the checkpoint: it must load whole
            with np.load(checkpoint, allow_pickle=False) as npz:
                assert json.loads(str(npz["state"]))["epoch"] == 1
            outcome += ", checkpoint left"
        outcomes.append((moment, delay, outcome))
        for leftover in set(leftovers):
            leftover.unlink()

    # the kills landed on both sides of the export (start + 50 ms and "wrote" make sure of it)
    kinds = {outcome.split(",")[0] for _, _, outcome in outcomes}
    assert kinds == {"previous", "new"}, outcomes
    print("\n".join(f"killed at {m} + {d * 1000:.0f} ms: {o}" for m, d, o in outcomes))

    # a last run after all that finishes normally (resuming if a checkpoint was left)
    extra = ["--resume"] if output.with_suffix(".ckpt").exists() else []
    proc = spawn(mnist_sample_dir, output, *extra)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert load_model(output).metadata["training"]["epochs_completed"] == 2
    assert not output.with_suffix(".ckpt").exists()
