"""Find the image files that cannot be used, once, before training.

Every file is decoded fully once (zero-byte, truncated, undecodable and
non-image files fail here instead of in the middle of epoch 7). Results are
cached per folder in the scan cache directory (`data.scan_cache_dir`), never in
the data folder, which may be shared, read-only or under version control: one
file per folder, named by its path, holding each file's size and modification
time, so a later run re-checks only files that changed. Unusable files are listed
in a `*-bad_images.txt` beside the cache and skipped. Jobs of a sweep that scan
the same folder at once take turns: the first checks, the others read its cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image

from transferlab.console import Progress
from transferlab.files import atomic, locked

log = logging.getLogger(__name__)

PARALLEL_FROM = 500  # files; fewer are checked faster than worker processes start


def cache_paths(root: Path, cache_dir: Path) -> tuple[Path, Path]:
    """The scan cache of folder `root` and its report of unusable files: named by the folder's name and
    a digest of its absolute path, so two folders never share one, and a moved folder is scanned anew."""
    key = f"{root.name}-{hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]}"
    return cache_dir / f"{key}.json", cache_dir / f"{key}-bad_images.txt"


def problem_with(path: Path) -> str | None:
    """Why `path` cannot be used as an image, or None if it can."""
    if path.stat().st_size == 0:
        return "empty file"
    try:
        with Image.open(path) as image:  # PIL reads the format from the content, not the suffix
            image.load()
    except Exception as error:  # UnidentifiedImageError, truncated data, decoder errors
        return f"{type(error).__name__}: {error}"
    return None


def checked_in_parallel(paths: list[Path]) -> Iterator[str | None]:
    """`problem_with` each path, in order; on every core for a large folder (25,000 PetImages)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if len(paths) < PARALLEL_FROM or cores < 2:
        yield from map(problem_with, paths)
        return
    with ProcessPoolExecutor(max_workers=cores) as pool:
        yield from pool.map(problem_with, paths, chunksize=64)


def scan(root: Path, files: list[Path], cache_dir: Path | None) -> list[Path]:
    """The usable files among `files` (all under `root`); writes the report of the others under
    `cache_dir` (None: no cache, every file checked, the report in the log only)."""
    if cache_dir is None:
        problems = dict(zip(files, checked_in_parallel(files), strict=True))
        bad = [(path, problem) for path, problem in problems.items() if problem]
        if bad:
            first = ", ".join(f"{path} ({problem})" for path, problem in bad[:5])
            log.warning("%s: skipped %d unusable image file(s) of %d: %s", root, len(bad), len(files), first)
        return [path for path, problem in problems.items() if not problem]
    files = list(dict.fromkeys(files))  # a file listed twice is checked once
    cache_path, report = cache_paths(root, Path(cache_dir).expanduser())
    with locked(cache_path):
        results = _results(root, files, _read_cache(cache_path))
        _write(cache_path, json.dumps(results))
        problem_of = {path: results[os.path.relpath(path, root)][2] for path in files}
        bad = [(path, problem) for path, problem in problem_of.items() if problem]
        if not bad:
            report.unlink(missing_ok=True)  # an older list (other files of this folder) would mislead
        if bad:
            written = _write(report, "".join(f"{path}\t{problem}\n" for path, problem in bad))
            where = (
                report
                if written
                else "(could not write the report; first ones: " + ", ".join(str(p) for p, _ in bad[:5]) + ")"
            )
            log.warning("%s: skipped %d unusable image file(s) of %d; see %s", root, len(bad), len(files), where)
    return [path for path, problem in problem_of.items() if not problem]


def _results(root: Path, files: list[Path], cache: dict[str, list]) -> dict[str, list]:
    """Relative path → [size, mtime_ns, problem or None] for every file, checking only those the cache lacks."""
    fresh, to_check = {}, []
    for path in files:
        key, stat = os.path.relpath(path, root), path.stat()
        signature = [stat.st_size, stat.st_mtime_ns]
        if key in cache and cache[key][:2] == signature:
            fresh[key] = cache[key]
        else:
            to_check.append((key, path, signature))
    progress = Progress(f"checking the images in {root}", len(to_check), "images", log)
    try:
        for (key, _, signature), problem in zip(to_check, checked_in_parallel([p for _, p, _ in to_check])):
            fresh[key] = [*signature, problem]
            progress.update()
    finally:
        progress.close()
    if to_check:
        log.info(
            "%s: %d image files checked (%d known from the scan cache)", root, len(to_check), len(fresh) - len(to_check)
        )
    return fresh


def _read_cache(path: Path) -> dict[str, list]:
    """The cached results; a damaged cache is reported, and every file is checked again."""
    try:
        cache = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        log.warning("scan cache %s is unreadable (%s): checking every image again", path, error)
        return {}
    if not isinstance(cache, dict) or not all(isinstance(entry, list) and len(entry) == 3 for entry in cache.values()):
        log.warning("scan cache %s is not one transferlab wrote: checking every image again", path)
        return {}
    return cache


def _write(path: Path, text: str) -> bool:
    """Write under a name of this process's own, then rename into place; a cache directory that cannot
    be written only loses the cache, not the run."""
    try:
        with atomic(path) as partial:
            partial.write_text(text)
        return True
    except OSError:
        return False
