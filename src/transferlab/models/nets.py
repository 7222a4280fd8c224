"""Architectures built here, from scratch, as the source notes build them, and their backbone builders."""

from __future__ import annotations

from torch import nn

from transferlab.errors import TransferlabError
from transferlab.models.backbone import Backbone
from transferlab.models.data_config import DataConfig


def conv_stage(in_channels: int, out_channels: int) -> nn.Sequential:
    """conv3x3 → BN → ReLU → 2×2 max-pool: the unit of the notes' plain CNN."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SmallCNN(nn.Module):
    """The plain CNN baseline: four conv stages, then global average pooling.

    Global pooling (instead of flattening) makes it work at any input size.
    """

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256)) -> None:
        super().__init__()
        channels = (3, *widths)
        self.stages = nn.Sequential(*(conv_stage(c_in, c_out) for c_in, c_out in zip(channels, channels[1:])))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = widths[-1]

    def forward(self, x):
        return self.pool(self.stages(x))


def vgg_features(cfg: list[int | str], batch_norm: bool) -> tuple[list[nn.Sequential], int]:
    """VGG from a cfg list (numbers: 3×3 conv widths, "M": 2×2 max-pool), as torchvision's
    `make_layers`, but one unit per conv (its BN, ReLU and any following pool), so the
    units can be frozen or retrained one at a time."""
    units: list[nn.Sequential] = []
    channels = 3
    for item in cfg:
        if item == "M":
            if not units:
                raise ValueError("a VGG cfg starts with a conv width, not 'M'")
            units[-1].append(nn.MaxPool2d(2))
            continue
        layers: list[nn.Module] = [nn.Conv2d(channels, int(item), kernel_size=3, padding=1)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(int(item)))
        layers.append(nn.ReLU(inplace=True))
        units.append(nn.Sequential(*layers))
        channels = int(item)
    return units, channels


class CustomVGG(nn.Module):
    """VGG built from a cfg list. Global average pooling replaces the notes' hand-computed
    `Linear(512*H*W, …)`, so any input size (≥ 2^pools px) works."""

    def __init__(self, cfg: list[int | str], batch_norm: bool = True) -> None:
        super().__init__()
        units, self.num_features = vgg_features(cfg, batch_norm)
        self.units = nn.Sequential(*units)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.pool(self.units(x))


class CustomResNet(nn.Module):
    """ResNet from block counts (`layers=[2, 2, 2]` as in the notes): a 7×7 stem, then one
    stage of basic residual blocks per count, widths 64, 128, 256, …, each stage after the
    first halving the resolution."""

    def __init__(self, layers: list[int], width: int = 64) -> None:
        super().__init__()
        from torchvision.models.resnet import BasicBlock

        self.stem = nn.Sequential(
            nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        stages, channels = [], width
        for index, count in enumerate(layers):
            out, stride = width * 2**index, 1 if index == 0 else 2
            downsample = None
            if stride != 1 or channels != out:
                downsample = nn.Sequential(nn.Conv2d(channels, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
            blocks = [BasicBlock(channels, out, stride, downsample)] + [BasicBlock(out, out) for _ in range(count - 1)]
            stages.append(nn.Sequential(*blocks))
            channels = out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = channels

    def forward(self, x):
        return self.pool(self.stages(self.stem(x)))


# Builders: the networks above as backbones (random weights only).


def _halvings(model: nn.Module) -> int:
    """The smallest input of a net built here: each 2×2 max-pool halves the side (global pooling ends them)."""
    return 2 ** sum(isinstance(layer, nn.MaxPool2d) and layer.kernel_size == 2 for layer in model.modules())


def build_small_cnn(name: str, pretrained: bool, weights_name: str | None) -> Backbone:
    if pretrained:
        raise TransferlabError("small_cnn has no pretrained weights: use model.pretrained=false (its config default)")
    model = SmallCNN()
    return Backbone(
        name,
        model,
        model.num_features,
        list(model.stages),
        DataConfig(input_size=128, crop_pct=1.0),
        min_input_size=_halvings(model),
    )


def build_vgg_custom(
    name: str, pretrained: bool, weights_name: str | None, cfg: list | None = None, batch_norm: bool = True
) -> Backbone:
    if pretrained:
        raise TransferlabError(
            "vgg_custom is built from a cfg list and has no pretrained weights: model.pretrained=false"
        )
    model = CustomVGG(list(cfg or [64, "M", 128, "M", 256, 256, "M", 512, 512, "M"]), batch_norm)
    return Backbone(
        name,
        model,
        model.num_features,
        list(model.units),
        DataConfig(input_size=128, crop_pct=1.0),
        min_input_size=_halvings(model),
    )


def build_resnet_custom(
    name: str, pretrained: bool, weights_name: str | None, layers: list[int] | None = None
) -> Backbone:
    if pretrained:
        raise TransferlabError(
            "resnet_custom is built from block counts and has no pretrained weights: model.pretrained=false"
        )
    model = CustomResNet(list(layers or [2, 2, 2]))
    blocks = [model.stem, *model.stages]
    return Backbone(
        name,
        model,
        model.num_features,
        blocks,
        DataConfig(input_size=128, crop_pct=1.0),
        min_input_size=_halvings(model),
    )
