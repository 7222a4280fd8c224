"""Files that the jobs of a sweep share (downloads, extracted folders, bad-file scans, decoded
images, cached features): one lock and one way to publish, for all of them.

Jobs start together and want the same files: each "check, compute, publish" runs under a
file lock beside its result (`.<name>.lock`), so one job computes while the others wait and
then use its result. What is written goes to a name no other process uses and is renamed
into place, so a reader only ever opens a complete file.
"""

from __future__ import annotations

import importlib
import logging
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)


def lock_path(path: Path) -> Path:
    """A hidden file beside `path`: a folder of locks would be one more class to image-folder readers."""
    return path.with_name(f"{'' if path.name.startswith('.') else '.'}{path.name}.lock")


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the lock of `path` for the block: check, compute and publish `path` there."""
    lock = _acquire(path)
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def _acquire(path: Path) -> FileLock | None:
    """The lock of `path`, held (after waiting for the process that holds it), or None where no lock
    file can be made: a read-only folder, where nothing can be published either."""
    lock = FileLock(lock_path(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire(blocking=False)
        except Timeout:
            log.info("waiting for another process that is writing %s (lock %s)", path, lock_path(path))
            lock.acquire()
    except OSError as error:
        log.debug("no lock for %s (%s): going on without one", path, error)
        return None
    return lock


def partial_path(path: Path) -> Path:
    """Where this process writes `path` before renaming it into place: no other process uses the name."""
    return path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")


@contextmanager
def atomic(path: Path) -> Iterator[Path]:
    """The one way a file is written here: `with atomic(path) as partial:` write `partial`; on success it is
    renamed to `path` in one step, on any failure (a full disk, Ctrl-C) it is removed and `path` is left as it
    was. A reader never opens half a file. (Downloads keep a fixed `.part` name instead, to resume it.)"""
    partial = partial_path(path)
    try:
        yield partial
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def library_versions(*modules: str) -> dict[str, str]:
    """The versions of the libraries whose code computes a cached result: an upgrade may change it."""
    return {name: str(importlib.import_module(name).__version__) for name in modules}
