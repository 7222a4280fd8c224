"""A dataset's splits: images and labels with where they came from, stratified holdouts, and the lines
a run starts with (each split's images a class and its source)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split

from transferlab.images import ImageSource


@dataclass
class Split:
    images: list[ImageSource]
    labels: list[int]
    source: str = ""  # where the split came from, printed at the start of a run ("the folder val/")


def subset(images: Sequence[ImageSource], labels: Sequence[int], indices, source: str = "") -> Split:
    ordered = sorted(int(i) for i in indices)
    return Split([images[i] for i in ordered], [labels[i] for i in ordered], source)


def holdout(images: Sequence[ImageSource], labels: Sequence[int], size: int | float, seed: int) -> tuple[Split, Split]:
    """A seeded, stratified (rest, held-out) split."""
    rest, held = train_test_split(np.arange(len(labels)), test_size=size, stratify=labels, random_state=seed)
    return subset(images, labels, rest), subset(images, labels, held)


def percent(fraction: float) -> str:
    return f"{100 * fraction:g}"


# Selection on fewer validation images than this is noisy: one image moves val/acc by a point or more.
SMALL_VALIDATION = 100
# The largest class over the smallest above this: accuracy alone hides how the small classes fare.
IMBALANCED = 3.0


def split_lines(class_names: Sequence[str], splits: dict[str, Split]) -> tuple[list[str], list[str]]:
    """One line per split (its images a class and where it came from), and warnings about them."""
    lines, warnings = [], []
    for name, split in splits.items():
        counts = np.bincount(split.labels, minlength=len(class_names))
        if len(class_names) <= 4:
            per_class = ", ".join(f"{c} {n:,}" for c, n in zip(class_names, counts, strict=True))
        else:
            low, high = counts.min(), counts.max()
            per_class = f"{low:,} a class" if low == high else f"{low:,}–{high:,} a class"
        lines.append(f"  {name:<5} {len(split.labels):>7,} images ({per_class}): {split.source or 'as given'}")
        if name == "train" and "val" not in splits:
            lines.append(
                "  val      none: data.val_fraction=0, so nothing chooses an epoch or stops early: the run trains "
                "every epoch on all of train/ and tests the last epoch's weights"
            )
        missing = [c for c, n in zip(class_names, counts, strict=True) if n == 0]
        if missing:
            consequence = "the model cannot learn them" if name == "train" else "nothing measures them"
            warnings.append(f"the {name} split has no images of {', '.join(map(repr, missing))}: {consequence}")
        if name == "train" and counts.min() > 0 and counts.max() > IMBALANCED * counts.min():
            small, large = int(counts.argmin()), int(counts.argmax())
            warnings.append(
                f"imbalanced: the train split has {counts[large]:,} {class_names[large]!r} images but "
                f"{counts[small]:,} {class_names[small]!r}; see balanced accuracy and per-class F1 in metrics.json"
            )
        if name == "val" and len(split.labels) < SMALL_VALIDATION:
            warnings.append(
                f"the val split has {len(split.labels)} images: choosing the best epoch on so few is noisy "
                f"(one image is {100 / len(split.labels):.1f} points of val/acc)"
            )
    return lines, warnings
