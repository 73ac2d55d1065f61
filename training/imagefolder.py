"""Labelled image folders: ``DIR/<class name>/<image>``, read through the service's preprocessing.

The layout of torchvision's ``ImageFolder`` and Keras' ``image_dataset_from_directory``: each
subfolder of the root is a class and holds that class's images (in subfolders too). A folder's
name is read as a class name by ``training.classfolders.class_of_folder``, the inverse of the
``class_folder`` the service stores corrections with, so a class whose name is no safe path
segment has one folder on both sides (Fashion-MNIST's "T-shirt/top" is "T-shirt%2Ftop"); two
folders naming one class (``7`` and ``%37``) are one class. Every file goes through
``training.images.load_image``, the function the service applies to an upload, so a model is
trained on exactly what it will be asked.

What is read, and what is not:

- files with an image suffix (``IMAGE_SUFFIXES``, any case); other and hidden files are ignored;
- a symlink is followed only when it leads to a place inside the root; one leading out is
  skipped with a warning (a folder someone shared must not make training read ``/etc``);
- a corrupt, truncated or unsupported file, one over ``MAX_IMAGE_BYTES``, or one whose header
  claims more than ``MAX_IMAGE_PIXELS`` (a decompression bomb) is **skipped**, named by its path
  in a warning, and counted. Skipping, not refusing: the folder may be fed by uploads (corrections
  stored by the service), and one bad upload must not stop a nightly fine-tune; the warning says
  which file to remove. A folder left with no readable image is refused.

Decoding is spread over worker processes for large folders (``PARALLEL_FROM`` files or more).
Measured: 0.63 ms of CPU per 28x28 PNG (1,000 of MNIST's test digits, decode and preprocessing),
so 10,000 images are about 6 s of CPU, 3-4 s on 2 idle cores with the two workers.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from training.classfolders import class_folder, class_of_folder
from training.images import ImageTooLarge, InvalidImage, load_image

#: File suffixes read as images (the formats the service accepts: PNG, JPEG, GIF, BMP, WebP).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp"})
#: A file larger than this is skipped unread (a digit's image is a few KB; a photo a few MB).
MAX_IMAGE_BYTES = 32 * 1024 * 1024
#: The service's default pixel limit for an upload: larger images are skipped before decoding.
MAX_IMAGE_PIXELS = 4096 * 4096
#: Folders with at least this many files are decoded by a pool of worker processes; below it,
#: starting the pool (about 0.1 s) costs more than it saves.
PARALLEL_FROM = 2_000
#: Files per task sent to a worker.
CHUNK = 256
#: The grid MNIST-format models take.
GRID = (28, 28)


class ImageFolderError(ValueError):
    """The folder cannot be trained on: one line naming the folder and how to fix it."""


@dataclass(frozen=True)
class ImageFolder:
    """A folder's images, preprocessed: x (N, H*W) float32 in [0, 1], t (N,) class indices."""

    root: Path
    class_names: tuple[str, ...]  # index -> name; the model's classes with ``classes=``
    x: NDArray[np.float32]
    t: NDArray[np.intp]
    files: tuple[str, ...]  # each image's path relative to the root, in the order of x
    files_sha256: str  # SHA-256 of the sorted "path<TAB>content sha256" lines
    skipped: tuple[str, ...] = field(default=())  # "path: problem" for every file left out

    def counts(self) -> dict[str, int]:
        """Images per class name, for classes with at least one image."""
        found = np.bincount(self.t, minlength=len(self.class_names))
        return {name: int(n) for name, n in zip(self.class_names, found, strict=True) if n}

    def describe(self) -> dict[str, Any]:
        """What the exported metadata records about this data."""
        return {
            "folder": str(self.root),
            "count": int(self.t.shape[0]),
            "counts": self.counts(),
            "files_sha256": self.files_sha256,
            "skipped": len(self.skipped),
        }


def scan(root: str | os.PathLike[str]) -> tuple[Path, dict[str, list[Path]], list[str]]:
    """The classes of ``root`` (class name -> its image files, sorted), the names read from the
    folder names by ``class_of_folder``, plus "path: problem" lines for symlinks that lead out of
    the root. ``ImageFolderError`` if ``root`` is not a directory."""
    root = Path(root)
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a directory"
        raise ImageFolderError(f"{root}: {what}; --images takes a folder with one subfolder per class")
    real_root = root.resolve()
    skipped: list[str] = []

    def inside(path: Path) -> bool:
        if not path.is_symlink():
            return True
        target = path.resolve()
        if target == real_root or real_root in target.parents:
            return True
        skipped.append(f"{path}: a symlink leading out of {root}; not followed")
        return False

    classes: dict[str, list[Path]] = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir() or not inside(entry):
            continue
        images: list[Path] = []
        seen: set[Path] = set()  # real paths of the directories walked: a symlink loop ends here
        for dirpath, dirnames, filenames in os.walk(entry, followlinks=True):
            here = Path(dirpath)
            if here.resolve() in seen:
                dirnames[:] = []
                continue
            seen.add(here.resolve())
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and inside(here / d))
            for name in sorted(filenames):
                path = here / name
                if name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                if inside(path):
                    images.append(path)
        classes.setdefault(class_of_folder(entry.name), []).extend(images)
    return root, classes, skipped


def load_image_folder(
    root: str | os.PathLike[str],
    classes: Sequence[str] | None = None,
    *,
    style: str = "mnist",
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> ImageFolder:
    """Read ``root`` (see the module's docstring) into an ``ImageFolder``.

    ``classes``: the class order to label with (a model's ``class_names``); every folder must be
    one of them, else ``ImageFolderError`` naming the folder. Without it, the sorted folder names.
    ``progress(n)`` is called as files are done (n more each time). ``workers``: processes for
    decoding (default: all CPUs for large folders, none for small ones). ``style``: the
    preprocessing style of ``load_image`` (the one the model is served with).
    """
    root, found, skipped = scan(root)
    if not found:
        raise ImageFolderError(f"{root}: no class folders; put each class's images in {root}/<class name>/")
    if classes is not None:
        unknown = [name for name in found if name not in classes]
        if unknown:
            encoded = [(class_folder(name), name) for name in classes if class_folder(name) != name]
            hint = "".join(
                f" (a folder is its class's name, encoded: {f!r} is {n!r})" for f, n in encoded[:1]
            )
            raise ImageFolderError(
                f"{root}/{class_folder(unknown[0])}: {unknown[0]!r} is not one of the model's classes "
                f"({', '.join(classes)}); rename or remove that folder{hint}, "
                "or train a new model without --init-from"
            )
        class_names = tuple(classes)
    else:
        class_names = tuple(sorted(found))
    paths = [p for name in found for p in found[name]]
    labels = [class_names.index(name) for name in found for _ in found[name]]
    if not paths:
        raise ImageFolderError(
            f"{root}: no images in its class folders ({', '.join(found)}); "
            f"add {', '.join(sorted(s.lstrip('.').upper() for s in IMAGE_SUFFIXES))} files"
        )

    results = _decode_all(paths, style, progress, workers)
    keep = [i for i, r in enumerate(results) if isinstance(r, tuple)]
    skipped += [f"{paths[i]}: {r}" for i, r in enumerate(results) if isinstance(r, str)]
    if not keep:
        raise ImageFolderError(f"{root}: none of its {len(paths)} images could be read ({skipped[-1]})")
    x = np.stack([results[i][0] for i in keep]).reshape(len(keep), -1)  # type: ignore[index]
    t = np.array([labels[i] for i in keep], dtype=np.intp)
    rel = tuple(paths[i].relative_to(root).as_posix() for i in keep)
    listing = "".join(
        f"{name}\t{results[i][1]}\n"  # type: ignore[index]
        for name, i in sorted(zip(rel, keep, strict=True))
    )
    return ImageFolder(
        root=root,
        class_names=class_names,
        x=x,
        t=t,
        files=rel,
        files_sha256=hashlib.sha256(listing.encode()).hexdigest(),
        skipped=tuple(skipped),
    )


Decoded = tuple[NDArray[np.float32], str] | str  # (pixels, content sha256) or the problem


def read_image_file(path: str | os.PathLike[str], style: str = "mnist") -> Decoded:
    """One file -> (28x28 float32 pixels, SHA-256 of its bytes), or a one-line problem."""
    try:
        size = os.stat(path).st_size
        if size > MAX_IMAGE_BYTES:
            return f"{size} bytes, over the {MAX_IMAGE_BYTES}-byte limit; skipped"
        with open(path, "rb") as fh:
            data = fh.read(MAX_IMAGE_BYTES + 1)
        return load_image(data, GRID, style, max_pixels=MAX_IMAGE_PIXELS), hashlib.sha256(data).hexdigest()
    except (InvalidImage, ImageTooLarge) as exc:
        return f"{exc}; skipped"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc}); skipped"


def _read_chunk(paths: Sequence[str], style: str) -> list[Decoded]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", Warning)  # Pillow's DecompressionBombWarning -> refused
        return [read_image_file(p, style) for p in paths]


def _decode_all(
    paths: Sequence[Path], style: str, progress: Callable[[int], None] | None, workers: int | None
) -> list[Decoded]:
    names = [str(p) for p in paths]
    chunks = [names[i : i + CHUNK] for i in range(0, len(names), CHUNK)]
    if workers is None:
        workers = (os.cpu_count() or 1) if len(names) >= PARALLEL_FROM else 0
    results: list[Decoded] = []
    if workers <= 1:
        for chunk in chunks:
            results += _read_chunk(chunk, style)
            if progress is not None:
                progress(len(chunk))
        return results
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for chunk, done in zip(chunks, pool.map(_read_chunk, chunks, [style] * len(chunks)), strict=True):
            results += done
            if progress is not None:
                progress(len(chunk))
    return results


def split_stratified(
    t: NDArray[np.intp], fraction: float, rng: np.random.Generator
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Indices (train, held-out) holding out ``fraction`` of each class (rounded, at least one
    from a class with two or more images, never its last one), chosen by ``rng``; both sorted."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation-split must be between 0 and 1, got {fraction!r}")
    held: list[NDArray[np.intp]] = []
    for c in np.unique(t):
        members = np.flatnonzero(t == c)
        k = min(max(round(fraction * members.size), 1), members.size - 1)
        if k > 0:
            held.append(rng.choice(members, k, replace=False))
    out = np.sort(np.concatenate(held)) if held else np.empty(0, np.intp)
    mask = np.ones(t.shape[0], bool)
    mask[out] = False
    return np.flatnonzero(mask), out


def print_skipped(skipped: Sequence[str], limit: int = 20) -> None:
    """One warning line per skipped file (the first ``limit``), then how many in all."""
    for line in skipped[:limit]:
        print(f"warning: {line}", file=sys.stderr)
    if len(skipped) > limit:
        print(f"warning: ... and {len(skipped) - limit} more", file=sys.stderr)
