"""Model files: every model in ``MODEL_DIR``, found, loaded and checked once per worker.

Two layouts, side by side in one directory:

- flat: ``MODEL_DIR/mnist.npz`` is the model ``mnist`` with one version, whose id is the file's
  ``ModelFile.version`` (the first 12 hex digits of its SHA-256);
- versioned, as Triton and TF Serving lay them out: ``MODEL_DIR/mnist/<N>/model.npz``, where
  ``N`` is a positive integer without leading zeros and is the version id. The highest version
  serves by default. A version directory without ``model.npz`` yet is not a version (yet).

Loading goes through ``training.load_model``, which validates the file; ``scan`` reads what is
new or changed and reports what loaded, failed or went, naming each file. Everything a request
needs that depends only on the model is computed here, at load time. ``service.reload`` decides
what serves from a scan and swaps it in; the first load at start-up is such a reload too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.errors import StartupError
from training import ModelFile, ModelFormatError, TwoLayerNet, load_model
from training.export import is_version_name  # one rule for training's publish and serving

MODEL_SUFFIX = ".npz"
#: The weights file inside a version directory: ``MODEL_DIR/<name>/<version>/model.npz``.
VERSION_FILE = "model.npz"
#: How an uploaded image is turned into the model's input; see ``service.images``.
IMAGE_STYLES = ("mnist", "fashion-mnist")


class ModelLoadError(StartupError):
    """A model file (or the model directory) is unusable; the message names it."""


@dataclass(frozen=True)
class Model:
    """A loaded model and the per-model constants that requests use."""

    name: str
    #: The version directory's name, or the file's hash prefix for a flat ``NAME.npz``.
    version: str
    file: ModelFile = field(repr=False)
    net: TwoLayerNet = field(repr=False)
    input_shape: tuple[int, ...]
    input_size: int
    class_names: tuple[str, ...]
    #: (height, width) of the grid an uploaded image becomes, or None if inputs are not images.
    image_size: tuple[int, int] | None
    image_style: str
    #: The body of GET /v1/models/<name>, built once.
    info: dict[str, Any] = field(repr=False)

    @property
    def sha256(self) -> str:
        """The weights file's SHA-256: what exactly is serving, whatever the version is called."""
        return self.file.sha256

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def predict(self, x: NDArray[np.floating]) -> NDArray[np.floating]:
        """Probabilities (N, C) for a batch (N, D): the network's own forward pass."""
        return self.net.predict(x)


@dataclass(frozen=True)
class ModelSource:
    """Where one version of one model lives; ``version`` is None for a flat ``NAME.npz``."""

    name: str
    version: str | None
    path: Path


def find_model_files(model_dir: str | Path) -> list[ModelSource]:
    """Every model file under ``model_dir`` in both layouts, by name, versions in order.

    ``ModelLoadError`` if the directory is missing, or a name is in both layouts (which file
    would serve is then anyone's guess).
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelLoadError(f"MODEL_DIR {model_dir}: no such directory")
    sources = []
    for entry in sorted(model_dir.iterdir()):
        if entry.suffix == MODEL_SUFFIX:
            sources.append(ModelSource(entry.stem, None, entry))
            continue
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        versions = sorted(
            (int(d.name), d)
            for d in entry.iterdir()
            if is_version_name(d.name) and (d / VERSION_FILE).is_file()
        )
        if not versions:
            continue
        if (model_dir / (entry.name + MODEL_SUFFIX)).exists():
            raise ModelLoadError(f"{entry} and {entry}{MODEL_SUFFIX}: one model in two layouts; keep one")
        sources.extend(ModelSource(entry.name, d.name, d / VERSION_FILE) for _, d in versions)
    return sources


def load_source(source: ModelSource) -> Model:
    """Load and validate one model file; ``ModelFormatError`` names the file if it is bad."""
    model_file = load_model(source.path)
    return _build_model(source.name, source.version or model_file.version, model_file)


#: (inode, size, mtime in ns): a file whose triple is unchanged is not read again.
Signature = tuple[int, int, int]


def signature(path: Path) -> Signature | None:
    """The file's (inode, size, mtime), or None if it is gone."""
    try:
        st = path.stat()
    except OSError:  # removed between listing and stat
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


@dataclass(frozen=True)
class Loaded:
    """A model and the signature its file had when it was read."""

    model: Model
    signature: Signature | None


@dataclass
class Scan:
    """What one look at ``MODEL_DIR`` found, against what was loaded before. Changes nothing:
    ``service.reload`` decides what to serve from it and swaps."""

    #: path -> what serves from it: the model read now, or the one read before if the file is
    #: unchanged or now fails validation. In the order of ``find_model_files``.
    files: dict[Path, Loaded] = field(default_factory=dict)
    #: Files read now that validated.
    loaded: list[Model] = field(default_factory=list)
    #: Files read now that failed validation (a file that failed before and has not changed since
    #: is not read again, nor listed).
    failed: list[tuple[ModelSource, ModelFormatError]] = field(default_factory=list)
    #: Models loaded before whose files are gone.
    removed: list[Model] = field(default_factory=list)
    #: Paths in ``files`` served from memory because the file now on disk is not what was read.
    stale: set[Path] = field(default_factory=set)
    #: The directory itself is unusable (missing, or a name in two layouts): nothing was read.
    error: ModelLoadError | None = None
    #: Every model file found, valid or not.
    sources: list[ModelSource] = field(default_factory=list)

    def versions(self) -> dict[str, dict[str, Model]]:
        """name -> version -> model for every file that serves, versions oldest first."""
        versions: dict[str, dict[str, Model]] = {}
        for source in self.sources:
            loaded = self.files.get(source.path)
            if loaded is not None:
                versions.setdefault(source.name, {})[loaded.model.version] = loaded.model
        return versions


def scan(
    model_dir: str | Path,
    known: Mapping[Path, Loaded] | None = None,
    failed_before: Mapping[Path, Signature | None] | None = None,
) -> Scan:
    """Look at ``model_dir``: read and validate every model file that is new or changed since
    ``known`` (path -> what was loaded from it), reuse the rest. A file whose signature is in
    ``failed_before`` unchanged is not read again. A stat per file, and a full read and
    validation (``training.load_model``) only of files that changed."""
    known = known or {}
    failed_before = failed_before or {}
    result = Scan()
    try:
        result.sources = find_model_files(model_dir)
    except ModelLoadError as exc:
        result.error = exc
        return result
    for source in result.sources:
        now = signature(source.path)
        before = known.get(source.path)
        if now is None:  # gone since it was listed
            continue
        if before is not None and before.signature == now:
            result.files[source.path] = before
            continue
        if source.path in failed_before and failed_before[source.path] == now:  # reported already
            if before is not None:
                result.files[source.path] = before
                result.stale.add(source.path)
            continue
        try:
            model = load_source(source)
        except ModelFormatError as exc:
            result.failed.append((source, exc))
            if before is not None:  # the serving one stays
                result.files[source.path] = before
                result.stale.add(source.path)
            continue
        result.files[source.path] = Loaded(model, now)
        result.loaded.append(model)
    result.removed = [loaded.model for path, loaded in known.items() if path not in result.files]
    return result


def _build_model(name: str, version: str, model_file: ModelFile) -> Model:
    meta = model_file.metadata
    input_shape = model_file.input_shape
    net = model_file.network()
    image_style = _image_style(model_file)
    image_size = _image_size(input_shape)
    class_names = tuple(model_file.class_names)
    info = {
        "name": name,
        "version": version,
        "ready": True,  # (KServe V1's model-ready call reads it; a model that is not is not listed)
        "sha256": model_file.sha256,
        "input_shape": list(input_shape),
        "input_size": net.input_size,
        "hidden_size": net.hidden_size,
        "class_names": list(class_names),
        "num_classes": len(class_names),
        "dtype": str(net.dtype),
        "accepts_images": image_size is not None,
        "image_preprocessing": image_style,
        "pixel_preprocessing": meta.get("pixel_preprocessing", meta.get("preprocessing")),
        "dataset": meta.get("dataset"),
        "metrics": meta.get("metrics"),
        "created_at": meta.get("created_at"),
        "metadata": meta,
    }
    return Model(
        name=name,
        version=version,
        file=model_file,
        net=net,
        input_shape=input_shape,
        input_size=net.input_size,
        class_names=class_names,
        image_size=image_size,
        image_style=image_style,
        info=info,
    )


def _image_size(input_shape: tuple[int, ...]) -> tuple[int, int] | None:
    """(H, W) for inputs shaped (H, W), (H, W, 1) or a flat square (H*W,); else None."""
    if len(input_shape) == 2 or (len(input_shape) == 3 and input_shape[2] == 1):
        return input_shape[0], input_shape[1]
    if len(input_shape) == 1:
        side = math.isqrt(input_shape[0])
        if side * side == input_shape[0]:
            return side, side
    return None


def _image_style(model_file: ModelFile) -> str:
    """The metadata's ``image_preprocessing`` if given, else guessed from ``dataset``."""
    meta = model_file.metadata
    style = meta.get("image_preprocessing")
    if style is not None:
        if style not in IMAGE_STYLES:
            raise ModelFormatError(
                model_file.path, f"image_preprocessing {style!r} is not one of {IMAGE_STYLES}"
            )
        return str(style)
    dataset = str(meta.get("dataset", "")).lower()
    return "fashion-mnist" if "fashion" in dataset else "mnist"
