"""What an image is before the transforms: a file, or pixels already in memory."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

# A file path or an in-memory uint8 array (H×W or H×W×C).
ImageSource = Path | np.ndarray


def load_rgb(source: ImageSource) -> Image.Image:
    if isinstance(source, np.ndarray):
        return Image.fromarray(source).convert("RGB")
    with Image.open(source) as image:
        return image.convert("RGB")


def sources_digest(sources: Sequence[ImageSource]) -> str:
    """Identifies a list of images for the caches: each file by path, size and modification
    time (an edited file is a new image), each in-memory array by its bytes."""
    digest = hashlib.sha256()
    for source in sources:
        if isinstance(source, Path):
            stat = source.stat()
            digest.update(f"{source.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        else:
            digest.update(hashlib.sha1(np.ascontiguousarray(source).tobytes()).digest())
    return digest.hexdigest()
