"""The model registry: every ``.npz`` in ``MODEL_DIR``, loaded and checked once per worker.

A model is named after its file stem (``models/fashion-mnist.npz`` -> ``fashion-mnist``).
Loading goes through ``training.load_model``, which validates the file; anything wrong with any
file, or a missing default model, raises ``ModelLoadError`` with one line naming the file.
Everything a request needs that depends only on the model is computed here, at load time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.errors import ModelNotFound, StartupError
from training import ModelFile, ModelFormatError, TwoLayerNet, load_model

MODEL_SUFFIX = ".npz"
#: How an uploaded image is turned into the model's input; see ``service.images``.
IMAGE_STYLES = ("mnist", "fashion-mnist")


class ModelLoadError(StartupError):
    """A model file (or the model directory) is unusable; the message names it."""


@dataclass(frozen=True)
class Model:
    """A loaded model and the per-model constants that requests use."""

    name: str
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
    def version(self) -> str:
        return self.file.version

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def predict(self, x: NDArray[np.floating]) -> NDArray[np.floating]:
        """Probabilities (N, C) for a batch (N, D): the network's own forward pass."""
        return self.net.predict(x)


@dataclass(frozen=True)
class Registry:
    """The models one worker serves, by name, and which one the short routes use."""

    models: Mapping[str, Model]
    default_name: str

    @property
    def default(self) -> Model:
        return self.models[self.default_name]

    def get(self, name: str) -> Model:
        try:
            return self.models[name]
        except KeyError:
            raise ModelNotFound(
                f"no model named {name!r}", {"available": sorted(self.models)}
            ) from None


def load_registry(model_dir: str | Path, default_model: str) -> Registry:
    """Load every ``*.npz`` under ``model_dir``; the default model must be among them."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelLoadError(f"MODEL_DIR {model_dir}: no such directory")
    paths = sorted(p for p in model_dir.iterdir() if p.suffix == MODEL_SUFFIX)
    if not paths:
        raise ModelLoadError(f"MODEL_DIR {model_dir}: no {MODEL_SUFFIX} model files in it")
    models = {}
    for path in paths:
        try:
            models[path.stem] = _build_model(path.stem, load_model(path))
        except ModelFormatError as exc:
            raise ModelLoadError(str(exc)) from None
    if default_model not in models:
        raise ModelLoadError(
            f"DEFAULT_MODEL {default_model!r} is not in {model_dir} "
            f"(found: {', '.join(sorted(models))})"
        )
    return Registry(models=models, default_name=default_model)


def _build_model(name: str, model_file: ModelFile) -> Model:
    meta = model_file.metadata
    input_shape = model_file.input_shape
    net = model_file.network()
    image_style = _image_style(model_file)
    image_size = _image_size(input_shape)
    class_names = tuple(model_file.class_names)
    info = {
        "name": name,
        "version": model_file.version,
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
    return Model(name=name, file=model_file, net=net, input_shape=input_shape,
                 input_size=net.input_size, class_names=class_names, image_size=image_size,
                 image_style=image_style, info=info)


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
