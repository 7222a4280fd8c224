"""What an image is before the transforms: a file, or pixels already in memory."""

from __future__ import annotations

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
