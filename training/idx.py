"""The IDX file format of MNIST and Fashion-MNIST: read and write labels (N,) and images (N, R, C).

An IDX file is a 4-byte magic number (two zero bytes, the element type, the number of
dimensions), one big-endian uint32 per dimension, then the elements in row-major order. Files
named ``.gz`` are gzip-compressed. Every read is checked; every problem raises ``IDXFormatError``
naming the file and what is wrong with it, in one line.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from training.fileio import atomic_writer, read_bytes_checked

#: IDX magic numbers: two zero bytes, the element type code, the number of dimensions.
IDX_LABELS_MAGIC = 0x00000801
IDX_IMAGES_MAGIC = 0x00000803
#: The only element type MNIST-format files use: unsigned byte.
IDX_UBYTE = 0x08
#: Rank -> what an IDX file of that rank holds.
IDX_KINDS = {1: "labels", 3: "images"}
#: A file (or its decompressed payload) larger than this is refused before it is parsed.
MAX_IDX_BYTES = 512 * 1024 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
#: zlib's window bits for a gzip stream: 16 + 15 (a gzip header and trailer around deflate data).
GZIP_WBITS = 16 + zlib.MAX_WBITS


class DataError(Exception):
    """Base of every error the data modules (``idx``, ``datasets``) raise on purpose.

    ``str(exc)`` is one line for the user.
    """


class IDXFormatError(DataError, ValueError):
    """A data file is missing, unreadable or not valid MNIST-format data; the message names it."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


def read_idx(path: str | os.PathLike[str]) -> NDArray[np.uint8]:
    """IDX file (raw, or gzip if named ``.gz``) -> labels (N,) or images (N, R, C), uint8."""
    path = Path(path)
    _, payload = read_idx_bytes(path)
    return parse_idx(path, payload)


def write_idx(path: str | os.PathLike[str], array: NDArray) -> None:
    """Labels (N,) or images (N, R, C) in 0..255 -> an IDX file, gzip if ``path`` ends in .gz.

    Written atomically; gzip output has no name or time stamp, so equal arrays give equal bytes.
    """
    path = Path(path)
    arr = np.asarray(array)
    if arr.ndim not in IDX_KINDS:
        raise ValueError(f"{path}: IDX arrays must be labels (N,) or images (N, R, C), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if arr.dtype.kind not in "iub" or (arr.size and (arr.min() < 0 or arr.max() > 255)):
            raise ValueError(f"{path}: IDX data must be integers in [0, 255], got {arr.dtype}")
        arr = arr.astype(np.uint8)
    header = struct.pack(f">I{arr.ndim}I", (IDX_UBYTE << 8) | arr.ndim, *arr.shape)
    payload = header + np.ascontiguousarray(arr).tobytes()
    with atomic_writer(path) as fh:
        if path.name.endswith(".gz"):
            with gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0) as gz:
                gz.write(payload)
        else:
            fh.write(payload)


def read_idx_bytes(path: Path) -> tuple[bytes, bytes]:
    """The file's bytes as stored and its IDX payload (decompressed when the name ends in .gz).

    Both are returned because a dataset is identified by the SHA-256 of each: the file's (what
    a mirror serves) and the payload's (what a repackaged copy keeps).
    """
    raw = read_bytes_checked(path, MAX_IDX_BYTES, "an IDX file", IDXFormatError)
    if not path.name.endswith(".gz"):
        return raw, raw
    return raw, _gunzip(path, raw, MAX_IDX_BYTES)


def _gunzip(path: Path, data: bytes, limit: int) -> bytes:
    """The gzip members of ``data`` decompressed, at most ``limit`` bytes (else IDXFormatError).

    One zlib call per member: MNIST's 47 MB of training images took 157 ms through
    ``gzip.GzipFile.read`` (which decompresses in small chunks and joins them) and 125 ms this way
    here. Like ``GzipFile``, it reads concatenated members and ignores zero padding after them.
    """
    parts: list[bytes] = []
    size = 0
    while True:
        member = zlib.decompressobj(wbits=GZIP_WBITS)
        try:
            part = member.decompress(data, limit + 1 - size)
        except zlib.error as exc:
            raise IDXFormatError(path, f"corrupt gzip data ({exc})") from None
        size += len(part)
        if size > limit:
            raise IDXFormatError(path, f"decompresses to more than {limit} bytes")
        if not member.eof:
            raise IDXFormatError(path, "truncated gzip data (the stream ends early)")
        parts.append(part)
        data = member.unused_data.lstrip(b"\x00")
        if not data:
            return parts[0] if len(parts) == 1 else b"".join(parts)


def parse_idx(path: Path, data: bytes) -> NDArray[np.uint8]:
    """IDX bytes (already decompressed) -> (N,) or (N, R, C) uint8; ``path`` names them in errors."""
    if len(data) < 4:
        raise IDXFormatError(path, f"too short for an IDX header ({len(data)} bytes)")
    (magic,) = struct.unpack_from(">I", data)
    type_code, ndim = (magic >> 8) & 0xFF, magic & 0xFF
    if magic >> 16 != 0:
        hint = "; it looks gzip-compressed, so name it .gz" if data[:2] == _GZIP_MAGIC else ""
        raise IDXFormatError(
            path,
            f"not an IDX file: magic number 0x{magic:08x} (expected 0x{IDX_LABELS_MAGIC:08x} "
            f"for labels or 0x{IDX_IMAGES_MAGIC:08x} for images){hint}",
        )
    if type_code != IDX_UBYTE:
        raise IDXFormatError(
            path,
            f"unsupported IDX element type 0x{type_code:02x} (only unsigned bytes, 0x08, are read)",
        )
    if ndim not in IDX_KINDS:
        raise IDXFormatError(path, f"unsupported IDX rank {ndim} (expected 1 for labels or 3 for images)")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise IDXFormatError(
            path, f"truncated header: {ndim} dimensions need {header_size} bytes, got {len(data)}"
        )
    dims = struct.unpack_from(f">{ndim}I", data, 4)
    expected = math.prod(dims)  # Python ints: uint64 would wrap (2**22 * 2**21 * 2**21 == 0)
    shape = "x".join(map(str, dims))
    if expected > MAX_IDX_BYTES:
        raise IDXFormatError(
            path, f"header says {shape} ({expected} bytes), over the {MAX_IDX_BYTES} byte limit"
        )
    got = len(data) - header_size
    if got < expected:
        raise IDXFormatError(
            path, f"truncated: header says {shape} ({expected} bytes) but only {got} bytes follow"
        )
    if got > expected:
        raise IDXFormatError(
            path, f"{got - expected} trailing bytes after the {expected} bytes that {shape} needs"
        )
    # a read-only view of the bytes, not a copy: the arrays of a dataset are never written to
    flat = np.frombuffer(data, dtype=np.uint8, count=expected, offset=header_size)
    return flat.reshape(dims)
