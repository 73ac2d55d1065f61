"""Property tests for the IDX reader: any bytes give an array or ``IDXFormatError``, never more.

``test_idx.py`` has the example-based tests; here Hypothesis writes arbitrary bytes, raw and
gzip, and well-formed headers with arbitrary dimensions over payloads of the wrong length.
"""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_profiles import examples

from training.idx import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, MAX_IDX_BYTES, IDXFormatError, read_idx


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory for every example (Hypothesis reuses module-scoped fixtures)."""
    return tmp_path_factory.mktemp("idx-properties")


def read_or_error(path: Path) -> np.ndarray | None:
    """The array ``read_idx`` returns, or None if it raised ``IDXFormatError`` naming the file."""
    try:
        arr = read_idx(path)
    except IDXFormatError as exc:
        assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)
        return None
    assert arr.dtype == np.uint8 and arr.ndim in (1, 3)
    return arr


# --- arbitrary bytes ------------------------------------------------------------------------
@settings(max_examples=examples(200))
@given(content=st.binary(max_size=512), gz_name=st.booleans(), compress=st.booleans())
def test_arbitrary_bytes(scratch: Path, content: bytes, gz_name: bool, compress: bool) -> None:
    """Raw or gzip-compressed, named .gz or not: parsed, or refused with IDXFormatError."""
    path = scratch / ("any.gz" if gz_name else "any")
    path.write_bytes(gzip.compress(content, mtime=0) if compress else content)
    read_or_error(path)


# --- valid headers, arbitrary dimensions and payload lengths --------------------------------
#: Dimensions where products overflow 64 bits (powers of two) or exceed the size limit.
_dim = st.one_of(
    st.integers(0, 40),
    st.integers(0, 2**32 - 1),
    st.integers(0, 31).map(lambda k: 2**k),
)


@st.composite
def idx_files(draw: st.DrawFn) -> tuple[bytes, tuple[int, ...], int | None]:
    """(IDX bytes, the header's dims, payload bytes minus what they need; None: header cut)."""
    magic = draw(st.sampled_from([IDX_LABELS_MAGIC, IDX_IMAGES_MAGIC]))
    dims = tuple(draw(st.lists(_dim, min_size=magic & 0xFF, max_size=magic & 0xFF)))
    need = math.prod(dims)
    if need <= 4096:  # small enough to write: exact, a few bytes short or over, or empty
        length = draw(st.sampled_from([need, max(need - 1, 0), need + 1, 0]) | st.integers(0, need + 8))
    else:
        length = draw(st.integers(0, 64))
    payload = draw(st.binary(min_size=length, max_size=length))
    header = struct.pack(f">I{len(dims)}I", magic, *dims)
    if draw(st.integers(0, 9)) == 0:  # now and then a header cut short
        cut = draw(st.integers(0, len(header) - 1))
        return header[:cut] + payload, dims, None
    return header + payload, dims, length - need


@settings(max_examples=examples(300))
@given(case=idx_files(), gz=st.booleans(), truncate_gzip=st.integers(0, 30))
def test_headers_with_any_dims_and_payload(
    scratch: Path, case: tuple[bytes, tuple[int, ...], int | None], gz: bool, truncate_gzip: int
) -> None:
    """Exactly the right payload gives an array of the header's shape; anything else an error.

    (A header cut short lets the payload's bytes be read as dims, so then only "no crash".)"""
    data, dims, surplus = case
    path = scratch / ("dims.gz" if gz else "dims")
    if gz:
        packed = gzip.compress(data, mtime=0)
        packed = packed[: len(packed) - truncate_gzip]  # cut the stream (or its CRC) short
        path.write_bytes(packed)
        intact = truncate_gzip == 0
    else:
        path.write_bytes(data)
        intact = True
    arr = read_or_error(path)
    if surplus is None:
        return
    if intact and surplus == 0 and math.prod(dims) <= MAX_IDX_BYTES:
        assert arr is not None and arr.shape == dims
        assert arr.tobytes() == data[4 + 4 * len(dims) :]
    else:
        assert arr is None


@pytest.mark.parametrize(
    "dims",
    [
        (2**22, 2**21, 2**21),  # 2**64: wrapped to 0 in uint64
        (2**32 - 1, 2**32 - 1, 2**32 - 1),
        (2**21, 2**21, 2**22 + 1),  # wraps to 2**42, still over the limit
    ],
)
def test_dims_whose_product_overflows_64_bits_are_refused(tmp_path: Path, dims: tuple[int, ...]) -> None:
    """Regression: the size was computed in uint64, so 2**22 x 2**21 x 2**21 wrapped to 0 bytes
    and the header passed its checks, leaking numpy's ValueError from reshape."""
    path = tmp_path / "bomb-idx3-ubyte"
    path.write_bytes(struct.pack(">I3I", IDX_IMAGES_MAGIC, *dims))
    with pytest.raises(IDXFormatError, match="over the .* byte limit"):
        read_idx(path)
