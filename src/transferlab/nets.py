"""Architectures built here, from scratch, as the source notes build them."""

from __future__ import annotations

from torch import nn


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
