"""The evaluation gate (``train --publish --publish-if-better``, training/gate.py): real fine-tunes
on the UCI digits, published as real versions, compared with the model serving under the name
(or the --init-from model before the first version), kept when worse (exit 3), forced, refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from training import load_model
from training.cli import NOT_PUBLISHED, main
from training.gate import HeldOut, compare
from training.nets import TwoLayerNet

UCI = Path(__file__).resolve().parents[1] / "data" / "uci-digits"


@pytest.fixture(scope="module")
def base_model(tmp_path_factory, mnist_sample_dir) -> Path:
    """A small MNIST model trained on the sample: the --init-from model."""
    out = tmp_path_factory.mktemp("base") / "base.npz"
    argv = ["train", "--data-dir", str(mnist_sample_dir), "--output", str(out), "--hidden-size", "32"]
    assert main([*argv, "--epochs", "5", "--no-progress"]) == 0
    return out


def gated(base: Path, replay_dir: Path, publish: Path, *extra: str) -> int:
    argv = ["train", "--images", str(UCI / "train"), "--init-from", str(base), "--seed", "0"]
    argv += ["--replay", "mnist", "--data-dir", str(replay_dir), "--epochs", "3", "--no-progress"]
    return main([*argv, "--publish", str(publish), "--publish-if-better", *extra])


def test_compare_passes_ties_and_allows_each_set_its_tolerance() -> None:
    """Two real nets and held-out sets built so that the accuracies are known exactly: the
    baseline is right on all 100, the new net on 99 (one point down)."""
    rng = np.random.default_rng(0)
    base, new = (TwoLayerNet(4, 3, 2, weight_init_std=1.0, rng=np.random.default_rng(s)) for s in (1, 2))
    x = rng.standard_normal((20_000, 4)) * 3
    a, b = base.predict(x).argmax(axis=1), new.predict(x).argmax(axis=1)
    same, differ = np.flatnonzero(a == b), np.flatnonzero(a != b)
    assert same.size >= 99 and differ.size >= 1
    rows = np.concatenate((same[:99], differ[:1]))
    xs, ts = x[rows], a[rows]  # the baseline's answers are the labels: 100/100; the new net 99/100

    assert compare(base, base, [HeldOut("val", xs, ts, 0.0)], "base").passed  # a tie passes
    strict = compare(new, base, [HeldOut("val", xs, ts, 0.0)], "base")
    assert not strict.passed
    assert strict.figures["val"] == {
        "count": 100, "accuracy": 0.99, "baseline_accuracy": 1.0, "tolerance": 0.0, "passed": False,
    }  # fmt: skip
    assert strict.reason == "worse than base on held-out data: val accuracy 0.9900 vs 1.0000"
    lenient = compare(new, base, [HeldOut("test", xs, ts, 0.01)], "base")
    assert lenient.passed and lenient.reason.startswith("at least as good as base: test accuracy 0.9900")
    both = compare(new, base, [HeldOut("test", xs, ts, 0.01), HeldOut("val", xs, ts, 0.0)], "base")
    assert not both.passed and both.figures["test"]["passed"] and not both.figures["val"]["passed"]


def test_the_first_gated_publish_beats_the_init_model_and_records_the_figures(
    tmp_path, base_model, mnist_sample_dir, capsys
) -> None:
    publish = tmp_path / "models" / "tuned"
    publish.parent.mkdir()
    assert gated(base_model, mnist_sample_dir, publish) == 0
    out = capsys.readouterr().out
    assert f"gate: passed: at least as good as {base_model}" in out
    model = load_model(publish / "1" / "model.npz")
    gate = model.metadata["gate"]
    assert gate["passed"] is True and gate["forced"] is False
    assert gate["baseline"]["path"] == str(base_model)
    assert gate["baseline"]["sha256"] == load_model(base_model).sha256
    assert set(gate["sets"]) == {"val", "test"}  # the UCI held-out split and MNIST's test set
    val, test = gate["sets"]["val"], gate["sets"]["test"]
    assert val["count"] == 30 and test["count"] == 1000
    assert (val["tolerance"], test["tolerance"]) == (0.0, 0.01)
    assert val["accuracy"] >= val["baseline_accuracy"]
    assert test["accuracy"] >= test["baseline_accuracy"] - 0.01
    assert val["accuracy"] == model.metadata["metrics"]["val_accuracy"]  # the same held-out set
    history = json.loads((publish / "1" / "history.json").read_text())
    assert history["gate"] == gate

    # again: the baseline is now version 1, the same recipe gives the same weights: a tie passes
    assert gated(base_model, mnist_sample_dir, publish) == 0
    assert load_model(publish / "2" / "model.npz").metadata["gate"]["baseline"]["path"] == str(
        publish / "1" / "model.npz"
    )


def test_a_worse_model_is_not_published_and_exits_3_unless_forced(
    tmp_path, base_model, mnist_sample_dir, capsys
) -> None:
    publish = tmp_path / "models" / "tuned"
    publish.parent.mkdir()
    assert gated(base_model, mnist_sample_dir, publish) == 0
    capsys.readouterr()
    barely = ["--epochs", "1", "--learning-rate", "1e-6"]  # the base model, all but unchanged
    assert gated(base_model, mnist_sample_dir, publish, *barely) == NOT_PUBLISHED == 3
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith(f"not published: worse than {publish / '1' / 'model.npz'} on held-out data: ")
    assert "the served model stays (--force publishes anyway)" in out[-1]
    assert sorted(p.name for p in publish.iterdir()) == ["1"]  # nothing written, no checkpoint left
    assert not list(publish.parent.glob("*.ckpt"))

    assert gated(base_model, mnist_sample_dir, publish, *barely, "--force") == 0
    assert "gate: FAILED, published anyway (--force)" in capsys.readouterr().out
    gate = load_model(publish / "2" / "model.npz").metadata["gate"]
    assert gate["passed"] is False and gate["forced"] is True


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--output", "{tmp}/x.npz", "--publish-if-better"], "--publish-if-better gates --publish"),
        (["--publish", "{tmp}/m", "--force"], "--force overrides --publish-if-better"),
        (["--publish", "{tmp}/m", "--publish-if-better", "--validation-split", "0"], "has none"),
    ],
    ids=["no-publish", "force-alone", "no-held-out"],
)
def test_gate_options_that_cannot_work_are_one_line_before_training(
    tmp_path, base_model, extra, message, capsys
) -> None:
    argv = ["train", "--images", str(UCI / "train"), "--init-from", str(base_model), "--no-progress"]
    assert main([*argv, *(a.format(tmp=tmp_path) for a in extra)]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and message in captured.err, captured.err
    assert "epoch" not in captured.out


def test_a_baseline_with_other_classes_is_refused(tmp_path, base_model, mnist_sample_dir, capsys) -> None:
    publish = tmp_path / "tuned"
    (publish / "1").mkdir(parents=True)
    shutil.copy(
        Path(__file__).resolve().parents[2] / "models" / "fashion-mnist.npz", publish / "1" / "model.npz"
    )
    assert gated(base_model, mnist_sample_dir, publish) == 2
    assert "has other classes or inputs" in capsys.readouterr().err
