"""The named MNIST-format datasets, where their files come from, and the arrays training uses.

Sources, first that works (README "Data"): a directory the user names, an installed dataset
package, the cache, or a download from the official mirrors. pooch does the download: it streams
each file into a temp file beside its place in the cache, checks the SHA-256 and only then renames
it into place. Every file is format-checked on read (``training.idx``); every problem raises a
one-line error naming the file.

pooch, requests, tqdm and platformdirs are imported where they are used, not with this module:
together they were about 0.1 s of every ``python -m training train`` start-up (``python -X
importtime``), and reading a ``--data-dir``, the package or the cache needs none of them.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import sys
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

from training.idx import IDX_KINDS, DataError, IDXFormatError, parse_idx, read_idx_bytes

log = logging.getLogger(__name__)

#: A download larger than this is abandoned (the biggest official file is about 26 MB).
MAX_DOWNLOAD_BYTES = 256 * 1024 * 1024
DOWNLOAD_TIMEOUT_S = 30.0
#: pooch's default is 1 KiB chunks, each written and flushed on its own: a 26 MB file over
#: loopback took 0.27-0.37 s that way and 0.07 s in 64 KiB chunks.
DOWNLOAD_CHUNK_BYTES = 64 * 1024
#: Mirror URLs must use one of these (pooch would also fetch ftp://, sftp:// and doi: URLs).
DOWNLOAD_SCHEMES = ("http", "https")
_USER_AGENT = "digits-serving (+pooch)"

IMAGE_SHAPE = (28, 28)
#: Pixels are divided by this to land in [0, 1].
PIXEL_SCALE = 255
#: Written into the model metadata; ``as_training_arrays`` is the one place that applies it.
PIXEL_PREPROCESSING = {
    "scale": PIXEL_SCALE,
    "range": [0, 1],
    "layout": "row-major 28x28, white digit on black",
}

#: Environment variables: the cache root (``<root>/<dataset>/``), and mirror base URLs (separated
#: by commas or spaces) tried instead of the official ones; downloads are verified all the same.
ENV_CACHE = "DIGITS_DATA_CACHE"
ENV_MIRROR = "DIGITS_DATA_MIRROR"
CACHE_APP_NAME = "digits-serving"


class DownloadError(DataError, RuntimeError):
    """Every mirror failed for one file: unreachable, HTTP error, too large or SHA-256 mismatch."""


class DatasetUnavailableError(DataError, RuntimeError):
    """No source could provide the dataset; the one-line message says what to do about it."""


# --- Datasets ------------------------------------------------------------------------------
def _frozen(mapping: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class DatasetSpec:
    """A named MNIST-format dataset: its four files, where to get them and how to check them."""

    name: str
    class_names: tuple[str, ...]
    #: Base URLs (ending in ``/``) tried in order; a file's URL is base + file name.
    mirrors: tuple[str, ...]
    #: File name -> SHA-256 of the file as the mirrors serve it; downloads and the cache must match.
    sha256: Mapping[str, str] = field(default_factory=dict)
    #: File name -> SHA-256 of its decompressed IDX bytes, which is how a package's copy is checked
    #: (a package may rewrite the gzip header, which changes the file hash but not the data).
    idx_sha256: Mapping[str, str] = field(default_factory=dict)
    #: Where a system package installs the files, if there is one.
    package_dir: str | None = None
    package_hint: str | None = None
    train_images: str = "train-images-idx3-ubyte.gz"
    train_labels: str = "train-labels-idx1-ubyte.gz"
    test_images: str = "t10k-images-idx3-ubyte.gz"
    test_labels: str = "t10k-labels-idx1-ubyte.gz"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha256", _frozen(self.sha256))
        object.__setattr__(self, "idx_sha256", _frozen(self.idx_sha256))
        for name, digest in (*self.sha256.items(), *self.idx_sha256.items()):
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise ValueError(f"{self.name}: SHA-256 of {name} must be 64 lowercase hex digits")

    @property
    def file_names(self) -> tuple[str, str, str, str]:
        """(train images, train labels, test images, test labels)."""
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)


@dataclass(frozen=True)
class Dataset:
    """Images (N, 28, 28) uint8 and integer labels (N,) uint8 for both splits, plus provenance."""

    name: str
    x_train: NDArray[np.uint8]
    t_train: NDArray[np.uint8]
    x_test: NDArray[np.uint8]
    t_test: NDArray[np.uint8]
    class_names: tuple[str, ...]
    #: File name -> {"path", "sha256" (of the file as stored), "idx_sha256" (of its IDX bytes)}.
    files: Mapping[str, Mapping[str, str]]
    #: Where the files came from: "data-dir", "package", "cache" or "download".
    source: str


# Verified SHA-256 of the files the official mirrors serve (see the commit that added them).
DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        class_names=tuple(str(d) for d in range(10)),
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        sha256={
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        class_names=(
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
        ),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        sha256={
            "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
        # The Debian package's .gz files carry a rewritten gzip header (no file name, new time
        # stamp), so their file hashes differ from the mirror's; the data inside is identical.
        idx_sha256={
            "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        package_dir="/usr/share/datasets/fashion-mnist",
        package_hint="apt-get install dataset-fashion-mnist",
    ),
}


def default_cache_root() -> Path:
    """``$DIGITS_DATA_CACHE``, else the per-user cache directory + ``/datasets``."""
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir(CACHE_APP_NAME)) / "datasets"


def load_dataset(
    name: str | DatasetSpec,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    progress: bool = True,
    mirrors: Sequence[str] | None = None,
) -> Dataset:
    """A dataset by name (a key of ``DATASETS``) or spec -> ``Dataset``, validated.

    Sources, first that works: ``data_dir`` (the four files, ``.gz`` or uncompressed; not
    checksummed, since users keep their own copies; nothing else is tried), the spec's package
    directory (checked by IDX SHA-256), the cache ``<cache_dir>/<name>/`` (checked by SHA-256),
    then a download from ``mirrors`` (else ``$DIGITS_DATA_MIRROR``, else the spec's) into the cache.
    """
    spec = _spec(name)
    if data_dir is not None:
        return _load_from_dir(spec, Path(data_dir))

    problems: list[str] = []
    if spec.package_dir and Path(spec.package_dir).is_dir():
        try:
            return _load_package(spec, Path(spec.package_dir))
        except DataError as exc:
            log.warning("%s: skipping the installed package: %s", spec.name, exc)
            problems.append(f"installed package unusable: {exc}")

    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()
    cache = cache / spec.name
    paths = [cache / f for f in spec.file_names]
    missing = [p for p in paths if not _cached_file_ok(p, spec.sha256.get(p.name))]
    source = "download" if missing else "cache"
    if missing and download:
        bases = _mirror_bases(spec, mirrors)
        try:
            for path in missing:
                download_file(
                    [base + path.name for base in bases], path, spec.sha256[path.name], progress=progress
                )
        except (DownloadError, KeyError) as exc:
            reason = f"no SHA-256 known for {exc}" if isinstance(exc, KeyError) else str(exc)
            problems.append(f"download failed ({reason})")
        else:
            missing = []
    elif missing:
        problems.append("downloading is off")
    if not missing:
        return _assemble(spec, paths, source)

    fix = "pass --data-dir DIR with the four IDX files"
    fix += f", {spec.package_hint}" if spec.package_hint else ""
    fix += ", or connect to the internet" if download else ", or allow downloads"
    raise DatasetUnavailableError(
        _one_line(f"{spec.name}: not found in {cache} and {'; '.join(problems)}; {fix}")
    )


def as_training_arrays(x_uint8: NDArray[np.uint8], dtype: DTypeLike = np.float32) -> NDArray[np.floating]:
    """Images (N, 28, 28) uint8 -> (N, 784) floats in [0, 1]: x / 255 (``PIXEL_PREPROCESSING``)."""
    x = np.asarray(x_uint8)
    if x.dtype != np.uint8:
        raise ValueError(f"pixels must be uint8 (0..255), got {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"images must be (N, 28, 28) or (N, 784), got shape {x.shape}")
    dt = np.dtype(dtype)
    if not np.issubdtype(dt, np.floating):
        raise ValueError(f"training arrays must be floating point, got {dt}")
    # one pass, uint8 in and floats out (numpy converts in small buffered chunks): the same
    # values as astype(dt) / PIXEL_SCALE, without writing and reading back a whole float array
    out = np.empty((x.shape[0], math.prod(x.shape[1:])), dt)
    np.divide(x.reshape(out.shape), dt.type(PIXEL_SCALE), out=out)
    return out


# --- Downloading ---------------------------------------------------------------------------
def download_file(
    urls: Sequence[str],
    dest: str | os.PathLike[str],
    sha256: str,
    *,
    progress: bool = True,
    timeout: float = DOWNLOAD_TIMEOUT_S,
    max_bytes: int = MAX_DOWNLOAD_BYTES,
) -> Path:
    """Fetch the first URL that works into ``dest``, verified by SHA-256 before it is renamed there.

    pooch streams the bytes into a temp file beside ``dest``, checks the hash and renames the
    file; a failed, oversized or mismatching download leaves nothing behind and the next URL is
    tried. All failing raises ``DownloadError``: one line naming each URL and what went wrong.
    """
    dest = Path(dest)
    failures: list[str] = []
    for url in urls:
        try:
            _fetch_verified(
                url, dest, sha256.lower(), progress=progress, timeout=timeout, max_bytes=max_bytes
            )
        except _FetchError as exc:
            failures.append(f"{url}: {exc}")
            log.info("%s: %s", url, exc)
            continue
        return dest
    if not failures:
        failures.append("no mirror URLs given")
    raise DownloadError(_one_line(f"{dest.name}: {'; '.join(failures)}"))


class _FetchError(Exception):
    pass


#: How pooch words a hash mismatch (a ValueError); the hash it got is kept for our message.
_POOCH_HASH_MISMATCH = re.compile(r"hash of downloaded file .* but got ([0-9a-f]+)")


def _fetch_verified(
    url: str, dest: Path, sha256: str, *, progress: bool, timeout: float, max_bytes: int
) -> None:
    import pooch
    import requests

    if urllib.parse.urlsplit(url).scheme not in DOWNLOAD_SCHEMES:
        raise _FetchError(f"only {' and '.join(DOWNLOAD_SCHEMES)} URLs are downloaded")
    bar = _download_bar(
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=dest.name,
        disable=not progress or not sys.stderr.isatty(),
        leave=False,
    )
    http = pooch.HTTPDownloader(
        progressbar=bar,
        chunk_size=DOWNLOAD_CHUNK_BYTES,
        timeout=timeout,
        headers={"User-Agent": _USER_AGENT},
    )

    def download(url: str, output_file: str, caller: object, check_only: bool = False) -> None:
        with open(output_file, "wb") as fh:  # pooch's temp file, beside dest
            http(url, _CappedFile(fh, max_bytes), caller)

    try:
        with bar, _pooch_quiet():
            pooch.retrieve(
                url, known_hash=f"sha256:{sha256}", fname=dest.name, path=dest.parent, downloader=download
            )
    except requests.HTTPError as exc:
        status = exc.response
        raise _FetchError(
            f"HTTP {status.status_code} {status.reason}" if status is not None else str(exc)
        ) from None
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise _FetchError(f"unreachable ({_root_cause(exc)})") from None
    except requests.RequestException as exc:
        raise _FetchError(f"{type(exc).__name__}: {_root_cause(exc)}") from None
    except ValueError as exc:
        mismatch = _POOCH_HASH_MISMATCH.search(str(exc))
        if mismatch is None:
            raise _FetchError(f"ValueError: {exc}") from None
        raise _FetchError(f"SHA-256 mismatch: got {mismatch[1]}, expected {sha256}") from None
    except OSError as exc:
        raise _FetchError(f"{type(exc).__name__}: {exc}") from None


def _download_bar(**options: Any) -> Any:
    """A tqdm that is always true: pooch updates a bar only ``if progressbar:``, and a tqdm's truth
    is ``total > 0`` (pooch sets the total from Content-Length once the response arrives)."""
    from tqdm import tqdm

    class DownloadBar(tqdm):
        def __bool__(self) -> bool:
            return True

    return DownloadBar(**options)


class _CappedFile:
    """The file pooch's downloader writes into, abandoning a download that grows past ``max_bytes``.

    pooch has no size limit, and a mirror (or whatever answers in its place) could send forever.
    """

    def __init__(self, fh: IO[bytes], max_bytes: int) -> None:
        self._fh = fh
        self._max_bytes = max_bytes
        self._size = 0

    def write(self, chunk: bytes) -> int:
        self._size += len(chunk)
        if self._size > self._max_bytes:
            raise _FetchError(f"more than {self._max_bytes} bytes; abandoned")
        return self._fh.write(chunk)

    def flush(self) -> None:
        self._fh.flush()


@contextlib.contextmanager
def _pooch_quiet() -> Iterator[None]:
    """pooch logs every download to stderr ("Downloading data from ..."); the bar says enough."""
    import pooch

    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _root_cause(exc: BaseException) -> str:
    """The innermost error of a chain: requests wraps urllib3's, which wraps the socket's."""
    while (inner := exc.__cause__ or exc.__context__) is not None:
        exc = inner
    return str(exc)


# --- Loading helpers -----------------------------------------------------------------------
def _spec(name: str | DatasetSpec) -> DatasetSpec:
    if isinstance(name, DatasetSpec):
        return name
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(DATASETS))
        raise ValueError(f"unknown dataset {name!r}; choose from {known}") from None


def _mirror_bases(spec: DatasetSpec, mirrors: Sequence[str] | None) -> list[str]:
    if mirrors is None:
        env = os.environ.get(ENV_MIRROR, "")
        mirrors = [m for m in re.split(r"[,\s]+", env) if m] or list(spec.mirrors)
    return [m if m.endswith("/") else m + "/" for m in mirrors]


def _load_from_dir(spec: DatasetSpec, directory: Path) -> Dataset:
    if not directory.is_dir():
        raise DatasetUnavailableError(f"{spec.name}: data directory {directory} does not exist")
    paths = []
    for name in spec.file_names:
        candidates = [directory / name]
        if name.endswith(".gz"):
            candidates.append(directory / name[: -len(".gz")])
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            also = f" (nor {candidates[1].name})" if len(candidates) > 1 else ""
            raise DatasetUnavailableError(
                f"{spec.name}: {directory} has no {name}{also}; it needs the four IDX files "
                f"{', '.join(spec.file_names)}"
            )
        paths.append(found)
    return _assemble(spec, paths, "data-dir")


def _load_package(spec: DatasetSpec, directory: Path) -> Dataset:
    paths = [directory / name for name in spec.file_names]
    absent = [p.name for p in paths if not p.is_file()]
    if absent:
        raise DatasetUnavailableError(f"{directory} lacks {', '.join(absent)}")
    return _assemble(spec, paths, "package", check_idx_sha256=True)


def _cached_file_ok(path: Path, sha256: str | None) -> bool:
    """True if ``path`` is in the cache and matches; a mismatching cached file is removed."""
    if not path.is_file() or sha256 is None:
        return False
    with open(path, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    if digest == sha256:
        return True
    log.warning("%s: SHA-256 does not match; removing it to download again", path)
    path.unlink(missing_ok=True)
    return False


def _assemble(
    spec: DatasetSpec, paths: Sequence[Path], source: str, *, check_idx_sha256: bool = False
) -> Dataset:
    arrays = []
    files: dict[str, Mapping[str, str]] = {}
    for expected_name, path in zip(spec.file_names, paths, strict=True):
        raw, payload = read_idx_bytes(path)
        idx_digest = hashlib.sha256(payload).hexdigest()
        if check_idx_sha256:
            want = spec.idx_sha256.get(expected_name)
            if want is not None and idx_digest != want:
                raise IDXFormatError(
                    path, f"IDX data SHA-256 {idx_digest} does not match the official {want}"
                )
        arrays.append(parse_idx(path, payload))
        files[path.name] = MappingProxyType(
            {
                "path": str(path.resolve()),
                "sha256": hashlib.sha256(raw).hexdigest(),
                "idx_sha256": idx_digest,
            }
        )
    x_train, t_train, x_test, t_test = arrays
    num_classes = len(spec.class_names)
    _check_split(paths[0], paths[1], x_train, t_train, num_classes)
    _check_split(paths[2], paths[3], x_test, t_test, num_classes)
    return Dataset(
        name=spec.name,
        x_train=x_train,
        t_train=t_train,
        x_test=x_test,
        t_test=t_test,
        class_names=tuple(spec.class_names),
        files=MappingProxyType(files),
        source=source,
    )


def _check_split(
    images_path: Path, labels_path: Path, x: NDArray[np.uint8], t: NDArray[np.uint8], num_classes: int
) -> None:
    if x.ndim != 3:
        raise IDXFormatError(images_path, f"expected images (rank 3), found {IDX_KINDS[x.ndim]}")
    if t.ndim != 1:
        raise IDXFormatError(labels_path, f"expected labels (rank 1), found {IDX_KINDS[t.ndim]}")
    if x.shape[1:] != IMAGE_SHAPE:
        raise IDXFormatError(images_path, f"images are {x.shape[1]}x{x.shape[2]}, expected 28x28")
    if x.shape[0] == 0:
        raise IDXFormatError(images_path, "holds no images")
    if x.shape[0] != t.shape[0]:
        raise IDXFormatError(images_path, f"{x.shape[0]} images but {labels_path} has {t.shape[0]} labels")
    bad = np.flatnonzero(t >= num_classes)
    if bad.size:
        raise IDXFormatError(
            labels_path,
            f"label {int(t[bad[0]])} at index {int(bad[0])} is outside [0, {num_classes - 1}] "
            f"({bad.size} labels out of range)",
        )


def _one_line(message: str) -> str:
    return " ".join(message.split())
