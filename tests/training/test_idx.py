"""The IDX codec (training/idx.py): round trips, the exact bytes written, and one-line errors
naming the file for every way a file can be wrong. Property tests: test_idx_properties.py."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from training.idx import IDXFormatError, read_idx, write_idx

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "data" / "mnist-sample"


def idx_bytes(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return struct.pack(f">I{len(dims)}I", magic, *dims) + payload


# --- IDX reading and writing -----------------------------------------------------------------
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_write_then_read_round_trips(tmp_path, suffix):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([0, 9, 3, 3, 1], dtype=np.uint8)
    write_idx(tmp_path / f"images{suffix}", images)
    write_idx(tmp_path / f"labels{suffix}", labels)
    np.testing.assert_array_equal(read_idx(tmp_path / f"images{suffix}"), images)
    np.testing.assert_array_equal(read_idx(tmp_path / f"labels{suffix}"), labels)
    assert read_idx(tmp_path / f"labels{suffix}").dtype == np.uint8


def test_write_idx_layout_and_reproducible_gzip(tmp_path):
    labels = np.array([7, 2, 1], dtype=np.uint8)
    write_idx(tmp_path / "labels", labels)
    assert (tmp_path / "labels").read_bytes() == b"\x00\x00\x08\x01\x00\x00\x00\x03\x07\x02\x01"
    write_idx(tmp_path / "a.gz", labels)
    write_idx(tmp_path / "b.gz", labels)
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()
    assert gzip.decompress((tmp_path / "a.gz").read_bytes()) == (tmp_path / "labels").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gz", "b.gz", "labels"]


@pytest.mark.parametrize("bad", [np.zeros((2, 3), np.uint8), np.array([256]), np.array([0.5])])
def test_write_idx_refuses_what_idx_ubyte_cannot_hold(tmp_path, bad):
    with pytest.raises(ValueError, match="IDX"):
        write_idx(tmp_path / "x", bad)
    assert not (tmp_path / "x").exists()


IMAGES_3 = idx_bytes(0x0803, (3, 28, 28), bytes(3 * 784))


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "too short for an IDX header (0 bytes)"),
        (b"\x12\x34\x08\x03" + bytes(12), "not an IDX file: magic number 0x12340803"),
        (idx_bytes(0x0D03, (1, 2, 2), bytes(16)), "unsupported IDX element type 0x0d"),
        (idx_bytes(0x0802, (2, 2), bytes(4)), "unsupported IDX rank 2 (expected 1 for labels or 3"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x03", "truncated header: 3 dimensions need 16 bytes, got 8"),
        (IMAGES_3[: 16 + 1000], "truncated: header says 3x28x28 (2352 bytes) but only 1000 bytes follow"),
        (IMAGES_3 + b"extra", "5 trailing bytes after the 2352 bytes that 3x28x28 needs"),
        (gzip.compress(IMAGES_3), "it looks gzip-compressed, so name it .gz"),
    ],
    ids=["empty", "magic", "type", "rank", "header", "truncated", "trailing", "gzip-unnamed"],
)
def test_read_idx_names_the_file_and_the_problem(tmp_path, content, problem):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(IDXFormatError) as info:
        read_idx(path)
    assert str(info.value).startswith(f"{path}: ")
    assert problem in str(info.value)
    assert info.value.path == str(path)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (gzip.compress(IMAGES_3)[:-20], "truncated gzip data"),
        (b"not gzip at all", "corrupt gzip data"),
        # a flipped byte inside the deflate stream or CRC: zlib.error or BadGzipFile
        (lambda gz: gz[:40] + bytes([gz[40] ^ 0xFF]) + gz[41:], "corrupt gzip data"),
        (lambda gz: gz[:-8] + bytes([gz[-8] ^ 0x01]) + gz[-7:], "corrupt gzip data"),
        (gzip.compress(IMAGES_3[:-1]), "truncated: header says 3x28x28 (2352 bytes) but only 2351"),
    ],
    ids=["cut-short", "not-gzip", "flipped-data", "flipped-crc", "truncated-payload"],
)
def test_read_idx_rejects_corrupt_gzip(tmp_path, content, problem):
    if callable(content):
        content = content(gzip.compress(bytes(range(256)) * 4 + IMAGES_3))
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(IDXFormatError) as info:
        read_idx(path)
    assert str(info.value).startswith(f"{path}: ")
    assert problem in str(info.value)


def test_read_idx_reads_gzip_as_gzip_does(tmp_path):
    """Several gzip members one after another, and zero padding after the last, as GzipFile
    reads them; garbage after the last member is refused. The arrays are read-only views."""
    pixels = bytes(range(256)) * 9 + bytes(48)  # 3 x 28 x 28
    content = idx_bytes(0x0803, (3, 28, 28), pixels)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(content[:100]) + gzip.compress(content[100:]) + bytes(7))
    images = read_idx(path)
    np.testing.assert_array_equal(images, np.frombuffer(pixels, np.uint8).reshape(3, 28, 28))
    assert not images.flags.writeable
    path.write_bytes(gzip.compress(IMAGES_3) + b"junk")
    with pytest.raises(IDXFormatError, match="corrupt gzip data"):
        read_idx(path)


def test_read_idx_missing_file_and_directory(tmp_path):
    with pytest.raises(IDXFormatError, match="no such file"):
        read_idx(tmp_path / "nope.gz")
    with pytest.raises(IDXFormatError, match="is a directory"):
        read_idx(tmp_path)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


_HEADERS = st.sampled_from([0x0801, 0x0803, 0x0802, 0x0808, 0x0D03, 0x0800, 0x1F8B0800])
_IDX_LIKE = st.builds(
    lambda magic, dims, body: idx_bytes(magic, tuple(dims), body),
    _HEADERS | st.integers(0, 2**32 - 1),
    st.lists(st.integers(0, 6) | st.integers(0, 2**32 - 1), max_size=4),
    st.binary(max_size=300),
)


@settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(content=st.binary(max_size=300) | _IDX_LIKE, compress=st.booleans(), gz_name=st.booleans())
def test_read_idx_parses_or_raises_idx_format_error(fuzz_dir, content, compress, gz_name):
    path = fuzz_dir / ("data.gz" if gz_name else "data")
    path.write_bytes(gzip.compress(content, mtime=0) if compress else content)
    try:
        arr = read_idx(path)
    except IDXFormatError as exc:
        assert str(exc).startswith(f"{path}: ")
    else:
        assert arr.dtype == np.uint8 and arr.ndim in (1, 3)


# --- The shipped sample --------------------------------------------------------------------
def test_shipped_sample_is_real_mnist():
    images = read_idx(SAMPLE_DIR / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(SAMPLE_DIR / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (1000, 28, 28) and labels.shape == (1000,)
    # the first MNIST test labels, and white digits on a black background
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    counts = [85, 126, 116, 107, 110, 87, 87, 99, 89, 94]
    assert np.bincount(labels, minlength=10).tolist() == counts
    assert images.max() == 255 and images[:, 0, :].max() == 0
    assert 0.10 < images.mean() / 255 < 0.16
