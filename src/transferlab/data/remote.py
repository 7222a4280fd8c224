"""Image-folder datasets that are downloaded once: hymenoptera and cats_vs_dogs."""

from __future__ import annotations

import logging
from pathlib import Path

from transferlab.data.download import Remote, download, extract
from transferlab.data.folder import ImageFolderDataModule

log = logging.getLogger(__name__)


class DownloadedImageFolderDataModule(ImageFolderDataModule):
    """An image folder that comes from a published archive. `root` set: use that copy,
    download nothing; else download `url` into `data_dir` once and extract it there."""

    folder_in_archive: str = ""  # the archive's top-level folder that becomes the dataset root

    def __init__(
        self,
        url: str,
        filename: str,
        data_dir: str,
        md5: str | None = None,
        sha256: str | None = None,
        root: str | None = None,
        **kwargs,
    ) -> None:
        self.remote = Remote(url=url, filename=filename, md5=md5, sha256=sha256)
        self.data_dir = Path(data_dir).expanduser()
        super().__init__(root=root or str(self.data_dir / self.folder_in_archive), **kwargs)
        self.use_existing_copy = root is not None

    def prepare_data(self) -> None:
        if self.use_existing_copy or self.root.is_dir():
            return
        archive = download(self.remote, self.data_dir)
        extract(archive, self.root, inside=self.folder_in_archive)
        log.info("%s extracted to %s", self.remote.filename, self.root)


class HymenopteraDataModule(DownloadedImageFolderDataModule):
    """Ants vs bees of the PyTorch transfer-learning tutorial: train/ 245, val/ 153 images.
    There is no test/ folder: val/ is the test split, and the validation split that picks the
    best checkpoint is held out from train/ (`val_fraction`, seeded and stratified)."""

    folder_in_archive = "hymenoptera_data"


class CatsVsDogsDataModule(DownloadedImageFolderDataModule):
    """Microsoft's PetImages (Cat/, Dog/; about 25,000 JPEGs, some broken), split here
    40/10/10 % as in the notes; unusable files are skipped and reported."""

    folder_in_archive = "PetImages"
