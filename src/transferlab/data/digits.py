"""scikit-learn's handwritten digits: 1,797 real 8×8 images, 10 classes, offline."""

from __future__ import annotations

import numpy as np

from transferlab.data.base import ImageClassificationDataModule, Split


class DigitsDataModule(ImageClassificationDataModule):
    def find_splits(self) -> tuple[list[str], dict[str, Split]]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        # Pixel values run 0..16; spread them over 0..255 so images look like images.
        images = (digits.images * (255 / 16)).round().astype(np.uint8)
        return [str(c) for c in digits.target_names], {
            "all": Split(list(images), digits.target.tolist(), "scikit-learn's digits")
        }
