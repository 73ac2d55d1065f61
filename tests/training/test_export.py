import io
import json
import pickle
import zipfile

import numpy as np
import pytest

from training import ModelFormatError, TwoLayerNet, load_model, save_model
from training.export import FORMAT_VERSION

META = {"input_shape": [2, 3], "class_names": ["a", "b", "c"], "dataset": {"name": "toy"}}


@pytest.fixture
def net():
    return TwoLayerNet(6, 4, 3, rng=np.random.default_rng(0), dtype=np.float32)


@pytest.fixture
def model_path(tmp_path, net):
    path = tmp_path / "toy.npz"
    save_model(path, net, META)
    return path


def _rewrite(path, **arrays):
    """Write an .npz with exactly these arrays (bypassing save_model's checks)."""
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _meta(**changes):
    return np.array(json.dumps(META | changes))


def _valid_arrays(net, meta=None):
    meta = dict(META, format_version=FORMAT_VERSION) if meta is None else meta
    return {**net.params, "metadata": np.array(json.dumps(meta))}


def test_round_trip(model_path, net):
    model = load_model(model_path)
    for k, v in net.params.items():
        np.testing.assert_array_equal(model.params[k], v)
        assert model.params[k].dtype == np.float32
    assert model.metadata["format_version"] == FORMAT_VERSION
    assert model.metadata["hidden_size"] == 4
    assert model.metadata["dataset"] == {"name": "toy"}
    assert model.class_names == ["a", "b", "c"]
    assert model.input_shape == (2, 3)
    x = np.random.default_rng(1).random((5, 6)).astype(np.float32)
    np.testing.assert_array_equal(model.network().predict(x), net.predict(x))


def test_version_follows_the_bytes(tmp_path, net, model_path):
    first = load_model(model_path).version
    assert first == load_model(model_path).version
    net.params["b2"][0] += 1
    other = tmp_path / "other.npz"
    save_model(other, net, META | {"created_at": "x"})
    assert load_model(other).version != first


def test_unserialisable_metadata_leaves_the_old_file(tmp_path, net, model_path):
    before = model_path.read_bytes()
    with pytest.raises(TypeError):
        save_model(model_path, net, META | {"not_json": object()})
    assert model_path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy.npz"]


def test_save_checks_metadata_against_net(tmp_path, net):
    with pytest.raises(ValueError, match="input_shape"):
        save_model(tmp_path / "m.npz", net, META | {"input_shape": [28, 28]})
    with pytest.raises(ValueError, match="class names"):
        save_model(tmp_path / "m.npz", net, META | {"class_names": ["a"]})
    with pytest.raises(ValueError, match="class_names"):
        save_model(tmp_path / "m.npz", net, {"input_shape": [6]})


def test_pickle_bearing_file_is_refused_without_unpickling(tmp_path, net):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    arrays = _valid_arrays(net)
    arrays["W1"] = np.array([Evil()], dtype=object)
    path = tmp_path / "evil.npz"
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    with pytest.raises(ModelFormatError, match="pickled objects") as err:
        load_model(path)
    assert str(path) in str(err.value)
    assert not marker.exists()


def test_a_raw_pickle_is_not_an_npz(tmp_path):
    path = tmp_path / "model.npz"
    path.write_bytes(pickle.dumps({"W1": [1, 2]}))
    with pytest.raises(ModelFormatError, match="not an .npz"):
        load_model(path)


def test_truncated_file(tmp_path, model_path):
    data = model_path.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match="cut.npz: not an .npz"):
        load_model(cut)


def test_corrupt_member_inside_a_valid_zip(tmp_path, net):
    path = tmp_path / "bad.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for name, arr in _valid_arrays(net).items():
            buf = io.BytesIO()
            np.save(buf, arr)
            zf.writestr(f"{name}.npy", buf.getvalue()[:20] if name == "W2" else buf.getvalue())
    with pytest.raises(ModelFormatError, match="bad.npz"):
        load_model(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.update(W1=np.zeros((5, 4), np.float32)), "input_shape"),
        (lambda a: a.update(b1=np.zeros(5, np.float32)), "do not chain"),
        (lambda a: a.update(W2=np.zeros((4, 2), np.float32), b2=np.zeros(2, np.float32)), "class names"),
        (lambda a: a.update(b2=np.zeros((3, 1), np.float32)), "vectors"),
        (lambda a: a["W1"].__setitem__((0, 0), np.nan), "W1 contains NaN"),
        (lambda a: a["b2"].__setitem__(0, np.inf), "b2 contains NaN or infinite"),
        (lambda a: a.update(W1=a["W1"].astype(np.int64)), "dtype int64"),
        (lambda a: a.update(W1=a["W1"].astype(np.float64)), "mix dtypes"),
        (lambda a: a.pop("b1"), "missing arrays: b1"),
        (lambda a: a.update(extra=np.zeros(1)), "unexpected entries: extra.npy"),
        (lambda a: a.update(metadata=np.array("{not json")), "not valid JSON"),
        (lambda a: a.update(metadata=np.array("[1, 2]")), "JSON object"),
        (lambda a: a.update(metadata=_meta(format_version=99)), "format_version 99"),
        (lambda a: a.update(metadata=np.array(json.dumps(META))), "format_version None"),
        (lambda a: a.update(metadata=_meta(format_version=True)), "format_version True"),
        (lambda a: a.update(metadata=_meta(format_version=1.0)), "format_version 1.0"),
        (
            lambda a: a.update(
                W1=np.zeros((6, 0), np.float32), b1=np.zeros(0, np.float32), W2=np.zeros((0, 3), np.float32)
            ),
            "no hidden units",
        ),
        (lambda a: a.update(metadata=_meta(format_version=1, hidden_size=5)), "hidden_size 5"),
        (lambda a: a.update(metadata=_meta(format_version=1, hidden_size="4")), "hidden_size '4'"),
        (lambda a: a.update(metadata=_meta(format_version=1, input_shape=[0, 6])), "positive integers"),
        (lambda a: a.update(metadata=_meta(format_version=1, class_names=[])), "class_names"),
        (lambda a: a.update(metadata=np.array([1, 2])), "single JSON string"),
    ],
)
def test_invalid_contents_are_named(tmp_path, net, change, message):
    arrays = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in _valid_arrays(net).items()}
    change(arrays)
    path = tmp_path / "broken.npz"
    _rewrite(path, **arrays)
    with pytest.raises(ModelFormatError, match=message) as err:
        load_model(path)
    assert str(err.value).startswith(str(path))


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ModelFormatError, match="no such file"):
        load_model(tmp_path / "nope.npz")
    with pytest.raises(ModelFormatError, match="is a directory"):
        load_model(tmp_path)


def test_oversized_members_are_refused_before_decompressing(tmp_path, net, monkeypatch):
    import training.export as export

    path = tmp_path / "big.npz"
    save_model(path, net, META)
    monkeypatch.setattr(export, "MAX_MODEL_BYTES", 200)
    with pytest.raises(ModelFormatError, match="over the"):
        load_model(path)
