"""The model registry: every .npz in MODEL_DIR, loaded once, bad files refused by name."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from service.errors import ModelNotFound
from service.registry import ModelLoadError, load_registry
from training import TwoLayerNet, load_model, save_model


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


@pytest.mark.parametrize("input_shape,image_size", [
    ([28, 28], (28, 28)), ([784], (28, 28)), ([28, 28, 1], (28, 28)), ([12], None),
    ([2, 3, 2], None),
])
def test_image_size_follows_the_input_shape(tmp_path: Path, input_shape: list[int],
                                            image_size: tuple[int, int] | None) -> None:
    size = int(np.prod(input_shape))
    save_model(tmp_path / "m.npz", TwoLayerNet(size, 4, 2),
               {"input_shape": input_shape, "class_names": ["a", "b"]})
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
def test_an_invalid_model_file_stops_loading_naming_the_file(tmp_path: Path, model_dir: Path,
                                                             damage: str) -> None:
    shutil.copy(model_dir / "mnist.npz", tmp_path / "mnist.npz")
    bad = tmp_path / "broken.npz"
    if damage == "truncate":
        bad.write_bytes((model_dir / "mnist.npz").read_bytes()[:1000])
    elif damage == "not-a-zip":
        bad.write_text("hello")
    else:
        save_model(bad, TwoLayerNet(784, 4, 10), {"input_shape": [784],
                                                 "class_names": list("0123456789"),
                                                 "image_preprocessing": "cifar"})
    with pytest.raises(ModelLoadError) as info:
        load_registry(tmp_path, "mnist")
    assert _one_line(info).startswith(str(bad))
