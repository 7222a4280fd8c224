"""A small photo set from the real photographs scikit-image installs: which photograph is this crop from?

Ten photographs (eight colour scenes, two grey textures) are each cut into a `grid` × `grid` of
cells; a seeded deal gives every photograph's cells to train, val and test (`cells`), and every
crop lies inside one cell. No pixel of a val or test crop was ever in a training crop: a test
crop shows another part of the photograph (the astronaut's flag rather than her face), so the
network must recognise the scene from its content, colour and texture, not memorise a patch.
Offline, always: the photographs ship inside the scikit-image wheel.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from transferlab.data.base import ImageClassificationDataModule
from transferlab.data.splits import Split
from transferlab.errors import TransferlabError

SPLITS = ("train", "val", "test")


def photographs() -> dict[str, Callable[[], np.ndarray]]:
    """Class name → loader of the photograph, in class order."""
    try:
        from skimage import data
    except ImportError:  # a dependency of transferlab, but an environment may have lost it
        raise TransferlabError(
            "data=photos needs scikit-image, which ships the photographs: pip install scikit-image"
        ) from None
    return {
        "astronaut": data.astronaut,
        "cat": data.chelsea,
        "coffee": data.coffee,
        "rocket": data.rocket,
        "motorcycle": lambda: data.stereo_motorcycle()[0],
        "hubble": data.hubble_deep_field,
        "tissue": data.immunohistochemistry,
        "retina": data.retina,
        "grass": data.grass,
        "brick": data.brick,
    }


def crops_in_cell(photo: np.ndarray, box: tuple[int, int, int, int], count: int, size: int, rng) -> list[np.ndarray]:
    """`count` square crops inside the cell `box` (top, left, bottom, right), side 60–100 % of the
    cell's shorter side, resized to `size` px."""
    top, left, bottom, right = box
    shorter = min(bottom - top, right - left)
    crops = []
    for _ in range(count):
        side = int(rng.integers(int(0.6 * shorter), shorter + 1))
        y = int(rng.integers(top, bottom - side + 1))
        x = int(rng.integers(left, right - side + 1))
        crop = Image.fromarray(photo[y : y + side, x : x + side]).convert("RGB")
        crops.append(np.asarray(crop.resize((size, size), Image.BILINEAR)))
    return crops


def cell_boxes(height: int, width: int, grid: int) -> list[tuple[int, int, int, int]]:
    rows = np.linspace(0, height, grid + 1).astype(int)
    cols = np.linspace(0, width, grid + 1).astype(int)
    return [(rows[r], cols[c], rows[r + 1], cols[c + 1]) for r in range(grid) for c in range(grid)]


class PhotosDataModule(ImageClassificationDataModule):
    def __init__(
        self,
        grid: int = 6,
        cells: tuple[int, int, int] = (12, 12, 12),
        crops_per_cell: int = 4,
        crop_size: int = 96,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        cells = tuple(cells)
        if len(cells) != 3 or min(cells) < 1 or sum(cells) != grid * grid:
            raise TransferlabError(
                f"data.cells={list(cells)}: need three positive counts (train, val, test) summing to "
                f"data.grid² = {grid * grid}"
            )
        self.grid, self.cells, self.crops_per_cell, self.crop_size = grid, cells, crops_per_cell, crop_size

    def find_splits(self) -> tuple[list[str], dict[str, Split]]:
        rng = np.random.default_rng(self.seed)
        splits = {name: Split([], []) for name in SPLITS}
        loaders = photographs()
        bounds = np.cumsum((0, *self.cells))  # where each split's cells start and stop in a photograph's deal
        for label, load in enumerate(loaders.values()):
            photo = load()
            boxes = cell_boxes(photo.shape[0], photo.shape[1], self.grid)
            dealt = rng.permutation(len(boxes))
            for name, start, stop in zip(SPLITS, bounds[:-1], bounds[1:], strict=True):
                for cell in dealt[start:stop]:
                    crops = crops_in_cell(photo, boxes[cell], self.crops_per_cell, self.crop_size, rng)
                    splits[name].images.extend(crops)
                    splits[name].labels.extend([label] * len(crops))
        for name, count in zip(SPLITS, self.cells, strict=True):
            splits[name].source = (
                f"{self.crops_per_cell} crops in each of {count} of the {self.grid}×{self.grid} cells of each "
                f"photograph (data.cells, seed {self.seed})"
            )
        return list(loaders), splits
