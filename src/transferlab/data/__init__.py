from transferlab.data.base import ImageClassificationDataModule
from transferlab.data.cifar10 import CIFAR10DataModule
from transferlab.data.digits import DigitsDataModule
from transferlab.data.fashion_mnist import FashionMNISTDataModule
from transferlab.data.folder import ImageFolderDataModule
from transferlab.data.photos import PhotosDataModule
from transferlab.data.remote import CatsVsDogsDataModule, HymenopteraDataModule
from transferlab.data.table import TableDataModule

__all__ = [
    "ImageClassificationDataModule",
    "DigitsDataModule",
    "ImageFolderDataModule",
    "HymenopteraDataModule",
    "CatsVsDogsDataModule",
    "CIFAR10DataModule",
    "FashionMNISTDataModule",
    "PhotosDataModule",
    "TableDataModule",
]
