"""Where corrections go: an image folder per model, and an append-only record of each correction.

Layout under ``FEEDBACK_DIR`` (what ``python -m training train --images FEEDBACK_DIR/<model>``
reads as it is)::

    FEEDBACK_DIR/
      mnist/                  the image folder: one subfolder per class, named by
        7/<sha256>.png        training.classfolders.class_folder (the class name itself for
        3/<sha256>.jpg        digits), each image the uploaded file, named by its content's hash
      mnist.jsonl             the record: one JSON line per correction (time, model, version,
                              request ids, predicted, label, file, status)
      .lock .tmp/             the lock every writer takes, and where files are written first

The record and the lock sit beside the model's image folder, not in it, so nothing but class
folders is ever inside ``FEEDBACK_DIR/<model>/``.

- **Once per image**: the same bytes again with the same label store nothing new (the record
  still gets a line: it counts corrections, the folder holds images). The same bytes with
  another label *move* the file to that class's folder: the newest correction wins, and the
  record keeps every earlier one (``status: relabelled`` names the class it left). One image is
  never in two class folders, so training never sees it with two labels.
- **Never partial**: an image is written to ``.tmp/``, fsynced and renamed into place; the
  record gets each request's lines in one ``write`` and an fsync. A failure midway (a full
  disk) cuts the record back to its length before and undoes the renames of that request, so a
  request is stored whole or not at all.
- **Many writers, one volume**: every store takes a thread lock and an exclusive POSIX lock on
  ``.lock`` (``fcntl.lockf``, which NFS honours too), so workers, threads and replicas sharing
  the volume never interleave their checks and writes.
- **A quota** over the whole directory, image files and their bytes (``FEEDBACK_MAX_FILES``,
  ``FEEDBACK_MAX_BYTES``): a request whose new images would pass it is refused (507) before
  anything is written. The usage is counted by listing the class folders; a folder whose
  modification time is unchanged (and not recent) is not listed again.
- **Disk errors** (full, read-only, not writable) answer 503, and only this route: the
  predictions never touch the volume.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service.errors import APIError
from training.classfolders import class_folder

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
TEMP_DIR = ".tmp"
RECORD_SUFFIX = ".jsonl"
#: A folder modified this recently is listed again even if its modification time looks
#: unchanged: another writer may have changed it within the timestamp's granularity.
FRESH_SECONDS = 2.0


class FeedbackDisabled(APIError):
    """The server collects no corrections (no ``FEEDBACK_DIR``): 404, as there is no store to
    add to (and not 403, which says the token was refused)."""

    status = 404
    code = "feedback_disabled"


class FeedbackFull(APIError):
    """The quota of ``FEEDBACK_DIR`` would be passed: nothing was written."""

    status = 507
    code = "feedback_full"


class FeedbackUnavailable(APIError):
    """The volume cannot be written (full, read-only, no permission): nothing was written."""

    status = 503
    code = "feedback_unavailable"


@dataclass(frozen=True)
class Correction:
    """One image and what it should have been (class indices of the model)."""

    data: bytes
    extension: str
    label: int
    #: What the client says it was shown (None: not said), and what the model answers now.
    predicted: int | None
    model_predicted: int


@dataclass(frozen=True)
class Stored:
    """What became of one correction: its file (relative to ``FEEDBACK_DIR/<model>``)."""

    file: str
    sha256: str
    #: created: a new file; duplicate: already there under this label; relabelled: moved here.
    status: str
    #: relabelled: the class folder it left.
    previous: str | None = None


class FeedbackStore:
    """The corrections of every model under ``root``, within a quota of files and bytes."""

    def __init__(self, root: Path, max_files: int, max_bytes: int) -> None:
        self.root = root
        self.max_files = max_files
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        #: class folder -> (its mtime_ns when listed, files, bytes)
        self._usage: dict[str, tuple[int, int, int]] = {}

    def store(
        self,
        model: str,
        version: str,
        class_names: Sequence[str],
        corrections: Sequence[Correction],
        context: dict[str, Any],
    ) -> list[Stored]:
        """Store ``corrections`` to ``model`` and record each (with ``context``: request ids and
        the like), all or nothing. ``FeedbackFull`` over the quota; ``FeedbackUnavailable``
        when the volume cannot be written."""
        try:
            with self._locked():
                return self._store(model, version, class_names, corrections, context)
        except OSError as exc:
            log.warning("feedback: cannot store in %s: %s", self.root, exc)
            raise FeedbackUnavailable(_disk_problem(exc)) from None

    def usage(self) -> tuple[int, int]:
        """(image files, bytes) under ``root``, every model."""
        with self._locked():
            return self._count()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:  # (POSIX locks are per process: threads of one worker queue here)
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # (releases the lock)

    def _store(
        self,
        model: str,
        version: str,
        class_names: Sequence[str],
        corrections: Sequence[Correction],
        context: dict[str, Any],
    ) -> list[Stored]:
        images = self.root / class_folder(model)
        folders = [class_folder(name) for name in class_names]
        where: dict[str, str] = {}  # file name -> its class folder now (this request's moves too)
        plan: list[tuple[Correction, str, str, Stored]] = []
        new_files = new_bytes = 0
        for correction in corrections:
            digest = hashlib.sha256(correction.data).hexdigest()
            name = f"{digest}.{correction.extension}"
            target = folders[correction.label]
            current = where.get(name) or next((f for f in folders if (images / f / name).exists()), None)
            if current is None:
                stored = Stored(f"{target}/{name}", digest, "created")
                new_files += 1
                new_bytes += len(correction.data)
            elif current == target:
                stored = Stored(f"{target}/{name}", digest, "duplicate")
            else:
                stored = Stored(f"{target}/{name}", digest, "relabelled", current)
            where[name] = target
            plan.append((correction, name, current or "", stored))
        if new_files:
            files, size = self._count()
            if files + new_files > self.max_files or size + new_bytes > self.max_bytes:
                raise FeedbackFull(
                    f"the feedback store is full: {files} files and {size} bytes stored, "
                    f"{new_files} files and {new_bytes} bytes more would pass its quota of "
                    f"{self.max_files} files (FEEDBACK_MAX_FILES) and {self.max_bytes} bytes "
                    "(FEEDBACK_MAX_BYTES); nothing was stored",
                    {"files": files, "bytes": size, "max_files": self.max_files, "max_bytes": self.max_bytes},
                )
        done: list[tuple[Path, Path]] = []  # renames made, to undo on a failure
        try:
            for correction, name, current, stored in plan:
                final = images / stored.file
                if stored.status == "created" and not final.exists():
                    final.parent.mkdir(parents=True, exist_ok=True)
                    temp = self._write_temp(correction.data)
                    os.rename(temp, final)
                    done.append((temp, final))
                elif stored.status == "relabelled":
                    final.parent.mkdir(parents=True, exist_ok=True)
                    source = images / current / name
                    os.rename(source, final)
                    done.append((source, final))
            for directory in {final.parent for _, final in done} | {src.parent for src, _ in done}:
                _fsync_directory(directory)
            now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            lines = [
                _record_line(now, model, version, class_names, correction, stored, context)
                for correction, _, _, stored in plan
            ]
            self._append(self.root / f"{class_folder(model)}{RECORD_SUFFIX}", b"".join(lines))
        except BaseException:
            for source, final in reversed(done):
                with suppress(OSError):
                    if source.parent.name == TEMP_DIR:
                        os.unlink(final)
                    else:
                        os.rename(final, source)
            raise
        return [stored for _, _, _, stored in plan]

    def _write_temp(self, data: bytes) -> Path:
        temp_dir = self.root / TEMP_DIR
        temp_dir.mkdir(exist_ok=True)
        temp = temp_dir / f"{os.getpid()}-{secrets.token_hex(8)}"
        try:
            with temp.open("xb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            with suppress(OSError):
                temp.unlink()
            raise
        return temp

    def _append(self, path: Path, lines: bytes) -> None:
        """Append ``lines`` whole, or leave the record as it was."""
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":  # a line cut by a crash: end it
                lines = b"\n" + lines
            try:
                written = os.write(fd, lines)
                if written != len(lines):
                    raise OSError(errno.ENOSPC, f"wrote {written} of {len(lines)} bytes")
                os.fsync(fd)
            except BaseException:
                with suppress(OSError):
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)

    def _count(self) -> tuple[int, int]:
        files = size = 0
        now = time.time()
        for model in _subdirectories(self.root):
            for folder in _subdirectories(model):
                stat = os.stat(folder)
                key = os.fspath(folder)
                cached = self._usage.get(key)
                if cached is None or cached[0] != stat.st_mtime_ns or now - stat.st_mtime < FRESH_SECONDS:
                    count = total = 0
                    with os.scandir(folder) as entries:
                        for entry in entries:
                            if entry.is_file(follow_symlinks=False):
                                count += 1
                                total += entry.stat(follow_symlinks=False).st_size
                    cached = self._usage[key] = (stat.st_mtime_ns, count, total)
                files += cached[1]
                size += cached[2]
        return files, size


def _subdirectories(path: Path) -> list[Path]:
    with os.scandir(path) as entries:
        return [
            Path(entry.path)
            for entry in entries
            if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False)
        ]


def _fsync_directory(path: Path) -> None:
    """Make a rename in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _record_line(
    time_: str,
    model: str,
    version: str,
    class_names: Sequence[str],
    correction: Correction,
    stored: Stored,
    context: dict[str, Any],
) -> bytes:
    record: dict[str, Any] = {
        "time": time_,
        "model": model,
        "version": version,
        **context,
        "predicted": None if correction.predicted is None else class_names[correction.predicted],
        "model_predicted": class_names[correction.model_predicted],
        "label": class_names[correction.label],
        "file": stored.file,
        "sha256": stored.sha256,
        "bytes": len(correction.data),
        "status": stored.status,
    }
    if stored.previous is not None:
        record["previous_folder"] = stored.previous
    return json.dumps(record, ensure_ascii=False).encode() + b"\n"


def _disk_problem(exc: OSError) -> str:
    """What a client is told when the volume fails (details go to the log only)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the feedback volume is full: nothing was stored; predictions are unaffected"
    if exc.errno == errno.EROFS:
        return "the feedback volume is read-only: nothing was stored; predictions are unaffected"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "the feedback volume is not writable: nothing was stored; predictions are unaffected"
    return "the feedback volume cannot be written: nothing was stored; predictions are unaffected"
