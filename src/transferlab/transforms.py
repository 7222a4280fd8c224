"""Image transforms built from a backbone's DataConfig: preprocessing travels with the weights."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms import v2

from transferlab.backbones import DataConfig


@dataclass(frozen=True)
class Augment:
    """Training augmentation (the notes: random resized crop, horizontal flip, small rotation)."""

    enabled: bool = True
    scale_min: float = 0.7
    hflip: float = 0.5
    rotation: float = 10.0


def build_transforms(config: DataConfig, train: bool, augment: Augment | None = None) -> v2.Compose:
    size = config.input_size
    interpolation = v2.InterpolationMode(config.interpolation)
    if train and augment is not None and augment.enabled:
        geometry = [v2.RandomResizedCrop(size, scale=(augment.scale_min, 1.0), interpolation=interpolation, antialias=True)]
        if augment.hflip > 0:
            geometry.append(v2.RandomHorizontalFlip(augment.hflip))
        if augment.rotation > 0:
            geometry.append(v2.RandomRotation(augment.rotation, interpolation=v2.InterpolationMode.BILINEAR))
    else:
        # Evaluation: resize so that the centre crop keeps `crop_pct` of the short side (timm convention).
        geometry = [
            v2.Resize(round(size / config.crop_pct), interpolation=interpolation, antialias=True),
            v2.CenterCrop(size),
        ]
    return v2.Compose(
        [v2.ToImage(), *geometry, v2.ToDtype(torch.float32, scale=True), v2.Normalize(config.mean, config.std)]
    )


def denormalize(images: torch.Tensor, config: DataConfig) -> torch.Tensor:
    """Undo Normalize, for showing images as the model sees them."""
    mean = torch.tensor(config.mean, device=images.device).view(-1, 1, 1)
    std = torch.tensor(config.std, device=images.device).view(-1, 1, 1)
    return (images * std + mean).clamp(0, 1)
