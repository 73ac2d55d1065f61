"""``python -m training train`` as a process: SIGTERM or SIGINT mid-run leaves a checkpoint, and
``--resume`` from it ends with the same weights as a run never stopped, or refuses other
settings. The rest of the CLI is tested in-process in tests/training/test_cli.py."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training import load_model
from training.cli import main

ROOT = Path(__file__).resolve().parents[2]


def one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    return err[0]


def _spawn_train(data_dir, output, epochs, *extra):
    cmd = [
        sys.executable,
        "-m",
        "training",
        "train",
        "--data-dir",
        str(data_dir),
        "--output",
        str(output),
        "--hidden-size",
        "16",
        "--batch-size",
        "10",
        "--epochs",
        str(epochs),
        "--no-progress",
        *extra,
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


RESUME_EPOCHS = 30


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, mnist_sample_dir):
    out = tmp_path_factory.mktemp("whole") / "whole.npz"
    whole = _spawn_train(mnist_sample_dir, out, RESUME_EPOCHS)
    _, stderr = whole.communicate(timeout=120)
    assert whole.returncode == 0, stderr
    return load_model(out)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_leaves_checkpoint_and_resume_matches_uninterrupted(
    tmp_path, mnist_sample_dir, uninterrupted, signum
):
    epochs = RESUME_EPOCHS

    out = tmp_path / "cut.npz"
    proc = _spawn_train(mnist_sample_dir, out, epochs)
    for line in proc.stdout:
        if line.startswith("epoch   1/"):
            break
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, stderr
    assert "checkpoint saved to" in stderr and "--resume" in stderr
    assert (tmp_path / "cut.ckpt").exists() and not out.exists()

    resumed = _spawn_train(mnist_sample_dir, out, epochs, "--resume")
    stdout, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, stderr
    assert stdout.startswith("resuming")
    a, b = uninterrupted, load_model(out)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    assert not (tmp_path / "cut.ckpt").exists()


def test_resume_with_other_settings_is_refused(tmp_path, mnist_sample_dir, capsys):
    proc = _spawn_train(mnist_sample_dir, tmp_path / "m.npz", RESUME_EPOCHS)
    for line in proc.stdout:
        if line.startswith("epoch   1/"):
            break
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    argv = [
        "train",
        "--data-dir",
        str(mnist_sample_dir),
        "--output",
        str(tmp_path / "m.npz"),
        "--hidden-size",
        "32",
        "--batch-size",
        "10",
        "--epochs",
        str(RESUME_EPOCHS),
        "--resume",
    ]
    assert main(argv) == 2
    assert "different settings (hidden_size)" in one_error_line(capsys)
