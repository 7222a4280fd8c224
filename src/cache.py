"""What the feature and decode caches hold, and how to empty them.

    python src/cache.py                       # sizes under paths.data_dir (data/, or $TRANSFERLAB_DATA)
    python src/cache.py clear=true            # delete both caches
    python src/cache.py clear=decoded_cache   # or only one of them
    python src/cache.py data_dir=/scratch/data
    python src/cache.py data=hymenoptera feature_cache.dir=/scratch/features   # any train.py override

The caches are where a run with the same overrides keeps them (the composed config's
feature_cache.dir and data.decode_cache_dir). Nothing is evicted automatically: a cache
file is only reused by a run with the same backbone weights, preprocessing and files,
so old entries are safe to delete at any time (the next run that needs one recomputes it).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from omegaconf import DictConfig

from transferlab.errors import TransferlabError, run_script
from transferlab.run import build

CACHES = ("feature_cache", "decoded_cache")


def cache_dirs(cfg: DictConfig) -> dict[str, Path]:
    """Cache name → its folder in the config a run with the same overrides composes."""
    data_dir = Path(cfg.paths.data_dir)
    # A dataset without a decode cache (digits) names no folder: the one the image datasets share.
    decoded = cfg.data.get("decode_cache_dir") or data_dir / "decoded_cache"
    features = (cfg.get("feature_cache") or {}).get("dir") or data_dir / "feature_cache"
    return {"feature_cache": Path(str(features)).expanduser(), "decoded_cache": Path(str(decoded)).expanduser()}


def sizes(folders: dict[str, Path]) -> dict[str, tuple[int, int]]:
    """Cache name → (files, bytes)."""
    found = {}
    for name, folder in folders.items():
        # Lock files (empty, beside each entry) are not entries.
        files = [p for p in folder.rglob("*") if p.is_file() and p.suffix != ".lock"] if folder.is_dir() else []
        found[name] = (len(files), sum(p.stat().st_size for p in files))
    return found


def main(arguments: list[str]) -> int:
    own = dict(argument.split("=", 1) for argument in arguments if argument.split("=", 1)[0] in ("clear", "data_dir"))
    overrides = [argument for argument in arguments if argument.split("=", 1)[0] not in ("clear", "data_dir")]
    if "data_dir" in own:
        overrides.append(f"paths.data_dir={own['data_dir']}")
    folders = cache_dirs(build.compose(overrides))
    clear = own.get("clear", "false").lower()
    if clear == "true":
        targets = list(CACHES)
    elif clear in CACHES:
        targets = [clear]
    elif clear == "false":
        targets = []
    else:
        raise TransferlabError(f"clear={own['clear']}: use clear=true or one of {', '.join(CACHES)}")
    for name, (count, size) in sizes(folders).items():
        action = ""
        if name in targets and count:
            shutil.rmtree(folders[name])
            action = "  (deleted)"
        print(f"{folders[name]}\t{count} files\t{size / 2**30:.2f} GB{action}")
    return 0


if __name__ == "__main__":
    run_script(main)
