"""The model file: weights ``W1 b1 W2 b2`` plus a JSON ``metadata`` entry in one ``.npz``.

Written atomically (temp file, fsync, rename); read with ``allow_pickle=False`` and checked
(member names and sizes, shapes, dtypes, finiteness, format version) before anything uses it.
``publish_model`` writes it as the next version ``MODEL_DIR/NAME/<N>/model.npz`` instead: a
hidden directory filled, synced and renamed to ``N`` in one step.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from training.fileio import (
    atomic_write_bytes,
    atomic_write_with,
    current_umask,
    fsync_dir,
    read_bytes_checked,
)
from training.nets import PARAM_NAMES, TwoLayerNet

FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
#: A model file larger than this is refused before it is decompressed (a zip bomb guard).
MAX_MODEL_BYTES = 256 * 1024 * 1024
_MEMBERS = {f"{name}.npy" for name in (*PARAM_NAMES, "metadata")}
#: The weights file inside a version directory, as ``service.registry`` reads it.
VERSION_FILE = "model.npz"
#: The flat layout's suffix: ``MODEL_DIR/NAME.npz``.
MODEL_SUFFIX = ".npz"
#: Versions tried after the first free one is taken by a concurrent publish, before giving up.
MAX_PUBLISH_ATTEMPTS = 100
#: rename(2) of a directory onto one that exists: ENOTEMPTY or EEXIST (both are allowed on
#: Linux), ENOTDIR if it is a file.
_TAKEN = {errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR}


class ModelFormatError(ValueError):
    """A model file is missing, unreadable or not a valid model; the message names the file."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


@dataclass(frozen=True)
class ModelFile:
    """A loaded, validated model file."""

    path: Path
    params: dict[str, NDArray[np.floating]]
    metadata: dict[str, Any]
    sha256: str = field(repr=False)

    @property
    def version(self) -> str:
        """A short id derived from the file's bytes: same weights and metadata, same id."""
        return self.sha256[:12]

    @property
    def class_names(self) -> list[str]:
        return list(self.metadata["class_names"])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.metadata["input_shape"])

    def network(self) -> TwoLayerNet:
        return TwoLayerNet.from_params(self.params)


def save_model(path: str | Path, net: TwoLayerNet, metadata: dict[str, Any]) -> None:
    """Write ``net.params`` and ``metadata`` (JSON-serialisable) to ``path`` atomically.

    ``format_version``, layer sizes, ``activation`` and ``created_at`` are filled in here;
    ``input_shape`` and ``class_names`` must come from the caller (they describe the data).
    """
    meta = dict(metadata)
    for key in ("input_shape", "class_names"):
        if key not in meta:
            raise ValueError(f"metadata needs {key!r}")
    if int(np.prod(meta["input_shape"])) != net.input_size:
        raise ValueError(f"input_shape {meta['input_shape']} does not match {net.input_size} inputs")
    if len(meta["class_names"]) != net.output_size:
        raise ValueError(f"{len(meta['class_names'])} class names for {net.output_size} outputs")
    meta.update(
        format_version=FORMAT_VERSION,
        input_size=net.input_size,
        hidden_size=net.hidden_size,
        output_size=net.output_size,
        activation="sigmoid",
        output_activation="softmax",
        dtype=str(net.dtype),
    )
    meta.setdefault("created_at", datetime.now(UTC).isoformat(timespec="seconds"))
    arrays = {k: np.ascontiguousarray(net.params[k]) for k in PARAM_NAMES}
    encoded = np.array(json.dumps(meta, sort_keys=True))

    def write(fh: Any) -> None:
        np.savez(fh, metadata=encoded, **arrays)  # type: ignore[arg-type]

    atomic_write_with(path, write)


class PublishError(ValueError):
    """A model cannot be published where asked; the message is one line naming the path(s)."""


def check_publish_target(name_dir: str | Path) -> Path:
    """``name_dir`` as a ``Path`` if a version can be published there, else ``PublishError``.

    Its parent (``MODEL_DIR``) must exist; ``name_dir`` must be a directory or not exist yet, have
    a name the service serves (not hidden, not ending in ``.npz``), and not also be a flat
    ``MODEL_DIR/NAME.npz``: the service refuses one name in two layouts.
    """
    name_dir = Path(name_dir)
    name = name_dir.name
    if not name or name in (".", "..") or name.startswith(".") or name.endswith(MODEL_SUFFIX):
        raise PublishError(
            f"{name_dir}: not a model name; publish to MODEL_DIR/NAME with a NAME that is not hidden "
            f"and does not end in {MODEL_SUFFIX}"
        )
    model_dir = name_dir.parent
    if not model_dir.is_dir():
        raise PublishError(f"{name_dir}: the model directory {model_dir} does not exist; create it first")
    if name_dir.exists() and not name_dir.is_dir():
        raise PublishError(f"{name_dir}: exists and is not a directory; publish to MODEL_DIR/NAME")
    flat = model_dir / (name + MODEL_SUFFIX)
    if flat.exists():
        raise PublishError(
            f"{flat} and {name_dir}: one model in two layouts, which the service refuses; "
            f"move {flat} away or publish under another name"
        )
    return name_dir


def next_version(name_dir: str | Path) -> int:
    """1 + the largest version directory (``N``: a positive integer, no leading zeros) in
    ``name_dir``; 1 if there is none. Other entries (``latest``, ``07``, hidden ones) do not count."""
    versions = [
        int(entry.name)
        for entry in Path(name_dir).iterdir()
        if is_version_name(entry.name) and entry.is_dir()
    ]
    return max(versions, default=0) + 1


def is_version_name(name: str) -> bool:
    """A positive integer without leading zeros, in ASCII digits: ``1``, ``12``; not ``07``, ``0``."""
    return name.isascii() and name.isdigit() and not name.startswith("0")


def publish_model(
    net: TwoLayerNet,
    metadata: dict[str, Any],
    name_dir: str | Path,
    files: Mapping[str, bytes] | None = None,
) -> Path:
    """Write ``net`` as the next version ``name_dir/<N>/model.npz``; return that file's path.

    Everything goes into a hidden directory inside ``name_dir`` (``.tmp-<pid>-<random>``, which
    the service ignores), each file written and fsynced, and the directory is then renamed to
    ``N``: the version appears whole or not at all. ``files`` (name -> bytes) go beside the model
    in the same directory, e.g. its history. If another publish takes ``N`` first, the next free
    number is taken instead; on any failure the hidden directory is removed. ``name_dir`` is
    created if it does not exist (its parent must); ``PublishError`` if it is not a place to
    publish (see ``check_publish_target``).
    """
    name_dir = check_publish_target(name_dir)
    name_dir.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{os.getpid()}-", dir=name_dir))
    try:
        # mkdtemp makes it 0700; give it the mode an ordinary mkdir would, so that a server
        # running as another user in the same group can read the version
        os.chmod(tmp, 0o777 & ~current_umask())
        save_model(tmp / VERSION_FILE, net, metadata)
        for name, data in (files or {}).items():
            if name == VERSION_FILE or Path(name).name != name or name.startswith("."):
                raise ValueError(f"{name!r} cannot go beside {VERSION_FILE} in a version directory")
            atomic_write_bytes(tmp / name, data)
        fsync_dir(tmp)
        version_dir = claim_version(tmp, name_dir, next_version(name_dir))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return version_dir / VERSION_FILE


def claim_version(tmp: Path, name_dir: Path, first: int) -> Path:
    """Rename the filled directory ``tmp`` to ``name_dir/<N>`` for the first ``N >= first`` that
    is free, and return that path. Another publish may take ``N`` between the look and the
    rename: the rename then fails (the target exists and is not empty) and ``N + 1`` is tried,
    up to ``MAX_PUBLISH_ATTEMPTS`` times. (rename(2) does replace an *empty* directory: one
    without ``model.npz`` is not a version, and ``next_version`` counts it, so that only a
    directory made empty in that instant is replaced.)
    """
    for version in range(first, first + MAX_PUBLISH_ATTEMPTS):
        target = name_dir / str(version)
        try:
            os.rename(tmp, target)
        except OSError as exc:
            if exc.errno in _TAKEN:
                continue
            raise
        fsync_dir(name_dir)
        return target
    raise PublishError(
        f"{name_dir}: versions {first} to {first + MAX_PUBLISH_ATTEMPTS - 1} were all taken while "
        "publishing; try again"
    )


def load_model(path: str | Path) -> ModelFile:
    """Read and validate a model file; any problem raises ``ModelFormatError`` naming the file."""
    path = Path(path)
    data = read_bytes_checked(path, MAX_MODEL_BYTES, "an .npz file", ModelFormatError)

    _check_members(path, data)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in (*PARAM_NAMES, "metadata")}
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise ModelFormatError(path, "contains pickled objects; refusing to load it") from None
        raise ModelFormatError(path, f"not a valid .npz file ({exc})") from None
    except (
        OSError,
        EOFError,
        zipfile.BadZipFile,
        KeyError,
        MemoryError,
        OverflowError,
        NotImplementedError,
        RuntimeError,
    ) as exc:
        # MemoryError/OverflowError: an .npy header claiming an impossible shape; the other two:
        # zip entries zipfile cannot read (unknown compression method, encrypted)
        raise ModelFormatError(path, f"not a valid .npz file ({exc})") from None

    metadata = _parse_metadata(path, arrays.pop("metadata"))
    params = _check_params(path, arrays, metadata)
    return ModelFile(path=path, params=params, metadata=metadata, sha256=hashlib.sha256(data).hexdigest())


def _check_members(path: Path, data: bytes) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, NotImplementedError, ValueError):  # e.g. "zip file version 10.9"
        raise ModelFormatError(path, "not an .npz file (not a zip archive, or truncated)") from None
    names = {info.filename for info in infos}
    missing = sorted(_MEMBERS - names)
    if missing:
        raise ModelFormatError(path, f"missing arrays: {', '.join(m[:-4] for m in missing)}")
    extra = sorted(names - _MEMBERS)
    if extra:
        raise ModelFormatError(path, f"unexpected entries: {', '.join(extra)}")
    total = sum(info.file_size for info in infos)
    if total > MAX_MODEL_BYTES:
        raise ModelFormatError(path, f"arrays unpack to {total} bytes, over the limit")


def _parse_metadata(path: Path, raw: NDArray) -> dict[str, Any]:
    if raw.shape != () or raw.dtype.kind != "U":
        raise ModelFormatError(path, "metadata must be a single JSON string")
    try:
        meta = json.loads(str(raw))
    except (ValueError, RecursionError):  # RecursionError: nested too deep
        raise ModelFormatError(path, "metadata is not valid JSON") from None
    if not isinstance(meta, dict):
        raise ModelFormatError(path, "metadata must be a JSON object")
    version = meta.get("format_version")
    if type(version) is not int or version not in SUPPORTED_FORMAT_VERSIONS:  # not True, not 1.0
        raise ModelFormatError(
            path, f"format_version {version!r} is not supported (this code reads {SUPPORTED_FORMAT_VERSIONS})"
        )
    shape = meta.get("input_shape")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
    ):
        raise ModelFormatError(path, "metadata input_shape must be a list of positive integers")
    names = meta.get("class_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ModelFormatError(path, "metadata class_names must be a non-empty list of strings")
    return meta


def _check_params(path: Path, arrays: dict[str, NDArray], meta: dict[str, Any]) -> dict[str, NDArray]:
    for name, arr in arrays.items():
        if arr.dtype not in (np.float32, np.float64):
            raise ModelFormatError(path, f"{name} has dtype {arr.dtype}; expected float32 or float64")
    dtypes = {arr.dtype for arr in arrays.values()}
    if len(dtypes) != 1:
        raise ModelFormatError(path, f"arrays mix dtypes {sorted(map(str, dtypes))}")
    w1, b1, w2, b2 = (arrays[k] for k in PARAM_NAMES)
    if w1.ndim != 2 or w2.ndim != 2 or b1.ndim != 1 or b2.ndim != 1:
        raise ModelFormatError(path, "W1 and W2 must be matrices, b1 and b2 vectors")
    d, h = w1.shape
    c = w2.shape[1]
    if b1.shape != (h,) or w2.shape[0] != h or b2.shape != (c,):
        raise ModelFormatError(
            path, f"shapes do not chain: W1 {w1.shape}, b1 {b1.shape}, W2 {w2.shape}, b2 {b2.shape}"
        )
    if h == 0:
        raise ModelFormatError(path, f"W1 {w1.shape} has no hidden units")
    hidden = meta.get("hidden_size", h)
    if type(hidden) is not int or hidden != h:
        raise ModelFormatError(path, f"metadata hidden_size {hidden!r} does not match W1 {w1.shape}")
    if math.prod(meta["input_shape"]) != d:  # not np.prod: int64 wraps ([2**62, 4] -> 0)
        raise ModelFormatError(
            path, f"metadata input_shape {meta['input_shape']} does not match W1 {w1.shape}"
        )
    if len(meta["class_names"]) != c:
        raise ModelFormatError(path, f"{len(meta['class_names'])} class names for {c} outputs")
    for name, arr in arrays.items():
        if not np.all(np.isfinite(arr)):
            raise ModelFormatError(path, f"{name} contains NaN or infinite values")
    return {k: np.ascontiguousarray(arrays[k]) for k in PARAM_NAMES}
