"""Any image folder: `root/{train,val[,test]}/<class>/*` or `root/<class>/*` split here.

Without test/ (the PyTorch tutorial's hymenoptera layout) val/ becomes the test split and
the validation split is carved from train/: choosing the best checkpoint on the images
that report the test accuracy would make that accuracy optimistic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from transferlab.data.base import ImageClassificationDataModule
from transferlab.data.scan import scan
from transferlab.data.splits import Split, subset
from transferlab.errors import TransferlabError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SPLIT_NAMES = ("train", "val", "test")


def class_folders(root: Path, scan_cache_dir: Path | None = None) -> dict[str, list[Path]]:
    """Class name → its usable image files, for every sub-folder of `root` (unusable ones are reported)."""
    listed = {
        folder.name: sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    }
    if not listed:
        raise TransferlabError(f"{root} holds no class folders")
    usable = set(scan(root, [path for files in listed.values() for path in files], scan_cache_dir))
    classes = {}
    for name, files in listed.items():
        classes[name] = [path for path in files if path in usable]
        if not classes[name]:
            raise TransferlabError(
                f"class folder {root / name} holds no usable images ({len(files)} files; "
                f"image suffixes: {', '.join(sorted(IMAGE_SUFFIXES))})"
            )
    return classes


def as_split(classes: dict[str, list[Path]], class_names: list[str], source: str = "") -> Split:
    images = [path for name in class_names for path in classes[name]]
    labels = [index for index, name in enumerate(class_names) for _ in classes[name]]
    return Split(images, labels, source)


def carve_validation(
    train: Split, class_names: list[str], fraction: float, seed: int, where: Path
) -> tuple[Split, Split]:
    """A seeded, stratified (train, val) split of train/: `fraction` of every class (rounded, at
    least one image, and at least one left to train on) becomes the validation split."""
    labels = np.asarray(train.labels)
    held = []
    for label, name in enumerate(class_names):
        members = np.flatnonzero(labels == label)
        if len(members) == 0:
            continue  # a class with no training images at all: the start lines warn of it
        if len(members) < 2:
            raise TransferlabError(
                f"data.val_fraction: class {name!r} has {len(members)} image in {where}, too few to hold one out for "
                f"validation; add images to it, or add a test/ folder (val/ is then the validation split)"
            )
        count = min(len(members) - 1, max(1, int(fraction * len(members) + 0.5)))
        # A generator per class: adding images to one class leaves the others' validation images as they were.
        held.extend(np.random.default_rng([seed, label]).permutation(members)[:count])
    rest = np.setdiff1d(np.arange(len(labels)), held)
    return (
        subset(train.images, train.labels, rest, f"the folder {where} less the val split"),
        subset(
            train.images,
            train.labels,
            held,
            f"held out of the folder {where} (data.val_fraction={fraction:g}, stratified, seed {seed})",
        ),
    )


class ImageFolderDataModule(ImageClassificationDataModule):
    """`val_fraction`: the share of train/ held out for validation when there is no test/ folder.
    `scan_cache_dir`: where the check of every image file is cached (None: checked on every run)."""

    def __init__(
        self, root: str | None = None, val_fraction: float = 0.2, scan_cache_dir: str | None = None, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        if not root:
            raise TransferlabError(
                "data=image_folder needs data.root=PATH (train/ val/ [test/] class folders, or class folders)"
            )
        if not 0 <= val_fraction < 1:
            raise TransferlabError(
                f"data.val_fraction={val_fraction}: choose a fraction of train/ to hold out for validation, from 0 "
                "(none: train on all of train/ and keep the last epoch) to below 1 (e.g. 0.2)"
            )
        self.root = Path(root).expanduser()
        self.val_fraction = val_fraction
        self.scan_cache_dir = Path(scan_cache_dir).expanduser() if scan_cache_dir else None

    def describe(self) -> str:
        return f"the folder {self.root}"

    def find_splits(self) -> tuple[list[str], dict[str, Split]]:
        if not self.root.is_dir():
            raise TransferlabError(f"data.root={self.root} is not a directory")
        layout_uses_val_fraction = (self.root / "train").is_dir() and not (self.root / "test").is_dir()
        if self.val_fraction == 0 and not layout_uses_val_fraction:
            raise TransferlabError(
                f"data.val_fraction=0 applies to a folder with train/ and val/ but no test/; {self.root} is split "
                "by data.split_fractions (or has its own test/): leave data.val_fraction as it is"
            )
        if not (self.root / "train").is_dir():
            classes = class_folders(self.root, self.scan_cache_dir)
            names = list(classes)
            return names, {"all": as_split(classes, names, f"the folder {self.root}")}
        if not (self.root / "val").is_dir():
            raise TransferlabError(f"{self.root} has train/ but no val/ folder")
        found = {
            name: class_folders(self.root / name, self.scan_cache_dir)
            for name in SPLIT_NAMES
            if (self.root / name).is_dir()
        }
        names = list(found["train"])
        for split_name, classes in found.items():
            if list(classes) != names:
                raise TransferlabError(f"{self.root}/{split_name} has classes {list(classes)}, but train/ has {names}")
        splits = {
            split_name: as_split(classes, names, f"the folder {self.root / split_name}")
            for split_name, classes in found.items()
        }
        if "test" in splits:
            return names, splits
        # Choosing the checkpoint on the images that report the test accuracy would make it optimistic.
        splits["val"].source += " (no test/ folder: val/ is the test split, never used to choose)"
        if self.val_fraction == 0:  # a fixed recipe (fastai, Keras): all of train/, the last epoch's weights
            return names, {"train": splits["train"], "test": splits["val"]}
        train, val = carve_validation(splits["train"], names, self.val_fraction, self.seed, self.root / "train")
        return names, {"train": train, "val": val, "test": splits["val"]}
