import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training import load_model
from training.cli import main

ROOT = Path(__file__).resolve().parents[2]

QUICK = ["--hidden-size", "16", "--batch-size", "50", "--epochs", "2", "--no-progress"]


def train_args(data_dir, output, *extra):
    return ["train", "--data-dir", str(data_dir), "--output", str(output), *QUICK, *extra]


def one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    return err[0]


def test_train_writes_model_history_and_plot(tmp_path, mnist_sample_dir, capsys):
    out = tmp_path / "run" / "digits.npz"
    assert main(train_args(mnist_sample_dir, out, "--plot", str(tmp_path / "curve.png"))) == 0
    stdout = capsys.readouterr().out
    assert "epoch   1/2" in stdout and "epoch   2/2" in stdout
    model = load_model(out)
    meta = model.metadata
    assert meta["input_shape"] == [28, 28]
    assert meta["class_names"] == [str(i) for i in range(10)]
    assert meta["dataset"]["name"] == "mnist"
    assert set(meta["dataset"]["files"]) == {
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    }
    assert meta["training"]["config"]["hidden_size"] == 16
    assert meta["training"]["seed"] == 0
    assert 0 <= meta["metrics"]["test_accuracy"] <= 1
    assert meta["pixel_preprocessing"]["scale"] == 255
    history = json.loads((tmp_path / "run" / "digits.history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1, 2]
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "run" / "digits.ckpt").exists()


def test_same_command_same_weights(tmp_path, mnist_sample_dir):
    assert main(train_args(mnist_sample_dir, tmp_path / "a.npz")) == 0
    assert main(train_args(mnist_sample_dir, tmp_path / "b.npz")) == 0
    a, b = load_model(tmp_path / "a.npz"), load_model(tmp_path / "b.npz")
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])


def test_evaluate_reports_what_training_measured(tmp_path, mnist_sample_dir, capsys):
    out = tmp_path / "m.npz"
    main(train_args(mnist_sample_dir, out))
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out), "--data-dir", str(mnist_sample_dir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["count"] == 1000
    assert result["accuracy"] == pytest.approx(load_model(out).metadata["metrics"]["test_accuracy"])


def test_gradcheck_passes(capsys):
    assert main(["gradcheck"]) == 0
    out = capsys.readouterr().out
    assert "cross_entropy" in out and "mean_squared_error" in out
    assert out.strip().splitlines()[-1].startswith("ok")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--epochs", "0"], "epochs must be a positive integer"),
        (["train", "--weight-init", "big"], "weight-init"),
        (["train", "--data-dir", "/nonexistent/dir"], "/nonexistent/dir"),
        (["evaluate", "--model", "/nonexistent/m.npz"], "/nonexistent/m.npz: no such file"),
        (["gradcheck", "--batch-size", "0"], "--batch-size must be >= 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    assert message in one_error_line(capsys)


def test_evaluate_a_corrupt_model(tmp_path, mnist_sample_dir, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really")
    assert main(["evaluate", "--model", str(bad), "--data-dir", str(mnist_sample_dir)]) == 2
    assert str(bad) in one_error_line(capsys)


def test_resume_without_checkpoint(tmp_path, mnist_sample_dir, capsys):
    assert main(train_args(mnist_sample_dir, tmp_path / "m.npz", "--resume")) == 2
    assert "m.ckpt: no such checkpoint" in one_error_line(capsys)


def publish_args(data_dir, name_dir, *extra):
    quick = ["--hidden-size", "8", "--batch-size", "50", "--epochs", "1", "--no-progress"]
    return ["train", "--data-dir", str(data_dir), "--publish", str(name_dir), *quick, *extra]


def test_train_publishes_the_next_version(tmp_path, mnist_sample_dir, capsys):
    from service.registry import scan

    name_dir = tmp_path / "models" / "digits"
    name_dir.parent.mkdir()
    assert main(publish_args(mnist_sample_dir, name_dir)) == 0
    assert main(publish_args(mnist_sample_dir, name_dir, "--seed", "1")) == 0
    stdout = capsys.readouterr().out
    assert f"wrote {name_dir / '2' / 'model.npz'} " in stdout
    assert sorted(p.name for p in name_dir.iterdir()) == ["1", "2"]
    assert sorted(p.name for p in (name_dir / "2").iterdir()) == ["history.json", "model.npz"]
    history = json.loads((name_dir / "2" / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1]
    assert load_model(name_dir / "2" / "model.npz").metadata["training"]["seed"] == 1
    assert not (tmp_path / "models" / "digits.ckpt").exists()  # the checkpoint went with success
    found = scan(tmp_path / "models")
    assert found.error is None and not found.failed
    assert list(found.versions()["digits"]) == ["1", "2"]


def test_publish_with_history_elsewhere(tmp_path, mnist_sample_dir):
    name_dir = tmp_path / "digits"
    history = tmp_path / "runs" / "h.json"
    assert main(publish_args(mnist_sample_dir, name_dir, "--history", str(history))) == 0
    assert sorted(p.name for p in (name_dir / "1").iterdir()) == ["model.npz"]
    assert json.loads(history.read_text())["dataset"] == "mnist"


@pytest.mark.parametrize(
    ("setup", "extra", "message"),
    [
        (None, ["--output", "x.npz"], "--output and --publish both say where the model goes"),
        ("flat", [], "models/digits.npz and {tmp}/models/digits: one model in two layouts"),
        ("file", [], "models/digits: exists and is not a directory"),
        ("no-parent", [], "the model directory {tmp}/models does not exist"),
    ],
)
def test_publish_errors_are_one_line_and_exit_2(tmp_path, mnist_sample_dir, capsys, setup, extra, message):
    models = tmp_path / "models"
    if setup != "no-parent":
        models.mkdir()
    if setup == "flat":
        (models / "digits.npz").write_bytes(b"")
    if setup == "file":
        (models / "digits").write_bytes(b"")
    assert main(publish_args(mnist_sample_dir, models / "digits", *extra)) == 2
    captured = capsys.readouterr()
    assert "training" not in captured.out  # refused before any training
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: ")
    assert message.format(tmp=tmp_path) in captured.err


def test_training_from_a_directory_imports_no_download_or_progress_bar_modules(tmp_path, mnist_sample_dir):
    """pooch, requests, platformdirs and tqdm cost a tenth of a second of every start-up; a run
    on a --data-dir without a terminal needs none of them (a fresh process: pytest has them)."""
    heavy = ("pooch", "requests", "platformdirs", "tqdm")
    script = (
        "import sys\n"
        "from training.cli import main\n"
        f"code = main({train_args(mnist_sample_dir, tmp_path / 'm.npz')!r})\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules), code)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "[] 0"


def test_without_the_train_extra_one_line_names_it(tmp_path):
    """`make serve` installs the serving set alone: a training command that needs a package of the
    train extra says which and how to install it, without a traceback."""
    code = (
        "import sys\n"
        "for name in ('tqdm', 'pooch', 'requests', 'platformdirs'): sys.modules[name] = None\n"
        "from training.cli import main\n"
        "sys.exit(main(['evaluate', '--model', 'models/mnist.npz', '--dataset', 'mnist', '--no-download']))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DIGITS_DATA_CACHE"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "platformdirs is not installed" in result.stderr
    assert "pip install 'digits-serving[train]'" in result.stderr
