"""What the feature, decode and scan caches hold on disk, and emptying them (src/cache.py).

The caches are where a run with the same overrides keeps them: the composed training config's
feature_cache.dir, data.decode_cache_dir and data.scan_cache_dir, which the caller composes and passes in. Nothing is
evicted automatically: a cache file is only reused by a run with the same backbone weights,
preprocessing and files, so old entries are safe to delete at any time (the next run that needs one
recomputes it).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from omegaconf import DictConfig

from transferlab.errors import TransferlabError

CACHES = ("feature_cache", "decoded_cache", "scan_cache")


def cache_dirs(cfg: DictConfig) -> dict[str, Path]:
    """Cache name → its folder in `cfg`, the config a training run with the same overrides composes."""
    data_dir = Path(cfg.paths.data_dir)
    # A dataset without a decode cache (digits) names no folder: the one the image datasets share.
    decoded = cfg.data.get("decode_cache_dir") or data_dir / "decoded_cache"
    scanned = cfg.data.get("scan_cache_dir") or data_dir / "scan_cache"
    features = (cfg.get("feature_cache") or {}).get("dir") or data_dir / "feature_cache"
    folders = {"feature_cache": features, "decoded_cache": decoded, "scan_cache": scanned}
    return {name: Path(str(folder)).expanduser() for name, folder in folders.items()}


def sizes(folders: dict[str, Path]) -> dict[str, tuple[int, int]]:
    """Cache name → (files, bytes)."""
    found = {}
    for name, folder in folders.items():
        # Lock files (empty, beside each entry) are not entries.
        files = [p for p in folder.rglob("*") if p.is_file() and p.suffix != ".lock"] if folder.is_dir() else []
        found[name] = (len(files), sum(p.stat().st_size for p in files))
    return found


def to_clear(clear: bool | str) -> list[str]:
    """The caches `clear=` names: true → all, false → none, or one of `CACHES` by name."""
    if isinstance(clear, bool):
        return list(CACHES) if clear else []
    if clear in CACHES:
        return [clear]
    raise TransferlabError(f"clear={clear}: use clear=true or one of {', '.join(CACHES)}")


def inventory(cfg: DictConfig, clear: bool | str = False) -> list[str]:
    """One line per cache (folder, files, GB), after deleting the caches `clear` names ("(deleted)")."""
    targets = to_clear(clear)  # a wrong value is refused before anything is deleted
    folders = cache_dirs(cfg)
    lines = []
    for name, (count, size) in sizes(folders).items():
        action = ""
        if name in targets and count:
            shutil.rmtree(folders[name])
            action = "  (deleted)"
        lines.append(f"{folders[name]}\t{count} files\t{size / 2**30:.2f} GB{action}")
    return lines
