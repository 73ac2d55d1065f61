"""Property tests for the model loader: any file gives a ``ModelFile`` or ``ModelFormatError``.

Never another exception, and never unpickling: Hypothesis feeds ``load_model`` arbitrary bytes,
a valid model file with bytes flipped, cut or spliced, and ``.npz`` files of random arrays
(object arrays included) under random names with random metadata.
"""

from __future__ import annotations

import io
import json
import math
import re
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_profiles import examples

from training import ModelFile, ModelFormatError, TwoLayerNet, load_model, save_model
from training.export import FORMAT_VERSION
from training.nets import PARAM_NAMES

META = {"input_shape": [2, 3], "class_names": ["a", "b", "c"]}
UNPICKLED: list[object] = []


class Tripwire:
    """Stored in object arrays; unpickling it records itself, which the tests assert never happens."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (UNPICKLED.append, ("unpickled",))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("npz-properties")


@pytest.fixture(scope="module")
def valid_bytes(scratch: Path) -> bytes:
    path = scratch / "valid.npz"
    save_model(path, TwoLayerNet(6, 4, 3, rng=np.random.default_rng(0), dtype=np.float32), META)
    return path.read_bytes()


def load_or_error(path: Path) -> ModelFile | None:
    """What ``load_model`` gives, checked: a valid model, or None for ``ModelFormatError``."""
    UNPICKLED.clear()
    try:
        model = load_model(path)
    except ModelFormatError as exc:
        assert str(exc).startswith(f"{path}: ")
        model = None
    finally:
        assert not UNPICKLED, "load_model unpickled an object"
    if model is not None:
        w1, b1, w2, b2 = (model.params[k] for k in PARAM_NAMES)
        assert w1.shape[1] == b1.shape[0] == w2.shape[0] and w2.shape[1] == b2.shape[0]
        assert w1.shape[0] == math.prod(model.input_shape)
        assert len(model.class_names) == b2.shape[0]
        assert all(np.isfinite(p).all() for p in model.params.values())
        assert model.metadata["format_version"] == FORMAT_VERSION
    return model


# --- arbitrary bytes ------------------------------------------------------------------------
@settings(max_examples=examples(150))
@given(
    st.one_of(
        st.binary(max_size=600),
        st.binary(max_size=600).map(lambda b: b"PK\x03\x04" + b),
        st.binary(max_size=600).map(lambda b: b"\x93NUMPY" + b),
    )
)
def test_arbitrary_bytes(scratch: Path, data: bytes) -> None:
    path = scratch / "any.npz"
    path.write_bytes(data)
    assert load_or_error(path) is None


# --- a valid file, damaged ------------------------------------------------------------------
#: (zip record, offset, xor mask): a byte anywhere (record None), or in the first 46 bytes
#: after one of the file's "PK" signatures, where the zip headers' fields are.
_flip = st.tuples(st.none() | st.integers(0, 50), st.integers(0, 10**6), st.integers(1, 255))


@settings(max_examples=examples(300))
@given(
    flips=st.lists(_flip, max_size=4),
    cut=st.none() | st.integers(0, 10**6),
    splice=st.none() | st.tuples(st.integers(0, 10**6), st.binary(min_size=1, max_size=16)),
)
def test_valid_file_with_bytes_flipped_cut_or_inserted(
    scratch: Path,
    valid_bytes: bytes,
    flips: list[tuple[int | None, int, int]],
    cut: int | None,
    splice: tuple[int, bytes] | None,
) -> None:
    data = bytearray(valid_bytes)
    records = [m.start() for m in re.finditer(b"PK", valid_bytes)]
    for record, offset, mask in flips:
        if record is None:
            data[offset % len(data)] ^= mask
        else:
            data[(records[record % len(records)] + offset % 46) % len(data)] ^= mask
    if splice is not None:
        position, extra = splice
        data[position % len(data) : position % len(data)] = extra
    if cut is not None:
        del data[cut % len(data) :]
    path = scratch / "damaged.npz"
    path.write_bytes(bytes(data))
    model = load_or_error(path)
    if bytes(data) == valid_bytes:
        assert model is not None


# --- random arrays and metadata written with np.savez ----------------------------------------
def _json_containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # a named function, not a lambda: Hypothesis 6.170 reads a lambda's source to check that it
    # uses its argument, and misreads this one (a deprecation warning, an error under -W error)
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    _json_containers,
    max_leaves=12,
)
_shape_value = st.one_of(
    st.just([2, 3]),
    st.just([6]),
    st.lists(st.integers(-2, 7), max_size=3),
    st.just([2**62, 4]),  # overflows int64 to 0 in np.prod
    _json,
)
_names_value = st.one_of(st.just(["a", "b", "c"]), st.lists(st.text(max_size=3), max_size=4), _json)
_version_value = st.one_of(st.just(FORMAT_VERSION), st.sampled_from([0, 2, 1.0, True, "1"]), _json)


@st.composite
def metadata_arrays(draw: st.DrawFn) -> np.ndarray:
    meta = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "format_version": _version_value,
                "input_shape": _shape_value,
                "class_names": _names_value,
                "extra": _json,
            },
        )
    )
    text = json.dumps(meta)
    form = draw(st.sampled_from(["str"] * 5 + ["bytes", "list", "text", "deep", "number"]))
    if form == "bytes":
        return np.array(text.encode())
    if form == "list":  # not 0-d
        return np.array([text])
    if form == "text":  # not JSON, or not an object
        return np.array(draw(st.text(max_size=40)))
    if form == "deep":  # nested too deep for the json module
        return np.array("[" * 5_000)
    if form == "number":
        return np.array(1.5)
    return np.array(text)


_dtypes = st.sampled_from(
    [np.float32, np.float64, np.float16, np.int64, np.uint8, np.bool_, np.complex64, ">f4", "<U3", "V4"]
)


@st.composite
def param_arrays(draw: st.DrawFn, name: str) -> np.ndarray:
    if draw(st.integers(0, 19)) == 0:
        return np.array([Tripwire()], dtype=object)
    ndim = 1 if name.startswith("b") else 2
    ndim = draw(st.sampled_from([ndim] * 4 + [0, 1, 2, 3]))
    shape = tuple(draw(st.lists(st.sampled_from([0, 1, 2, 3, 4, 6]), min_size=ndim, max_size=ndim)))
    dtype = draw(st.sampled_from([np.float32] * 6 + [None])) or draw(_dtypes)
    arr = np.zeros(shape, dtype=dtype)
    if arr.size and np.dtype(dtype).kind == "f" and draw(st.booleans()):
        fill = draw(st.floats(allow_nan=True, allow_infinity=True, width=16))
        arr.flat[draw(st.integers(0, arr.size - 1))] = fill
    return arr


@st.composite
def npz_members(draw: st.DrawFn) -> dict[str, np.ndarray]:
    """The four weights and the metadata, each valid-shaped or not, some missing, some extra."""
    members: dict[str, np.ndarray] = {}
    valid = TwoLayerNet(6, 4, 3, rng=np.random.default_rng(0), dtype=np.float32).params
    for name in PARAM_NAMES:
        choice = draw(st.integers(0, 5))
        if choice <= 2:
            members[name] = valid[name]
        elif choice <= 4:
            members[name] = draw(param_arrays(name))
        # else: missing
    if draw(st.integers(0, 9)):
        members["metadata"] = draw(metadata_arrays())
    for extra in draw(
        st.lists(st.sampled_from(["extra", "W3", "w1", "metadata.json"]), max_size=2, unique=True)
    ):
        members[extra] = np.zeros(1)
    return members


@settings(max_examples=examples(300))
@given(members=npz_members(), compressed=st.booleans())
def test_random_arrays_and_metadata(scratch: Path, members: dict[str, np.ndarray], compressed: bool) -> None:
    path = scratch / "random.npz"
    with open(path, "wb") as fh:
        (np.savez_compressed if compressed else np.savez)(fh, **members)
    load_or_error(path)


# --- zip entries Python's zipfile cannot read ------------------------------------------------
def _patched(valid: bytes, offset_in_central: int, value: int) -> bytes:
    """The file with one byte of the first central-directory entry replaced."""
    data = bytearray(valid)
    data[data.find(b"PK\x01\x02") + offset_in_central] = value
    return bytes(data)


@pytest.mark.parametrize(
    ("offset", "value", "what"),
    [
        (10, 99, "compression method 99"),  # zipfile: NotImplementedError
        (8, 0x01, "encrypted flag"),  # zipfile: RuntimeError (password required)
    ],
)
def test_unreadable_zip_entries_are_model_format_errors(
    tmp_path: Path, valid_bytes: bytes, offset: int, value: int, what: str
) -> None:
    """Regression: these leaked zipfile's NotImplementedError and RuntimeError."""
    path = tmp_path / "odd.npz"
    path.write_bytes(_patched(valid_bytes, offset, value))
    with pytest.raises(ModelFormatError, match="odd.npz: not a valid .npz file"):
        load_model(path)


def _npy_header_only(shape: tuple[int, ...]) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buffer.getvalue() + bytes(64)


@pytest.mark.parametrize("shape", [(2**40,), (10**30,)])
def test_member_claiming_a_huge_shape(tmp_path: Path, valid_bytes: bytes, shape: tuple[int]) -> None:
    """Regression: an .npy header claiming 4 TiB (MemoryError) or more than a C long
    (OverflowError) leaked numpy's exception; the data is not there, so it is invalid."""
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(io.BytesIO(valid_bytes)) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = _npy_header_only(shape) if info.filename == "W1.npy" else src.read(info)
            dst.writestr(info.filename, data)
    with pytest.raises(ModelFormatError, match="huge.npz: not a valid .npz file"):
        load_model(path)


def test_metadata_nested_too_deep(tmp_path: Path) -> None:
    """Regression: json.loads raised RecursionError on deeply nested metadata."""
    net = TwoLayerNet(6, 4, 3, rng=np.random.default_rng(0), dtype=np.float32)
    path = tmp_path / "deep.npz"
    with open(path, "wb") as fh:
        np.savez(fh, metadata=np.array("[" * 100_000), **net.params)
    with pytest.raises(ModelFormatError, match="metadata is not valid JSON"):
        load_model(path)


def test_input_shape_whose_product_wraps_to_zero(tmp_path: Path) -> None:
    """Regression: np.prod([2**62, 4]) wraps int64 to 0, which matched a W1 with 0 rows."""
    params = {
        "W1": np.zeros((0, 4), np.float32),
        "b1": np.zeros(4, np.float32),
        "W2": np.zeros((4, 3), np.float32),
        "b2": np.zeros(3, np.float32),
    }
    meta = dict(META, input_shape=[2**62, 4], format_version=FORMAT_VERSION)
    path = tmp_path / "wrap.npz"
    with open(path, "wb") as fh:
        np.savez(fh, metadata=np.array(json.dumps(meta)), **params)
    with pytest.raises(ModelFormatError, match="does not match W1"):
        load_model(path)


def _header_positions(data: bytes) -> list[int]:
    """Offsets of the bytes that describe rather than hold data: each zip entry's local header
    and the start of its .npy header (magic, version, header length), the central directory and
    the end record. (The .npy header's text is left to the random flips above.)"""
    positions: set[int] = set()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            start = info.header_offset
            name_len, extra_len = struct.unpack_from("<HH", data, start + 26)
            body = start + 30 + name_len + extra_len
            positions.update(range(start, body + 12))
        positions.update(range(zf.start_dir, len(data)))  # type: ignore[attr-defined]
    return sorted(p for p in positions if p < len(data))


def test_every_single_byte_corruption_of_the_headers(tmp_path: Path, valid_bytes: bytes) -> None:
    """Exhaustive where it is cheap: each header byte of a valid file flipped (high bit, all
    bits) loads or raises ModelFormatError. It found zipfile's NotImplementedError
    ("zip file version 10.9") leaking from load_model."""
    path = tmp_path / "flipped.npz"
    for position in _header_positions(valid_bytes):
        for mask in (0x40, 0xFF):
            data = bytearray(valid_bytes)
            data[position] ^= mask
            path.write_bytes(bytes(data))
            load_or_error(path)
