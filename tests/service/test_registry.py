"""Model files: every .npz in MODEL_DIR found, loaded once, bad files refused by name; ``scan``
reports what loaded, failed or went. The first load is checked through ``create_app``, which
does it (a reload from an empty state), and the state it leaves."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from service import create_app
from service.errors import ModelNotFound, VersionNotFound
from service.registry import ModelLoadError, scan, signature
from service.settings import Settings
from service.state import EXTENSION, ServiceState
from training import TwoLayerNet, load_model, save_model


def load(model_dir: Path, default: str = "mnist", *, strict: bool = True) -> ServiceState:
    """What a worker serves after its first load of ``model_dir``."""
    app = create_app(Settings(model_dir=model_dir, default_model=default), strict=strict)
    return app.extensions[EXTENSION]  # type: ignore[no-any-return]


def test_every_npz_is_a_model_named_after_its_stem(model_dir: Path) -> None:
    state = load(model_dir, "mnist")
    assert sorted(state.models) == ["fashion-mnist", "mnist"]  # README.md is not a model
    assert state.lookup(None).model.name == "mnist"
    mnist = state.lookup("mnist").model
    assert mnist.version == load_model(model_dir / "mnist.npz").version
    assert (mnist.input_shape, mnist.input_size, mnist.image_size) == ((28, 28), 784, (28, 28))
    assert mnist.num_classes == 10 and mnist.net.dtype == np.float32


def test_per_model_constants(model_dir: Path) -> None:
    fashion = load(model_dir, "mnist").lookup("fashion-mnist").model
    assert (fashion.input_shape, fashion.image_size) == ((784,), (28, 28))
    assert fashion.image_style == "fashion-mnist"  # from metadata dataset.name
    assert fashion.info["accepts_images"] is True
    assert fashion.info["class_names"][9] == "Ankle boot"


def test_predict_is_the_networks_forward_pass(model_dir: Path) -> None:
    model = load(model_dir, "mnist").lookup(None).model
    x = np.random.default_rng(0).random((3, 784), dtype=np.float32)
    np.testing.assert_array_equal(model.predict(x), model.net.predict(x))


def test_unknown_model_is_a_404_listing_the_models(model_dir: Path) -> None:
    with pytest.raises(ModelNotFound) as info:
        load(model_dir, "mnist").lookup("digits")
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
    assert load(tmp_path, "m").lookup("m").model.image_size == image_size


def _one_line(exc: pytest.ExceptionInfo[ModelLoadError]) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as info:
        load(tmp_path / "nowhere", "mnist")
    assert _one_line(info) == f"MODEL_DIR {tmp_path / 'nowhere'}: no such directory"


def test_directory_without_models(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no .npz model files"):
        load(tmp_path, "mnist")


def test_missing_default_model(model_dir: Path) -> None:
    with pytest.raises(ModelLoadError) as info:
        load(model_dir, "digits")
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
        load(tmp_path, "mnist")
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
    state = load(tmp_path, "mnist")
    assert sorted(state.models) == ["fashion-mnist", "mnist"]
    assert state.versions("mnist") == ["1", "2", "10"]  # in numeric order
    assert state.lookup(None).model.version == "10"  # the newest serves by default
    second = state.lookup("mnist", "2").model
    assert second.num_classes == 10 and second.info["dataset"] == {"name": "fashion-mnist"}
    fashion = state.lookup("fashion-mnist").model
    assert fashion.version == load_model(tmp_path / "fashion-mnist.npz").version  # flat: hash id
    assert state.versions("fashion-mnist") == [fashion.version]
    assert fashion.info["sha256"] == fashion.sha256 and fashion.sha256.startswith(fashion.version)


def test_unknown_version_is_a_404_listing_the_versions(tmp_path: Path, model_dir: Path) -> None:
    _versioned(tmp_path, model_dir, {"mnist/1/model.npz": "mnist", "mnist/2/model.npz": "mnist"})
    with pytest.raises(VersionNotFound) as info:
        load(tmp_path, "mnist").lookup("mnist", "3")
    assert (info.value.status, info.value.code) == (404, "version_not_found")
    assert info.value.details == {"available": ["1", "2"]}
    with pytest.raises(ModelNotFound, match="no model named 'digits'"):
        load(tmp_path, "mnist").versions("digits")


def test_one_name_in_two_layouts_is_refused(tmp_path: Path, model_dir: Path) -> None:
    _versioned(tmp_path, model_dir, {"mnist/1/model.npz": "mnist", "mnist.npz": "mnist"})
    with pytest.raises(ModelLoadError) as info:
        load(tmp_path, "mnist")
    assert _one_line(info) == (
        f"{tmp_path / 'mnist'} and {tmp_path / 'mnist.npz'}: one model in two layouts; keep one"
    )


def test_an_invalid_file_stops_a_strict_load_and_is_skipped_otherwise(
    tmp_path: Path, model_dir: Path
) -> None:
    _versioned(
        tmp_path,
        model_dir,
        {"mnist/1/model.npz": "mnist", "mnist/2/model.npz": "corrupt", "fashion-mnist.npz": "fashion"},
    )
    with pytest.raises(ModelLoadError) as info:
        load(tmp_path, "mnist")
    assert _one_line(info).startswith(str(tmp_path / "mnist" / "2" / "model.npz"))
    state = load(tmp_path, "mnist", strict=False)
    assert state.versions("mnist") == ["1"]  # another version is valid: skipped
    assert [(s.name, s.version) for s, _ in scan(tmp_path).failed] == [("mnist", "2")]
    # a model other than the default with no valid file: not served
    (tmp_path / "fashion-mnist.npz").write_bytes(b"no longer a model")
    state = load(tmp_path, "mnist", strict=False)
    assert sorted(state.models) == ["mnist"]
    assert sorted((s.name, s.version or "") for s, _ in scan(tmp_path).failed) == [
        ("fashion-mnist", ""),
        ("mnist", "2"),
    ]
    # the default model with no valid file: nothing to serve by default, so it stops
    (tmp_path / "mnist" / "1" / "model.npz").write_bytes(b"no longer a model")
    with pytest.raises(ModelLoadError, match="mnist/1/model.npz"):
        load(tmp_path, "mnist", strict=False)


def test_a_scan_reads_only_what_changed_and_reports_it(tmp_path: Path, model_dir: Path) -> None:
    _versioned(tmp_path, model_dir, {"mnist/1/model.npz": "mnist", "fashion-mnist.npz": "fashion"})
    first = scan(tmp_path)
    assert sorted(m.name for m in first.loaded) == ["fashion-mnist", "mnist"]
    assert (first.failed, first.removed, first.error) == ([], [], None)
    # nothing changed: nothing read, the same models
    again = scan(tmp_path, first.files)
    assert again.loaded == [] and again.files == first.files
    # a new version, a corrupt one, a removed model
    _versioned(tmp_path, model_dir, {"mnist/2/model.npz": "mnist", "mnist/3/model.npz": "corrupt"})
    (tmp_path / "fashion-mnist.npz").unlink()
    changed = scan(tmp_path, first.files)
    assert [(m.name, m.version) for m in changed.loaded] == [("mnist", "2")]
    assert [(s.name, s.version) for s, _ in changed.failed] == [("mnist", "3")]
    assert [m.name for m in changed.removed] == ["fashion-mnist"]
    assert {name: list(v) for name, v in changed.versions().items()} == {"mnist": ["1", "2"]}
    # a failure already reported is not read again until the file changes
    corrupt = tmp_path / "mnist" / "3" / "model.npz"
    assert scan(tmp_path, changed.files, {corrupt: signature(corrupt)}).failed == []
    corrupt.write_bytes(b"changed, still corrupt")
    assert len(scan(tmp_path, changed.files, {corrupt: (0, 0, 0)}).failed) == 1


def test_a_bad_directory_is_reported_not_raised(tmp_path: Path) -> None:
    result = scan(tmp_path / "nowhere")
    assert isinstance(result.error, ModelLoadError) and result.files == {}
