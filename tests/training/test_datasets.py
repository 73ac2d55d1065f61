"""The dataset catalogue and its sources (training/datasets.py): --data-dir, the installed package,
the cache, and downloads through pooch from a real HTTP server on loopback (real bytes, real
SHA-256s). The IDX codec underneath is tested in test_idx.py."""

import gzip
import hashlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pooch
import pytest

from training.datasets import (
    DATASETS,
    PIXEL_PREPROCESSING,
    Dataset,
    DatasetSpec,
    DatasetUnavailableError,
    DownloadError,
    as_training_arrays,
    download_file,
    load_dataset,
)
from training.idx import IDXFormatError, read_idx, write_idx

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "data" / "mnist-sample"
FILE_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
DIGITS = tuple(str(d) for d in range(10))


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_tiny_dataset(directory: Path, n_train: int = 6, n_test: int = 4, seed: int = 0) -> dict:
    """Four real IDX .gz files in ``directory``; returns file name -> SHA-256."""
    rng = np.random.default_rng(seed)
    arrays = (
        rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, n_train, dtype=np.uint8),
        rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, n_test, dtype=np.uint8),
    )
    for name, arr in zip(FILE_NAMES, arrays, strict=True):
        write_idx(directory / name, arr)
    return {name: sha256_of(directory / name) for name in FILE_NAMES}


# --- data_dir ------------------------------------------------------------------------------
def test_load_dataset_from_data_dir_uses_the_sample():
    ds = load_dataset("mnist", SAMPLE_DIR, download=False)
    assert isinstance(ds, Dataset) and ds.source == "data-dir"
    assert ds.x_train.shape == ds.x_test.shape == (1000, 28, 28)
    assert ds.t_train.shape == ds.t_test.shape == (1000,)
    assert ds.x_train.dtype == ds.t_train.dtype == np.uint8
    assert ds.class_names == DIGITS
    assert set(ds.files) == set(FILE_NAMES)
    for name, info in ds.files.items():
        assert info["path"] == str(SAMPLE_DIR / name)
        assert info["sha256"] == sha256_of(SAMPLE_DIR / name)
        assert (
            info["idx_sha256"]
            == hashlib.sha256(gzip.decompress((SAMPLE_DIR / name).read_bytes())).hexdigest()
        )
    json.dumps({n: dict(f) for n, f in ds.files.items()})


def test_data_dir_accepts_uncompressed_files(tmp_path):
    for name in FILE_NAMES:
        (tmp_path / name.removesuffix(".gz")).write_bytes(gzip.decompress((SAMPLE_DIR / name).read_bytes()))
    ds = load_dataset("fashion-mnist", tmp_path, download=False)
    assert ds.name == "fashion-mnist" and ds.class_names[0] == "T-shirt/top"
    assert set(ds.files) == {n.removesuffix(".gz") for n in FILE_NAMES}
    np.testing.assert_array_equal(ds.x_test, read_idx(SAMPLE_DIR / "t10k-images-idx3-ubyte.gz"))


def test_data_dir_missing_file_names_directory_and_file(tmp_path):
    write_tiny_dataset(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetUnavailableError) as info:
        load_dataset("mnist", tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and "t10k-labels-idx1-ubyte.gz" in message
    assert "\n" not in message
    with pytest.raises(DatasetUnavailableError, match="does not exist"):
        load_dataset("mnist", tmp_path / "absent")


def test_count_mismatch_names_both_files(tmp_path):
    write_tiny_dataset(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([1, 2, 3], np.uint8))
    with pytest.raises(IDXFormatError) as info:
        load_dataset("mnist", tmp_path)
    images, labels = tmp_path / "t10k-images-idx3-ubyte.gz", tmp_path / "t10k-labels-idx1-ubyte.gz"
    assert str(info.value) == f"{images}: 4 images but {labels} has 3 labels"


@pytest.mark.parametrize(
    ("name", "array", "problem"),
    [
        (
            "train-labels-idx1-ubyte.gz",
            np.array([0, 1, 2, 3, 10, 11], np.uint8),
            "label 10 at index 4 is outside [0, 9] (2 labels out of range)",
        ),
        ("train-images-idx3-ubyte.gz", np.zeros((6, 5, 5), np.uint8), "images are 5x5, expected 28x28"),
        ("train-images-idx3-ubyte.gz", np.zeros(6, np.uint8), "expected images (rank 3), found labels"),
        ("train-images-idx3-ubyte.gz", np.zeros((0, 28, 28), np.uint8), "holds no images"),
    ],
    ids=["label-range", "image-size", "swapped", "empty"],
)
def test_dataset_content_checks(tmp_path, name, array, problem):
    write_tiny_dataset(tmp_path)
    write_idx(tmp_path / name, array)
    with pytest.raises(IDXFormatError) as info:
        load_dataset("mnist", tmp_path)
    assert str(info.value).startswith(f"{tmp_path / name}: ")
    assert problem in str(info.value)


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="unknown dataset 'cifar'; choose from fashion-mnist, mn"):
        load_dataset("cifar")


# --- Preprocessing ---------------------------------------------------------------------------
def test_as_training_arrays_scales_to_unit_range():
    x = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)
    out = as_training_arrays(x, np.float64)
    assert out.shape == (1, 4) and out.dtype == np.float64
    np.testing.assert_allclose(out, [[0.0, 1.0, 0.2, 0.4]])
    assert as_training_arrays(x).dtype == np.float32
    sample = read_idx(SAMPLE_DIR / "t10k-images-idx3-ubyte.gz")
    flat = as_training_arrays(sample, np.float32)
    assert flat.shape == (1000, 784) and flat.min() >= 0.0 and flat.max() == 1.0
    np.testing.assert_array_equal(flat[3].reshape(28, 28), sample[3] / np.float32(255))


def test_as_training_arrays_rejects_wrong_input():
    with pytest.raises(ValueError, match="uint8"):
        as_training_arrays(np.zeros((2, 784)), np.float32)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="floating point"):
        as_training_arrays(np.zeros((2, 784), np.uint8), np.int32)


def test_pixel_preprocessing_documents_the_scaling():
    assert PIXEL_PREPROCESSING == {
        "scale": 255,
        "range": [0, 1],
        "layout": "row-major 28x28, white digit on black",
    }
    json.dumps(PIXEL_PREPROCESSING)


# --- The named datasets ----------------------------------------------------------------------
def test_dataset_table():
    assert set(DATASETS) == {"mnist", "fashion-mnist"}
    for spec in DATASETS.values():
        assert spec.file_names == FILE_NAMES
        assert set(spec.sha256) == set(FILE_NAMES)
        assert len(spec.class_names) == 10
        assert all(m.endswith("/") for m in spec.mirrors)
    assert DATASETS["mnist"].class_names == DIGITS
    assert DATASETS["mnist"].mirrors[0] == "https://ossci-datasets.s3.amazonaws.com/mnist/"
    assert DATASETS["mnist"].package_dir is None
    fashion = DATASETS["fashion-mnist"]
    assert fashion.class_names == (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    )
    assert fashion.package_dir == "/usr/share/datasets/fashion-mnist"
    assert set(fashion.idx_sha256) == set(FILE_NAMES)
    with pytest.raises(ValueError, match="64 lowercase hex"):
        DatasetSpec(name="x", class_names=DIGITS, mirrors=(), sha256={"f": "abc"})


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(),
    reason="dataset-fashion-mnist (Debian package) is not installed",
)
def test_installed_fashion_mnist_package_matches_the_official_data(tmp_path):
    ds = load_dataset("fashion-mnist", cache_dir=tmp_path, download=False, progress=False)
    assert ds.source == "package"
    assert ds.x_train.shape == (60000, 28, 28) and ds.x_test.shape == (10000, 28, 28)
    assert np.bincount(ds.t_train).tolist() == [6000] * 10
    assert not any(tmp_path.iterdir())


# --- Downloading, against a real HTTP server on loopback -------------------------------------
class _RecordingServer(http.server.ThreadingHTTPServer):
    """Serves files; records (method, path, status) of every request instead of logging it."""

    def __init__(self, address, handler):
        super().__init__(address, handler)
        self.requests: list[tuple[str, str, str]] = []


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        assert isinstance(self.server, _RecordingServer)
        self.server.requests.append((self.command, self.path, args[1] if len(args) > 1 else ""))


@pytest.fixture
def mirror(tmp_path):
    """A static HTTP server on 127.0.0.1 serving ``root``; yields (base URL, root, request log)."""
    root = tmp_path / "www"
    root.mkdir()
    server = _RecordingServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", root, server.requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def served(mirror):
    """A tiny dataset: a good copy under good/, a corrupted one under bad/ -> (spec, base, log)."""
    base, root, log = mirror
    hashes = write_tiny_dataset(root / "good")
    (root / "bad").mkdir()
    for name in FILE_NAMES:
        data = bytearray((root / "good" / name).read_bytes())
        data[len(data) // 2] ^= 0x01
        (root / "bad" / name).write_bytes(bytes(data))
    spec = DatasetSpec(name="tiny", class_names=DIGITS, mirrors=(base + "good/",), sha256=hashes)
    return spec, base, log


def cache_listing(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.rglob("*") if p.is_file())


def test_download_lands_verified_in_the_cache_then_cache_is_used_offline(tmp_path, served):
    spec, base, log = served
    cache = tmp_path / "cache"
    ds = load_dataset(spec, cache_dir=cache, progress=False)
    assert ds.source == "download" and ds.x_train.shape == (6, 28, 28) and ds.t_test.shape == (4,)
    assert cache_listing(cache) == sorted(FILE_NAMES)
    for name in FILE_NAMES:
        assert sha256_of(cache / "tiny" / name) == spec.sha256[name]
        assert ds.files[name] == {
            "path": str(cache / "tiny" / name),
            "sha256": spec.sha256[name],
            "idx_sha256": ds.files[name]["idx_sha256"],
        }
    requests_after_download = len(log)
    assert requests_after_download == 4

    again = load_dataset(spec, cache_dir=cache, progress=False, mirrors=["http://127.0.0.1:9/"])
    assert again.source == "cache" and len(log) == requests_after_download
    np.testing.assert_array_equal(again.x_train, ds.x_train)


def test_corrupted_download_is_rejected_and_leaves_nothing(tmp_path, served):
    spec, base, log = served
    cache = tmp_path / "cache"
    with pytest.raises(DatasetUnavailableError) as info:
        load_dataset(spec, cache_dir=cache, progress=False, mirrors=[base + "bad/"])
    message = str(info.value)
    assert "SHA-256 mismatch" in message and "\n" not in message
    assert f"{base}bad/train-images-idx3-ubyte.gz: SHA-256 mismatch: got " in message
    assert cache_listing(cache) == []


def test_download_file_verifies_before_the_rename(tmp_path, served):
    spec, base, _ = served
    dest = tmp_path / "out" / "train-labels-idx1-ubyte.gz"
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):
        download_file(
            [base + "bad/train-labels-idx1-ubyte.gz"],
            dest,
            spec.sha256["train-labels-idx1-ubyte.gz"],
            progress=False,
        )
    assert not dest.exists() and list(dest.parent.iterdir()) == []
    got = download_file(
        [base + "bad/train-labels-idx1-ubyte.gz", base + "good/train-labels-idx1-ubyte.gz"],
        dest,
        spec.sha256["train-labels-idx1-ubyte.gz"],
        progress=True,
    )
    assert got == dest and sha256_of(dest) == spec.sha256["train-labels-idx1-ubyte.gz"]
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]


@pytest.mark.parametrize("first", ["missing", "bad", "closed port"])
def test_a_failing_first_mirror_is_followed_by_the_second(tmp_path, served, closed_port_url, first):
    """Not found, a wrong SHA-256, nobody listening: each sends every file to the next mirror."""
    spec, base, log = served
    cache = tmp_path / "cache"
    first_url = closed_port_url if first == "closed port" else f"{base}{first}/"
    ds = load_dataset(spec, cache_dir=cache, progress=False, mirrors=[first_url, base + "good/"])
    assert ds.source == "download"
    assert cache_listing(cache) == sorted(FILE_NAMES)
    for name in FILE_NAMES:
        assert sha256_of(cache / "tiny" / name) == spec.sha256[name]
    tried = [path.split("/")[1] for _, path, _ in log]  # file by file: first mirror, then second
    assert tried == ["good"] * 4 if first == "closed port" else [first, "good"] * 4


def test_download_over_the_size_limit_is_abandoned(tmp_path, served):
    spec, base, _ = served
    name = "train-images-idx3-ubyte.gz"
    original = tmp_path / "www" / "good" / name  # what the mirror serves
    dest = tmp_path / "out" / name
    url = base + "good/" + name
    with pytest.raises(DownloadError) as info:
        download_file([url], dest, spec.sha256[name], progress=False, max_bytes=1000)
    assert str(info.value) == f"{name}: {url}: more than 1000 bytes; abandoned"
    assert list(dest.parent.iterdir()) == []
    download_file([url], dest, spec.sha256[name], progress=False, max_bytes=original.stat().st_size)
    assert dest.read_bytes() == original.read_bytes()


def test_downloads_print_nothing_without_a_progress_bar(tmp_path, served):
    """pooch logs each download to stderr by default; downloads stay as quiet as they were."""
    spec, base, _ = served
    name = "train-labels-idx1-ubyte.gz"
    dest = tmp_path / "out" / name
    code = (
        "from training.datasets import download_file; "
        f"download_file([{base + 'good/' + name!r}], {str(dest)!r}, {spec.sha256[name]!r}, progress=False)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert sha256_of(dest) == spec.sha256[name]

    level = pooch.get_logger().level
    download_file([base + "good/" + name], dest, spec.sha256[name], progress=False)
    assert pooch.get_logger().level == level  # put back as it was


def test_404_mirror_falls_through_to_the_next(tmp_path, served):
    spec, base, log = served
    ds = load_dataset(
        spec, cache_dir=tmp_path / "c", progress=False, mirrors=[base + "missing/", base + "good/"]
    )
    assert ds.source == "download"
    statuses = [(path.split("/")[1], status) for _, path, status in log]
    assert statuses.count(("missing", "404")) == 4 and statuses.count(("good", "200")) == 4


def test_everything_failing_gives_one_line_with_the_fix(tmp_path, served, closed_port_url):
    spec, base, _ = served
    cache = tmp_path / "cache"
    with pytest.raises(DatasetUnavailableError) as info:
        load_dataset(spec, cache_dir=cache, progress=False, mirrors=[base + "missing", closed_port_url])
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"tiny: not found in {cache / 'tiny'} and download failed (")
    assert "HTTP 404" in message and "unreachable" in message
    assert message.endswith("; pass --data-dir DIR with the four IDX files, or connect to the internet")
    assert cache_listing(cache) == []


def test_no_download_says_so(tmp_path, served):
    spec, _, log = served
    with pytest.raises(DatasetUnavailableError, match="downloading is off; .* or allow downloads"):
        load_dataset(spec, cache_dir=tmp_path, download=False)
    assert log == []


def test_corrupted_cache_file_is_replaced(tmp_path, served):
    spec, _, log = served
    cache = tmp_path / "cache"
    load_dataset(spec, cache_dir=cache, progress=False)
    (cache / "tiny" / "train-images-idx3-ubyte.gz").write_bytes(b"garbage")
    ds = load_dataset(spec, cache_dir=cache, progress=False)
    assert ds.source == "download" and len(log) == 5
    assert (
        sha256_of(cache / "tiny" / "train-images-idx3-ubyte.gz") == spec.sha256["train-images-idx3-ubyte.gz"]
    )


def test_corrupted_cache_file_is_reported_and_removed_when_downloads_are_off(tmp_path, served, caplog):
    spec, _, log = served
    cache = tmp_path / "cache"
    load_dataset(spec, cache_dir=cache, progress=False)
    corrupt = cache / "tiny" / "t10k-labels-idx1-ubyte.gz"
    corrupt.write_bytes(corrupt.read_bytes()[:-1])
    with pytest.raises(DatasetUnavailableError, match="downloading is off"):
        load_dataset(spec, cache_dir=cache, download=False)
    assert f"{corrupt}: SHA-256 does not match" in caplog.text
    assert not corrupt.exists() and len(log) == 4


def test_environment_variables_choose_cache_and_mirror(tmp_path, served, monkeypatch):
    spec, base, _ = served
    offline = DatasetSpec(
        name="tiny", class_names=DIGITS, mirrors=("http://127.0.0.1:9/",), sha256=spec.sha256
    )
    monkeypatch.setenv("DIGITS_DATA_CACHE", str(tmp_path / "envcache"))
    monkeypatch.setenv("DIGITS_DATA_MIRROR", f"{base}missing/, {base}good")
    ds = load_dataset(offline, progress=False)
    assert ds.source == "download"
    assert cache_listing(tmp_path / "envcache") == sorted(FILE_NAMES)
    assert os.path.dirname(ds.files[FILE_NAMES[0]]["path"]) == str(tmp_path / "envcache" / "tiny")


def test_package_dir_is_checked_by_idx_hash_and_skipped_when_wrong(tmp_path, served):
    spec, base, log = served
    package = tmp_path / "package"
    write_tiny_dataset(package)
    idx_hashes = {
        n: hashlib.sha256(gzip.decompress((package / n).read_bytes())).hexdigest() for n in FILE_NAMES
    }
    good = DatasetSpec(
        name="tiny",
        class_names=DIGITS,
        mirrors=spec.mirrors,
        sha256=spec.sha256,
        idx_sha256=idx_hashes,
        package_dir=str(package),
    )
    ds = load_dataset(good, cache_dir=tmp_path / "cache", progress=False)
    assert ds.source == "package" and log == []

    write_idx(package / "t10k-labels-idx1-ubyte.gz", np.array([9, 9, 9, 9], np.uint8))
    ds = load_dataset(good, cache_dir=tmp_path / "cache", progress=False)
    assert ds.source == "download" and len(log) == 4
