"""Atomic file writes: a temp file in the target's directory, fsync, then rename over the target."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """Yield a binary file; on success it replaces ``path`` in one rename, on error it vanishes.

    A reader (or a crash at any point) sees either the old file or the complete new one, never
    a partial write.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        # mkstemp makes the file 0600; give it the mode an ordinary open() would (0666 & ~umask)
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    fsync_dir(target.parent)


def read_bytes_checked(
    path: Path, max_bytes: int, kind: str, error: Callable[[Path, str], Exception]
) -> bytes:
    """``path``'s bytes, or ``error(path, problem)`` if it is missing, a directory, unreadable
    or larger than ``max_bytes`` (checked before reading). ``kind`` names what it should be."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise error(path, f"file is {size} bytes, over the {max_bytes} byte limit")
        return path.read_bytes()
    except FileNotFoundError:
        raise error(path, "no such file") from None
    except IsADirectoryError:
        raise error(path, f"is a directory, not {kind}") from None
    except OSError as exc:
        raise error(path, f"cannot read: {exc.strerror or exc}") from None


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_writer(path) as fh:
        fh.write(data)


def atomic_write_with(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write(fileobj)`` and publish the result atomically at ``path``."""
    with atomic_writer(path) as fh:
        write(fh)


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
