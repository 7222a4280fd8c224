"""Backbones behind one contract (features, num_features, blocks, data_config), their weights and architectures."""

from transferlab.models.backbones import Backbone, create_backbone, list_backbones
from transferlab.models.data_config import IMAGENET_MEAN, IMAGENET_STD, DataConfig

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Backbone", "DataConfig", "create_backbone", "list_backbones"]
