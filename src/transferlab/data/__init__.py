from transferlab.data.base import ImageClassificationDataModule
from transferlab.data.digits import DigitsDataModule
from transferlab.data.folder import ImageFolderDataModule

__all__ = ["ImageClassificationDataModule", "DigitsDataModule", "ImageFolderDataModule"]
