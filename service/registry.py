"""The model registry: every model in ``MODEL_DIR``, loaded and checked once per worker.

Two layouts, side by side in one directory:

- flat: ``MODEL_DIR/mnist.npz`` is the model ``mnist`` with one version, whose id is the file's
  ``ModelFile.version`` (the first 12 hex digits of its SHA-256);
- versioned, as Triton and TF Serving lay them out: ``MODEL_DIR/mnist/<N>/model.npz``, where
  ``N`` is a positive integer without leading zeros and is the version id. The highest version
  serves by default. A version directory without ``model.npz`` yet is not a version (yet).

Loading goes through ``training.load_model``, which validates the file; anything wrong with any
file, or a missing default model, raises ``ModelLoadError`` with one line naming the file.
Everything a request needs that depends only on the model is computed here, at load time.
``service.reload`` builds new registries from the same pieces while the server runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.errors import ModelNotFound, StartupError, VersionNotFound
from training import ModelFile, ModelFormatError, TwoLayerNet, load_model

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
class Registry:
    """The models one worker serves, by name and version, and which one the short routes use.

    ``models`` holds the version each name serves by default (the newest); ``all_versions``
    every loaded version of each name, oldest first. Never changed once built: a reload builds
    a new one.
    """

    models: Mapping[str, Model]
    default_name: str
    all_versions: Mapping[str, Mapping[str, Model]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.all_versions:
            object.__setattr__(
                self, "all_versions", {name: {m.version: m} for name, m in self.models.items()}
            )

    @classmethod
    def from_versions(
        cls, versions: Mapping[str, Mapping[str, Model]], default_name: str, model_dir: Path
    ) -> Registry:
        """The registry of ``versions`` (name -> version -> model, oldest first); the newest of
        each name serves by default. ``ModelLoadError`` if the default model has no version."""
        versions = {name: dict(v) for name, v in sorted(versions.items()) if v}
        if default_name not in versions:
            raise ModelLoadError(
                f"DEFAULT_MODEL {default_name!r} is not in {model_dir} "
                f"(found: {', '.join(versions) or 'nothing valid'})"
            )
        models = {name: list(v.values())[-1] for name, v in versions.items()}
        return cls(models=models, default_name=default_name, all_versions=versions)

    @property
    def default(self) -> Model:
        return self.models[self.default_name]

    def get(self, name: str, version: str | None = None) -> Model:
        """The model ``name`` at ``version`` (default: its newest); 404 errors if unknown."""
        versions = self.all_versions.get(name)
        if versions is None:
            raise ModelNotFound(f"no model named {name!r}", {"available": sorted(self.models)})
        if version is None:
            return self.models[name]
        try:
            return versions[version]
        except KeyError:
            raise VersionNotFound(
                f"model {name!r} has no version {version!r}", {"available": list(versions)}
            ) from None

    def versions(self, name: str) -> list[str]:
        """The versions of ``name`` that are loaded and ready, oldest first (the last serves
        by default); ``ModelNotFound`` if there is no such model."""
        if name not in self.all_versions:
            self.get(name)  # raises ModelNotFound
        return list(self.all_versions[name])


@dataclass(frozen=True)
class ModelSource:
    """Where one version of one model lives; ``version`` is None for a flat ``NAME.npz``."""

    name: str
    version: str | None
    path: Path


#: Called with a file that failed validation and why; the caller decides what that means.
FailureHandler = Callable[[ModelSource, ModelFormatError], None]


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
            (int(d.name), d) for d in entry.iterdir() if _is_version(d.name) and (d / VERSION_FILE).is_file()
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


def load_registry(
    model_dir: str | Path, default_model: str, *, on_failure: FailureHandler | None = None
) -> Registry:
    """Load every model under ``model_dir``; the default model must be among them.

    Any invalid file raises ``ModelLoadError``, unless ``on_failure`` is given (gunicorn's
    workers, whose master has checked every file at start-up): then an invalid file is passed to
    it and skipped, so that a worker started by SIGHUP serves what is valid instead of stopping
    the server. A model left with no valid file is not served; only the default model having
    none still raises.
    """
    model_dir = Path(model_dir)
    sources = find_model_files(model_dir)
    if not sources:
        raise ModelLoadError(f"MODEL_DIR {model_dir}: no {MODEL_SUFFIX} model files in it")
    versions: dict[str, dict[str, Model]] = {}
    failures = []
    for source in sources:
        try:
            model = load_source(source)
        except ModelFormatError as exc:
            if on_failure is None:
                raise ModelLoadError(str(exc)) from None
            failures.append((source, exc))
            continue
        versions.setdefault(source.name, {})[model.version] = model
    for source, error in failures:
        if source.name == default_model and source.name not in versions:
            raise ModelLoadError(str(error))
        on_failure(source, error)  # type: ignore[misc]
    return Registry.from_versions(versions, default_model, model_dir)


def _is_version(name: str) -> bool:
    """A version directory's name: a positive integer without leading zeros, as Triton's."""
    return name.isascii() and name.isdigit() and name[0] != "0"


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
