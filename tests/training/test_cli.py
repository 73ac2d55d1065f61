import json

import numpy as np
import pytest

from training import load_model
from training.cli import main

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
