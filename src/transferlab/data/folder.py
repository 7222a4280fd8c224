"""Any image folder: `root/{train,val[,test]}/<class>/*` or `root/<class>/*` split here."""

from __future__ import annotations

import logging
from pathlib import Path

from transferlab.data.base import ImageClassificationDataModule, Split
from transferlab.data.scan import scan
from transferlab.errors import TransferlabError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SPLIT_NAMES = ("train", "val", "test")


def class_folders(root: Path) -> dict[str, list[Path]]:
    """Class name → its usable image files, for every sub-folder of `root` (unusable ones are reported)."""
    listed = {
        folder.name: sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    }
    if not listed:
        raise TransferlabError(f"{root} holds no class folders")
    usable = set(scan(root, [path for files in listed.values() for path in files]))
    classes = {}
    for name, files in listed.items():
        classes[name] = [path for path in files if path in usable]
        if not classes[name]:
            raise TransferlabError(
                f"class folder {root / name} holds no usable images ({len(files)} files; "
                f"image suffixes: {', '.join(sorted(IMAGE_SUFFIXES))})"
            )
    return classes


def as_split(classes: dict[str, list[Path]], class_names: list[str]) -> Split:
    images = [path for name in class_names for path in classes[name]]
    labels = [index for index, name in enumerate(class_names) for _ in classes[name]]
    return Split(images, labels)


class ImageFolderDataModule(ImageClassificationDataModule):
    def __init__(self, root: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if not root:
            raise TransferlabError("data=image_folder needs data.root=PATH (train/ val/ [test/] class folders, or class folders)")
        self.root = Path(root).expanduser()

    def find_splits(self) -> tuple[list[str], dict[str, Split]]:
        if not self.root.is_dir():
            raise TransferlabError(f"data.root={self.root} is not a directory")
        if not (self.root / "train").is_dir():
            classes = class_folders(self.root)
            names = list(classes)
            return names, {"all": as_split(classes, names)}
        if not (self.root / "val").is_dir():
            raise TransferlabError(f"{self.root} has train/ but no val/ folder")
        found = {name: class_folders(self.root / name) for name in SPLIT_NAMES if (self.root / name).is_dir()}
        names = list(found["train"])
        for split_name, classes in found.items():
            if list(classes) != names:
                raise TransferlabError(
                    f"{self.root}/{split_name} has classes {list(classes)}, but train/ has {names}"
                )
        if "test" not in found:
            log.warning("%s has no test/ folder: the val split doubles as the test split", self.root)
            found["test"] = found["val"]
        return names, {split_name: as_split(classes, names) for split_name, classes in found.items()}
