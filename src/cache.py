"""What the feature and decode caches hold, and how to empty them.

    python src/cache.py                       # sizes under paths.data_dir (data/, or $TRANSFERLAB_DATA)
    python src/cache.py clear=true            # delete both caches
    python src/cache.py clear=decoded_cache   # or only one of them
    python src/cache.py data_dir=/scratch/data

Nothing is evicted automatically: a cache file is only reused by a run with the same
backbone weights, preprocessing and files, so old entries are safe to delete at any
time (the next run that needs one recomputes it).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from omegaconf import OmegaConf

from transferlab.errors import TransferlabError, run_script

CACHES = ("feature_cache", "decoded_cache")


def sizes(data_dir: Path) -> dict[str, tuple[int, int]]:
    """Cache name → (files, bytes)."""
    found = {}
    for name in CACHES:
        # Lock files (empty, beside each entry) are not entries.
        files = [p for p in (data_dir / name).rglob("*") if p.is_file() and p.suffix != ".lock"] if (data_dir / name).is_dir() else []
        found[name] = (len(files), sum(p.stat().st_size for p in files))
    return found


def main(arguments: list[str]) -> int:
    options = OmegaConf.from_cli(arguments)
    data_dir = Path(str(options.get("data_dir") or os.environ.get("TRANSFERLAB_DATA", "data"))).expanduser()
    clear = options.get("clear", False)
    if clear is True:
        targets = list(CACHES)
    elif clear in CACHES:
        targets = [clear]
    elif clear is False:
        targets = []
    else:
        raise TransferlabError(f"clear={clear}: use clear=true or one of {', '.join(CACHES)}")
    for name, (count, size) in sizes(data_dir).items():
        action = ""
        if name in targets and count:
            shutil.rmtree(data_dir / name)
            action = "  (deleted)"
        print(f"{data_dir / name}\t{count} files\t{size / 2**30:.2f} GB{action}")
    return 0


if __name__ == "__main__":
    run_script(main)
