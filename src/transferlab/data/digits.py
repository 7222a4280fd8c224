"""scikit-learn's handwritten digits: 1,797 real 8×8 images, 10 classes, offline."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from transferlab.data.base import ImageClassificationDataModule
from transferlab.data.splits import Split


class DigitsDataModule(ImageClassificationDataModule):
    def __init__(self, split_fractions: Sequence[float] = (0.6, 0.2, 0.2), **kwargs) -> None:
        """60/20/20 % of the 1,797 images (conf/data/digits.yaml): a fifth to test on, as scikit-learn's examples."""
        super().__init__(split_fractions=split_fractions, **kwargs)

    def find_splits(self) -> tuple[list[str], dict[str, Split]]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        # Pixel values run 0..16; spread them over 0..255 so images look like images.
        images = (digits.images * (255 / 16)).round().astype(np.uint8)
        return [str(c) for c in digits.target_names], {
            "all": Split(list(images), digits.target.tolist(), "scikit-learn's digits")
        }
