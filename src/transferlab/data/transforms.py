"""Image transforms built from a backbone's DataConfig: preprocessing travels with the weights."""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from transferlab.models.data_config import DataConfig


@dataclass(frozen=True)
class Augment:
    """Training augmentation (the notes: random resized crop, horizontal flip, small rotation)."""

    enabled: bool = True
    scale_min: float = 0.7
    hflip: float = 0.5
    rotation: float = 10.0
    # The corners a rotation uncovers: "black" (torchvision's RandomRotation) or "reflect" (the image
    # mirrored at its edges, Keras' RandomRotation default).
    rotation_fill: str = "black"


def build_transforms(config: DataConfig, train: bool, augment: Augment | None = None) -> v2.Compose:
    size = config.input_size
    interpolation = v2.InterpolationMode(config.interpolation)
    if train and augment is not None and augment.enabled:
        geometry = [
            v2.RandomResizedCrop(size, scale=(augment.scale_min, 1.0), interpolation=interpolation, antialias=True)
        ]
        if augment.hflip > 0:
            geometry.append(v2.RandomHorizontalFlip(augment.hflip))
        if augment.rotation > 0:
            rotate = v2.RandomRotation(augment.rotation, interpolation=v2.InterpolationMode.BILINEAR)
            if augment.rotation_fill == "reflect":
                # Mirror the image outward (symmetric: the edge pixel repeats, as Keras' "reflect"), by as much
                # as any rotation of a square uncovers ((√2 - 1) / 2 of its side), rotate, take the centre back.
                margin = math.ceil(size * (math.sqrt(2) - 1) / 2) + 1
                geometry += [v2.Pad(margin, padding_mode="symmetric"), rotate, v2.CenterCrop(size)]
            else:
                geometry.append(rotate)
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


# -- The same transforms on decoded uint8 images (the decode cache, caches/decoded.py) ---------------
#
# The decode cache stores every image once, resized so that its short side is
# `resize_size(config)`: exactly the evaluation Resize of `build_transforms`, so the
# evaluation path is a centre crop and gives the same pixels. Training augmentation
# (random resized crop, flip, rotation) is one affine map from output to source
# pixels, sampled in a single bilinear pass: one resampling instead of three, and
# several times cheaper than running the three transforms one after the other.

GRID_SAMPLE_MODES = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest"}


def resize_size(config: DataConfig) -> int:
    """The short side evaluation resizes to before the centre crop (and the decode cache stores)."""
    return round(config.input_size / config.crop_pct)


@dataclass(frozen=True)
class CropFlipRotate:
    """One draw of the training augmentation: crop box in source pixels, flip, angle in degrees."""

    top: int
    left: int
    height: int
    width: int
    flip: bool
    angle: float


def sample_augmentation(height: int, width: int, augment: Augment, rng: random.Random) -> CropFlipRotate:
    """Draw what RandomResizedCrop (same scale and 3/4–4/3 ratio ranges, same 10 tries and
    central fallback), RandomHorizontalFlip and RandomRotation would draw."""
    area, (low, high) = height * width, (math.log(3 / 4), math.log(4 / 3))
    for _ in range(10):
        target = area * rng.uniform(augment.scale_min, 1.0)
        ratio = math.exp(rng.uniform(low, high))
        crop_width, crop_height = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < crop_width <= width and 0 < crop_height <= height:
            top, left = rng.randint(0, height - crop_height), rng.randint(0, width - crop_width)
            break
    else:
        crop_height, crop_width = min(height, round(width / (3 / 4))), min(width, round(height * 4 / 3))
        top, left = (height - crop_height) // 2, (width - crop_width) // 2
    flip = rng.random() < augment.hflip
    angle = rng.uniform(-augment.rotation, augment.rotation) if augment.rotation > 0 else 0.0
    return CropFlipRotate(top, left, crop_height, crop_width, flip, angle)


@functools.cache
def pixel_centres(size: int) -> torch.Tensor:
    """Centres of `size` pixels in [-1, 1] (align_corners=False); computed once per size, read-only."""
    return (torch.arange(size, dtype=torch.float32) * 2 + 1) / size - 1


def affine_grid(params: CropFlipRotate, height: int, width: int, size: int, reflect: bool = False) -> torch.Tensor:
    """(1, size, size, 2) source coordinates in [-1, 1] (grid_sample's convention, align_corners=False)
    for every output pixel of crop → resize to size×size → flip → rotate about the centre. The corners
    the rotation uncovers are black, or with `reflect` the crop mirrored at its edges."""
    # Output pixel centres in [-1, 1]; undo the rotation (counter-clockwise by `angle`, as torchvision's)...
    centres = pixel_centres(size)
    x, y = centres.view(1, size), centres.view(size, 1)
    cos, sin = math.cos(math.radians(params.angle)), math.sin(math.radians(params.angle))
    flip = -1.0 if params.flip else 1.0  # ...then the flip...
    # ...then place the crop box in the source image. Each coordinate is a (1, size) + (size, 1)
    # broadcast: a few cheap ops on size² values, no matrix product.
    scale_x, shift_x = params.width / width, (params.width + 2 * params.left) / width - 1
    scale_y, shift_y = params.height / height, (params.height + 2 * params.top) / height - 1
    grid = torch.empty(1, size, size, 2)
    grid[0, ..., 0] = (flip * scale_x * cos) * x + ((-flip * scale_x * sin) * y + shift_x)
    grid[0, ..., 1] = (scale_y * sin) * x + ((scale_y * cos) * y + shift_y)
    if params.angle and reflect:
        # Fold each coordinate back into the crop box, mirrored at its edges: in the box's own [-1, 1],
        # t → 1 - |((t + 1) mod 4) - 2| (identity inside, a reflection about ±1 outside).
        for axis, scale, shift in ((0, scale_x, shift_x), (1, scale_y, shift_y)):
            inside = (grid[0, ..., axis] - shift) / scale
            grid[0, ..., axis] = (1 - ((inside + 1).remainder(4) - 2).abs()) * scale + shift
    elif params.angle:
        # torchvision rotates the cropped image: corners come from outside the crop and are black.
        crop_x = (grid[0, ..., 0] - shift_x).abs_() > scale_x
        crop_y = (grid[0, ..., 1] - shift_y).abs_() > scale_y
        grid[0, ..., 0].masked_fill_(crop_x | crop_y, -2.0)  # beyond the source: grid_sample gives 0
    return grid


class DecodedTransform:
    """What `build_transforms` does, for a uint8 H×W×3 array whose short side is `resize_size(config)`.
    Random draws come from the `rng` passed in, so a sample's augmentation is a function of its key."""

    def __init__(self, config: DataConfig, train: bool, augment: Augment | None = None) -> None:
        self.size = config.input_size
        self.augment = augment if train and augment is not None and augment.enabled else None
        self.mode = GRID_SAMPLE_MODES.get(config.interpolation, "bilinear")
        self.reflect = self.augment is not None and self.augment.rotation_fill == "reflect"
        # Reflected corners sample up to the image's own edge: pad the last half pixel with it, not zeros.
        self.padding = "reflection" if self.reflect else "zeros"
        # Normalize((x / 255 - mean) / std) as one multiply-add: x * scale + shift.
        std, mean = torch.tensor(config.std).view(3, 1, 1), torch.tensor(config.mean).view(3, 1, 1)
        self.scale, self.shift = 1 / (255 * std), -mean / std

    def __call__(self, pixels: np.ndarray, rng: random.Random | None = None) -> torch.Tensor:
        image = torch.from_numpy(pixels).permute(2, 0, 1)  # C×H×W view of H×W×C
        if self.augment is None:
            image = v2.functional.center_crop(image, [self.size, self.size]).float()
        else:
            height, width = image.shape[1:]
            params = sample_augmentation(height, width, self.augment, rng or random.Random())
            grid = affine_grid(params, height, width, self.size, self.reflect)
            image = F.grid_sample(
                image.unsqueeze(0).float(), grid, mode=self.mode, padding_mode=self.padding, align_corners=False
            )[0]
            if self.mode == "bicubic":
                image.clamp_(0, 255)  # bicubic overshoots
        return torch.addcmul(self.shift, image, self.scale)
