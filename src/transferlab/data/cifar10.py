"""CIFAR-10 in its published python format (`cifar-10-batches-py`): 45,000/5,000 train/val
(seeded, stratified, from the five training batches) and the 10,000 test images."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from transferlab.data.base import ImageClassificationDataModule
from transferlab.data.download import Remote, download, extract
from transferlab.data.splits import Split, holdout
from transferlab.errors import TransferlabError

FOLDER = "cifar-10-batches-py"


def read_batch(path: Path) -> tuple[np.ndarray, list[int]]:
    with path.open("rb") as handle:
        batch = pickle.load(handle, encoding="bytes")
    images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, list(batch[b"labels"])


class CIFAR10DataModule(ImageClassificationDataModule):
    def __init__(
        self,
        url: str,
        filename: str,
        md5: str | None,
        data_dir: str,
        root: str | None = None,
        val_size: int = 5000,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.remote = Remote(url=url, filename=filename, md5=md5)
        self.data_dir = Path(data_dir).expanduser()
        self.root = Path(root).expanduser() if root else self.data_dir / FOLDER
        self.use_existing_copy = root is not None
        self.val_size = val_size

    def prepare_data(self) -> None:
        if not self.use_existing_copy and not self.root.is_dir():
            extract(download(self.remote, self.data_dir), self.root, inside=FOLDER)

    def find_splits(self) -> tuple[list[str], dict[str, Split]]:
        try:
            with (self.root / "batches.meta").open("rb") as handle:
                names = [n.decode() for n in pickle.load(handle, encoding="bytes")[b"label_names"]]
            parts = [read_batch(self.root / f"data_batch_{i}") for i in range(1, 6)]
            test_images, test_labels = read_batch(self.root / "test_batch")
        except (OSError, pickle.UnpicklingError, KeyError, ValueError) as error:
            raise TransferlabError(f"{self.root} is not a complete {FOLDER} folder ({error})") from error
        images = np.concatenate([p[0] for p in parts])
        labels = [label for p in parts for label in p[1]]
        train, val = holdout(images, labels, self.val_size, self.seed)
        train.source = f"the CIFAR-10 training set less val ({len(train.labels):,} of {len(labels):,})"
        val.source = (
            f"held out of the CIFAR-10 training set (data.val_size={self.val_size}, stratified, seed {self.seed})"
        )
        test = Split(list(test_images), test_labels, "the CIFAR-10 test set")
        return names, {"train": train, "val": val, "test": test}
