"""publish_model: the next version MODEL_DIR/NAME/<N>/model.npz, appearing whole or not at all."""

import os
import threading

import numpy as np
import pytest

from service.registry import scan
from training import PublishError, TwoLayerNet, load_model, publish_model
from training.export import claim_version, next_version

META = {"input_shape": [2, 3], "class_names": ["a", "b", "c"], "dataset": {"name": "toy"}}


@pytest.fixture
def net():
    return TwoLayerNet(6, 4, 3, rng=np.random.default_rng(0), dtype=np.float32)


@pytest.fixture
def name_dir(tmp_path):
    (tmp_path / "models").mkdir()
    return tmp_path / "models" / "toy"


def entries(directory):
    return sorted(p.name for p in directory.iterdir())


def test_first_publish_is_1_then_2(net, name_dir):
    first = publish_model(net, META, name_dir)
    second = publish_model(net, META, name_dir, {"history.json": b"{}"})
    assert first == name_dir / "1" / "model.npz"
    assert second == name_dir / "2" / "model.npz"
    assert entries(name_dir) == ["1", "2"]  # no temp directory left behind
    assert entries(name_dir / "2") == ["history.json", "model.npz"]
    assert (name_dir / "2" / "history.json").read_bytes() == b"{}"
    np.testing.assert_array_equal(load_model(second).params["W1"], net.params["W1"])


def test_entries_that_are_not_versions_are_ignored(net, name_dir):
    name_dir.mkdir()
    for name in ("latest", "07", ".hidden", "0", "x1"):
        (name_dir / name).mkdir()
    (name_dir / "9").write_bytes(b"a file, not a version directory")
    (name_dir / "3").mkdir()  # counted though empty: a copy by hand may be filling it
    assert next_version(name_dir) == 4
    assert publish_model(net, META, name_dir) == name_dir / "4" / "model.npz"


def test_a_version_taken_meanwhile_is_skipped(net, name_dir):
    publish_model(net, META, name_dir)
    tmp = name_dir / ".tmp-test"
    tmp.mkdir()
    (tmp / "model.npz").write_bytes(b"ours")
    # another training renamed its directory to 2 after we looked (next_version said 2)
    (name_dir / "2").mkdir()
    (name_dir / "2" / "model.npz").write_bytes(b"theirs")
    assert claim_version(tmp, name_dir, 2) == name_dir / "3"
    assert (name_dir / "2" / "model.npz").read_bytes() == b"theirs"
    assert (name_dir / "3" / "model.npz").read_bytes() == b"ours"
    assert entries(name_dir) == ["1", "2", "3"]


def test_concurrent_publishes_get_distinct_versions(net, name_dir):
    name_dir.mkdir()
    results, errors = [], []
    start = threading.Barrier(6)

    def publish():
        start.wait()
        try:
            results.append(publish_model(net, META, name_dir))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=publish) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(p.parent.name for p in results) == ["1", "2", "3", "4", "5", "6"]
    assert entries(name_dir) == ["1", "2", "3", "4", "5", "6"]
    for path in results:
        load_model(path)


def test_a_failure_while_writing_leaves_nothing(net, name_dir):
    publish_model(net, META, name_dir)
    # the model is written, then the second file fails (str, not bytes): the version must not appear
    with pytest.raises(TypeError):
        publish_model(net, META, name_dir, {"history.json": "not bytes"})  # type: ignore[dict-item]
    assert entries(name_dir) == ["1"]
    with pytest.raises(ValueError, match="class_names"):
        publish_model(net, {"input_shape": [2, 3]}, name_dir)
    with pytest.raises(ValueError, match="cannot go beside"):
        publish_model(net, META, name_dir, {"../escape": b""})
    assert entries(name_dir) == ["1"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_an_unwritable_name_dir_leaves_nothing(net, name_dir):
    name_dir.mkdir()
    name_dir.chmod(0o555)
    try:
        with pytest.raises(PermissionError):
            publish_model(net, META, name_dir)
    finally:
        name_dir.chmod(0o755)
    assert entries(name_dir) == []


def test_the_version_directory_gets_an_ordinary_mode(net, name_dir):
    path = publish_model(net, META, name_dir)
    umask = os.umask(0)
    os.umask(umask)
    assert path.parent.stat().st_mode & 0o777 == 0o777 & ~umask


def test_the_service_serves_the_published_version(net, name_dir):
    publish_model(net, META, name_dir)
    publish_model(net, META, name_dir)
    found = scan(name_dir.parent)
    assert found.error is None and not found.failed
    assert list(found.versions()["toy"]) == ["1", "2"]


@pytest.mark.parametrize(
    ("make", "target", "message"),
    [
        (lambda d: None, "missing/toy", "the model directory {d}/missing does not exist"),
        (lambda d: (d / "toy").write_bytes(b""), "toy", "{d}/toy: exists and is not a directory"),
        (
            lambda d: (d / "toy.npz").write_bytes(b""),
            "toy",
            "{d}/toy.npz and {d}/toy: one model in two layouts",
        ),
        (lambda d: None, ".toy", "not a model name"),
        (lambda d: None, "toy.npz", "not a model name"),
    ],
    ids=["parent-missing", "not-a-directory", "flat-file-too", "hidden", "npz-suffix"],
)
def test_refused_targets(net, tmp_path, make, target, message):
    make(tmp_path)
    before = entries(tmp_path)
    with pytest.raises(PublishError) as info:
        publish_model(net, META, tmp_path / target)
    assert message.format(d=tmp_path) in str(info.value)
    assert "\n" not in str(info.value)
    assert entries(tmp_path) == before


def test_what_a_crash_leaves_is_not_served(net, name_dir):
    # killed after writing, before the rename: a hidden directory with a whole model in it
    publish_model(net, META, name_dir)
    crashed = name_dir / f".tmp-{os.getpid()}-crashed"
    crashed.mkdir()
    (crashed / "model.npz").write_bytes((name_dir / "1" / "model.npz").read_bytes())
    assert [(s.name, s.version) for s in scan(name_dir.parent).sources] == [("toy", "1")]
    assert next_version(name_dir) == 2
