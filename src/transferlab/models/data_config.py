"""How images must look to a backbone's weights: travels with the weights, never a datamodule's constant."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DataConfig:
    """How images must look to the weights (timm's pretrained_cfg, torchvision's Weights.transforms)."""

    input_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    crop_pct: float = 0.875

    def replace(self, **changes) -> DataConfig:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
