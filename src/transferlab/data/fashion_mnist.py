"""Fashion-MNIST from its IDX files: 55,000/5,000 train/val (seeded, stratified) and 10,000 test.

Looked for, in order: `data.root`, the download directory, and the raw files that
Debian's package `dataset-fashion-mnist` installs; downloaded only if none has them.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from transferlab.data.base import ImageClassificationDataModule
from transferlab.data.download import Remote, download
from transferlab.data.splits import Split, holdout
from transferlab.errors import TransferlabError

FILES = {  # file → md5 published with the dataset (and used by torchvision)
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not): magic 0x0000080N, N dimension sizes, then uint8 data."""
    data = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if data[:2] != b"\0\0" or data[2] != 0x08:
        raise TransferlabError(f"{path} is not an IDX file of unsigned bytes")
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


class FashionMNISTDataModule(ImageClassificationDataModule):
    def __init__(
        self,
        base_url: str,
        data_dir: str,
        root: str | None = None,
        debian_dir: str = str(DEBIAN_DIR),
        val_size: int = 5000,
        md5s: dict[str, str] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.base_url = base_url.rstrip("/")
        self.md5s = md5s or FILES
        self.download_dir = Path(data_dir).expanduser() / "FashionMNIST" / "raw"
        self.candidates = [Path(root).expanduser()] if root else [self.download_dir, Path(debian_dir)]
        self.val_size = val_size

    def _complete(self, folder: Path) -> bool:
        return all((folder / name).is_file() or (folder / name.removesuffix(".gz")).is_file() for name in FILES)

    def prepare_data(self) -> None:
        if any(self._complete(folder) for folder in self.candidates):
            return
        if len(self.candidates) == 1:
            raise TransferlabError(f"data.root={self.candidates[0]} lacks the Fashion-MNIST files {list(FILES)}")
        for name, md5 in self.md5s.items():
            download(Remote(url=f"{self.base_url}/{name}", filename=name, md5=md5), self.download_dir)

    def _read(self, folder: Path, name: str) -> np.ndarray:
        path = folder / name
        return read_idx(path if path.is_file() else folder / name.removesuffix(".gz"))

    def find_splits(self) -> tuple[list[str], dict[str, Split]]:
        folder = next((f for f in self.candidates if self._complete(f)), None)
        if folder is None:
            raise TransferlabError(f"no Fashion-MNIST files in {[str(c) for c in self.candidates]}")
        images, labels = (
            self._read(folder, "train-images-idx3-ubyte.gz"),
            self._read(folder, "train-labels-idx1-ubyte.gz"),
        )
        test_images, test_labels = (
            self._read(folder, "t10k-images-idx3-ubyte.gz"),
            self._read(folder, "t10k-labels-idx1-ubyte.gz"),
        )
        if len(images) != len(labels) or len(test_images) != len(test_labels):
            raise TransferlabError(f"{folder}: image and label files disagree in length")
        labels, test_labels = labels.tolist(), test_labels.tolist()
        train, val = holdout(images, labels, self.val_size, self.seed)
        train.source = f"the Fashion-MNIST training set less val ({len(train.labels):,} of {len(labels):,})"
        val.source = (
            f"held out of the Fashion-MNIST training set (data.val_size={self.val_size}, stratified, seed {self.seed})"
        )
        test = Split(list(test_images), test_labels, "the Fashion-MNIST test set")
        return CLASSES, {"train": train, "val": val, "test": test}
