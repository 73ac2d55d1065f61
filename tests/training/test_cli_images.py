"""``train --images``: fine-tuning from a model on a real folder, replay, held-out data, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from training import load_model
from training.cli import main

UCI = Path(__file__).resolve().parents[1] / "data" / "uci-digits"
QUICK = ["--epochs", "3", "--no-progress"]


@pytest.fixture(scope="module")
def base_model(tmp_path_factory, mnist_sample_dir) -> Path:
    """A small MNIST model trained on the sample, as a served flat file MODEL_DIR/base.npz."""
    model_dir = tmp_path_factory.mktemp("models")
    argv = ["train", "--data-dir", str(mnist_sample_dir), "--output", str(model_dir / "base.npz")]
    assert main([*argv, "--hidden-size", "32", "--epochs", "5", "--no-progress"]) == 0
    return model_dir / "base.npz"


def finetune(folder, base, replay_dir, output, *extra):
    argv = ["train", "--images", str(folder), "--init-from", str(base), "--seed", "0"]
    if replay_dir is not None:
        argv += ["--replay", "mnist", "--data-dir", str(replay_dir)]
    return main([*argv, "--output", str(output), *QUICK, *extra])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    return err[0]


def test_fine_tuning_on_a_real_folder_records_the_data(tmp_path, base_model, mnist_sample_dir, capsys):
    out = tmp_path / "new.npz"
    assert finetune(UCI / "train", base_model, mnist_sample_dir, out) == 0
    stdout = capsys.readouterr().out
    # 30 images a class are too few to hold a tenth out by default: all train; MNIST's test set shows
    assert "training on every image" in stdout and "val loss" not in stdout and "test loss" in stdout
    model = load_model(out)
    base = load_model(base_model)
    assert model.class_names == base.class_names
    assert model.params["W1"].shape == base.params["W1"].shape
    data = model.metadata["dataset"]
    assert data["name"] == "images"
    assert data["images"]["folder"] == str(UCI / "train")
    assert data["images"]["counts"] == {str(d): 30 for d in range(10)}
    assert len(data["images"]["files_sha256"]) == 64
    assert "validation_split" not in data
    assert data["replay"]["name"] == "mnist"
    assert data["init_from"]["sha256"] == base.sha256
    assert model.metadata["image_preprocessing"] == "mnist"
    assert {"test_accuracy", "train_accuracy"} <= set(model.metadata["metrics"])
    config = model.metadata["training"]["config"]
    assert config["augment"] is True and config["replay_ratio"] > 0


def test_a_validation_split_holds_out_each_class_and_is_reported(
    tmp_path, base_model, mnist_sample_dir, capsys
):
    out = tmp_path / "new.npz"
    assert finetune(UCI / "train", base_model, mnist_sample_dir, out, "--validation-split", "0.1") == 0
    stdout = capsys.readouterr().out
    assert "val loss" in stdout and "training on every image" not in stdout
    data = load_model(out).metadata["dataset"]
    assert data["validation_split"] == 0.1 and data["validation_count"] == 30
    assert "val_accuracy" in load_model(out).metadata["metrics"]


def test_fine_tuning_is_reproducible_with_augmentation_and_replay(tmp_path, base_model, mnist_sample_dir):
    assert finetune(UCI / "train", base_model, mnist_sample_dir, tmp_path / "a.npz") == 0
    assert finetune(UCI / "train", base_model, mnist_sample_dir, tmp_path / "b.npz") == 0
    a, b = load_model(tmp_path / "a.npz"), load_model(tmp_path / "b.npz")
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])


def test_fine_tuning_learns_the_new_source(tmp_path, base_model, mnist_sample_dir, capsys):
    """On held-out images of the same source, the fine-tuned model does better than its start."""
    out = tmp_path / "new.npz"
    assert finetune(UCI / "train", base_model, mnist_sample_dir, out, "--epochs", "20") == 0
    scores = {}
    for name, model in (("base", base_model), ("new", out)):
        assert main(["evaluate", "--model", str(model), "--images", str(UCI / "held-out"), "--json"]) == 0
        scores[name] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["accuracy"]
    assert scores["new"] > scores["base"] + 0.03, scores


def test_validation_dir_and_early_stopping_keep_the_best_epoch(tmp_path, base_model, capsys):
    out = tmp_path / "new.npz"
    extra = ["--validation-dir", str(UCI / "held-out"), "--early-stopping", "2", "--epochs", "15"]
    assert finetune(UCI / "train", base_model, None, out, *extra) == 0
    model = load_model(out)
    history = json.loads(out.with_suffix(".history.json").read_text())["epochs"]
    best = min(history, key=lambda e: e["val_loss"])
    assert model.metadata["training"]["best_epoch"] == best["epoch"]
    assert model.metadata["metrics"]["val_loss"] == best["val_loss"]
    assert model.metadata["dataset"]["validation"]["count"] == 300
    assert len(history) == 15 or len(history) == best["epoch"] + 2


def test_init_from_takes_a_served_model_directory_newest_version(tmp_path, base_model, capsys):
    served = tmp_path / "models" / "digits"
    for version in ("1", "2", "10"):
        (served / version).mkdir(parents=True)
        shutil.copy(base_model, served / version / "model.npz")
    out = tmp_path / "new.npz"
    assert finetune(UCI / "train", served, None, out, "--epochs", "1") == 0
    assert load_model(out).metadata["dataset"]["init_from"]["path"] == str(served / "10" / "model.npz")
    # MODEL_DIR/NAME for a flat MODEL_DIR/NAME.npz
    assert finetune(UCI / "train", base_model.with_suffix(""), None, out, "--epochs", "1") == 0


def classes_folder(root: Path, names: list[str]) -> Path:
    for name in names:
        (root / name).mkdir(parents=True)
        for src in sorted((UCI / "train" / "1").iterdir())[:3]:
            shutil.copy(src, root / name / src.name)
    return root


@pytest.mark.parametrize(
    "setup, extra, message",
    [
        (lambda root: root.mkdir(), [], "no class folders"),
        (lambda root: (root / "3").mkdir(parents=True), [], "no images in its class folders"),
        (lambda root: classes_folder(root, ["1", "seven"]), [], "'seven' is not one of the model's classes"),
        (lambda root: classes_folder(root, ["1"]), [], "only one class (1)"),
        (lambda root: classes_folder(root, ["1", "2"]), ["--hidden-size", "50"], "hidden units"),
        (lambda root: None, [], "does not exist"),
        (
            lambda root: classes_folder(root, ["1", "2"]),
            ["--validation-split", "0", "--early-stopping", "3"],
            "--early-stopping needs held-out data",
        ),
    ],
    ids=[
        "empty",
        "no-images",
        "class-the-model-lacks",
        "single-class",
        "architecture",
        "missing",
        "no-held-out",
    ],
)
def test_bad_folders_are_one_line_and_exit_2(tmp_path, base_model, capsys, setup, extra, message):
    root = tmp_path / "images"
    setup(root)
    assert finetune(root, base_model, None, tmp_path / "x.npz", *extra) == 2
    assert message in one_error_line(capsys)


def test_a_single_class_is_fine_with_replay(tmp_path, base_model, mnist_sample_dir, capsys):
    root = classes_folder(tmp_path / "images", ["1"])
    assert finetune(root, base_model, mnist_sample_dir, tmp_path / "x.npz", "--epochs", "1") == 0


def test_a_corrupt_image_is_named_and_skipped(tmp_path, base_model, capsys):
    root = classes_folder(tmp_path / "images", ["1", "2"])
    (root / "2" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 50)
    assert finetune(root, base_model, None, tmp_path / "x.npz", "--epochs", "1") == 0
    captured = capsys.readouterr()
    assert f"warning: {root / '2' / 'broken.png'}: " in captured.err
    assert "skipped 1" in captured.out
