"""The model registry: every .npz in MODEL_DIR, loaded once, bad files refused by name."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from service.errors import ModelNotFound, VersionNotFound
from service.registry import ModelLoadError, ModelSource, load_registry
from training import ModelFormatError, TwoLayerNet, load_model, save_model


def test_every_npz_is_a_model_named_after_its_stem(model_dir: Path) -> None:
    registry = load_registry(model_dir, "mnist")
    assert sorted(registry.models) == ["fashion-mnist", "mnist"]  # README.md is not a model
    assert registry.default.name == "mnist"
    mnist = registry.get("mnist")
    assert mnist.version == load_model(model_dir / "mnist.npz").version
    assert (mnist.input_shape, mnist.input_size, mnist.image_size) == ((28, 28), 784, (28, 28))
    assert mnist.num_classes == 10 and mnist.net.dtype == np.float32


def test_per_model_constants(model_dir: Path) -> None:
    fashion = load_registry(model_dir, "mnist").get("fashion-mnist")
    assert (fashion.input_shape, fashion.image_size) == ((784,), (28, 28))
    assert fashion.image_style == "fashion-mnist"  # from metadata dataset.name
    assert fashion.info["accepts_images"] is True
    assert fashion.info["class_names"][9] == "Ankle boot"


def test_predict_is_the_networks_forward_pass(model_dir: Path) -> None:
    model = load_registry(model_dir, "mnist").default
    x = np.random.default_rng(0).random((3, 784), dtype=np.float32)
    np.testing.assert_array_equal(model.predict(x), model.net.predict(x))


def test_unknown_model_is_a_404_listing_the_models(model_dir: Path) -> None:
    with pytest.raises(ModelNotFound) as info:
        load_registry(model_dir, "mnist").get("digits")
    assert info.value.status == 404
    assert info.value.details == {"available": ["fashion-mnist", "mnist"]}


@pytest.mark.parametrize(
    "input_shape,image_size",
    [
        ([28, 28], (28, 28)),
        ([784], (28, 28)),
        ([28, 28, 1], (28, 28)),
        ([12], None),
        ([2, 3, 2], None),
    ],
)
def test_image_size_follows_the_input_shape(
    tmp_path: Path, input_shape: list[int], image_size: tuple[int, int] | None
) -> None:
    size = int(np.prod(input_shape))
    save_model(
        tmp_path / "m.npz", TwoLayerNet(size, 4, 2), {"input_shape": input_shape, "class_names": ["a", "b"]}
    )
    assert load_registry(tmp_path, "m").get("m").image_size == image_size


def _one_line(exc: pytest.ExceptionInfo[ModelLoadError]) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as info:
        load_registry(tmp_path / "nowhere", "mnist")
    assert _one_line(info) == f"MODEL_DIR {tmp_path / 'nowhere'}: no such directory"


def test_directory_without_models(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no .npz model files"):
        load_registry(tmp_path, "mnist")


def test_missing_default_model(model_dir: Path) -> None:
    with pytest.raises(ModelLoadError) as info:
        load_registry(model_dir, "digits")
    assert "DEFAULT_MODEL 'digits' is not in" in _one_line(info)
    assert "found: fashion-mnist, mnist" in str(info.value)


@pytest.mark.parametrize("damage", ["truncate", "not-a-zip", "bad-metadata"])
def test_an_invalid_model_file_stops_loading_naming_the_file(
    tmp_path: Path, model_dir: Path, damage: str
) -> None:
    shutil.copy(model_dir / "mnist.npz", tmp_path / "mnist.npz")
    bad = tmp_path / "broken.npz"
    if damage == "truncate":
        bad.write_bytes((model_dir / "mnist.npz").read_bytes()[:1000])
    elif damage == "not-a-zip":
        bad.write_text("hello")
    else:
        save_model(
            bad,
            TwoLayerNet(784, 4, 10),
            {"input_shape": [784], "class_names": list("0123456789"), "image_preprocessing": "cifar"},
        )
    with pytest.raises(ModelLoadError) as info:
        load_registry(tmp_path, "mnist")
    assert _one_line(info).startswith(str(bad))


# --- versions -----------------------------------------------------------------------------
def _versioned(tmp_path: Path, model_dir: Path, layout: dict[str, str]) -> Path:
    """``layout``: relative path -> "mnist", "fashion" or "corrupt" (the bytes it gets)."""
    mnist = (model_dir / "mnist.npz").read_bytes()
    data = {"mnist": mnist, "fashion": (model_dir / "fashion-mnist.npz").read_bytes(), "corrupt": mnist[:500]}
    for relative, kind in layout.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(data[kind])
    return tmp_path


def test_versioned_layout_beside_flat_files(tmp_path: Path, model_dir: Path) -> None:
    _versioned(
        tmp_path,
        model_dir,
        {
            "mnist/1/model.npz": "mnist",
            "mnist/2/model.npz": "fashion",
            "mnist/10/model.npz": "mnist",
            "fashion-mnist.npz": "fashion",
            "mnist/3/README.md": "mnist",  # no model.npz (yet): not a version
            "mnist/latest/model.npz": "mnist",  # not a positive integer: ignored
            "mnist/07/model.npz": "mnist",  # leading zero: ignored
            "notes/model.npz": "mnist",  # a directory without version directories
        },
    )
    registry = load_registry(tmp_path, "mnist")
    assert sorted(registry.models) == ["fashion-mnist", "mnist"]
    assert registry.versions("mnist") == ["1", "2", "10"]  # in numeric order
    assert registry.default.version == "10"  # the newest serves by default
    assert registry.get("mnist", "2").num_classes == 10 and registry.get("mnist", "2").info["dataset"] == {
        "name": "fashion-mnist"
    }
    fashion = registry.get("fashion-mnist")
    assert fashion.version == load_model(tmp_path / "fashion-mnist.npz").version  # flat: hash id
    assert registry.versions("fashion-mnist") == [fashion.version]
    assert fashion.info["sha256"] == fashion.sha256 and fashion.sha256.startswith(fashion.version)


def test_unknown_version_is_a_404_listing_the_versions(tmp_path: Path, model_dir: Path) -> None:
    _versioned(tmp_path, model_dir, {"mnist/1/model.npz": "mnist", "mnist/2/model.npz": "mnist"})
    with pytest.raises(VersionNotFound) as info:
        load_registry(tmp_path, "mnist").get("mnist", "3")
    assert (info.value.status, info.value.code) == (404, "version_not_found")
    assert info.value.details == {"available": ["1", "2"]}
    with pytest.raises(ModelNotFound, match="no model named 'digits'"):
        load_registry(tmp_path, "mnist").versions("digits")


def test_one_name_in_two_layouts_is_refused(tmp_path: Path, model_dir: Path) -> None:
    _versioned(tmp_path, model_dir, {"mnist/1/model.npz": "mnist", "mnist.npz": "mnist"})
    with pytest.raises(ModelLoadError) as info:
        load_registry(tmp_path, "mnist")
    assert _one_line(info) == (
        f"{tmp_path / 'mnist'} and {tmp_path / 'mnist.npz'}: one model in two layouts; keep one"
    )


def test_an_invalid_file_stops_loading_unless_failures_are_handled(tmp_path: Path, model_dir: Path) -> None:
    _versioned(
        tmp_path,
        model_dir,
        {"mnist/1/model.npz": "mnist", "mnist/2/model.npz": "corrupt", "fashion-mnist.npz": "fashion"},
    )
    with pytest.raises(ModelLoadError) as info:
        load_registry(tmp_path, "mnist")
    assert _one_line(info).startswith(str(tmp_path / "mnist" / "2" / "model.npz"))
    failures: list[tuple[ModelSource, ModelFormatError]] = []
    registry = load_registry(tmp_path, "mnist", on_failure=lambda *f: failures.append(f))
    assert registry.versions("mnist") == ["1"]  # another version is valid: skipped
    assert [(s.name, s.version) for s, _ in failures] == [("mnist", "2")]
    # a model other than the default with no valid file: not served, and said so
    (tmp_path / "fashion-mnist.npz").write_bytes(b"no longer a model")
    failures.clear()
    registry = load_registry(tmp_path, "mnist", on_failure=lambda *f: failures.append(f))
    assert sorted(registry.models) == ["mnist"]
    assert sorted((s.name, s.version) for s, _ in failures) == [("fashion-mnist", None), ("mnist", "2")]
    # the default model with no valid file: nothing to serve by default, so it stops
    (tmp_path / "mnist" / "1" / "model.npz").write_bytes(b"no longer a model")
    with pytest.raises(ModelLoadError, match="mnist/1/model.npz"):
        load_registry(tmp_path, "mnist", on_failure=lambda *f: None)
