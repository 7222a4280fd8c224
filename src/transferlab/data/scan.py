"""Find the image files that cannot be used, once, before training.

Every file is decoded fully once (zero-byte, truncated, undecodable and
non-image files fail here instead of in the middle of epoch 7). Results are
cached per folder in `.transferlab-scan.json`, keyed by each file's size and
modification time, so a later run re-checks only files that changed. Unusable
files are listed in `bad_images.txt` beside the cache and skipped.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image
from tqdm import tqdm

log = logging.getLogger(__name__)

CACHE_NAME = ".transferlab-scan.json"
PARALLEL_FROM = 500  # files; fewer are checked faster than worker processes start
REPORT_NAME = "bad_images.txt"


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


def scan(root: Path, files: list[Path]) -> list[Path]:
    """The usable files among `files` (all under `root`); writes the report of the others."""
    cache_path = root / CACHE_NAME
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    fresh, usable, bad = {}, [], []
    to_check = []
    for path in files:
        key, stat = str(path.relative_to(root)), path.stat()
        signature = [stat.st_size, stat.st_mtime_ns]
        if key in cache and cache[key][:2] == signature:
            fresh[key] = cache[key]
        else:
            to_check.append((key, path, signature))
    problems = tqdm(checked_in_parallel([path for _, path, _ in to_check]), total=len(to_check),
                    desc=f"checking images in {root.name}", unit="img", disable=len(to_check) < PARALLEL_FROM, leave=False)
    for (key, _, signature), problem in zip(to_check, problems):
        fresh[key] = [*signature, problem]
    for path in files:
        problem = fresh[str(path.relative_to(root))][2]
        (bad if problem else usable).append((path, problem))
    _write(cache_path, json.dumps(fresh))
    if bad:
        report = root / REPORT_NAME
        written = _write(report, "".join(f"{path}\t{problem}\n" for path, problem in bad))
        where = report if written else "(could not write the report; first ones: " + ", ".join(str(p) for p, _ in bad[:5]) + ")"
        log.warning("%s: skipped %d unusable image file(s) of %d; see %s", root, len(bad), len(files), where)
    return [path for path, _ in usable]


def _write(path: Path, text: str) -> bool:
    """Write atomically; a read-only dataset folder only loses the cache, not the run."""
    try:
        partial = path.with_name(path.name + ".partial")
        partial.write_text(text)
        partial.replace(path)
        return True
    except OSError:
        return False
