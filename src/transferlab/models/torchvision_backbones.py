"""torchvision's models as backbones: each family's stages as blocks, its weights' own preprocessing."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from transferlab.errors import TransferlabError
from transferlab.models import weights as weight_sources
from transferlab.models.backbone import Backbone
from transferlab.models.data_config import DataConfig


def _strip_classifier(classifier: nn.Sequential) -> tuple[nn.Module, int]:
    """Drop the final Linear of a torchvision classifier; keep what precedes it (fc6/fc7, norms)."""
    last = classifier[-1]
    assert isinstance(last, nn.Linear)
    kept = classifier[:-1]
    return (kept if any(True for _ in kept.parameters()) else nn.Identity()), last.in_features


def _split_at_pools(features: nn.Sequential) -> list[nn.Module]:
    """VGG/AlexNet `features` cut after each max-pool: the five (three) classic stages."""
    stages, current = [], []
    for layer in features:
        current.append(layer)
        if isinstance(layer, nn.MaxPool2d):
            stages.append(nn.Sequential(*current))
            current = []
    if current:
        stages.append(nn.Sequential(*current))
    return stages


def _resnet(model) -> tuple[nn.Module, int, list[nn.Module]]:
    num_features = model.fc.in_features
    model.fc = nn.Identity()
    stem = nn.ModuleList([model.conv1, model.bn1])
    return model, num_features, [stem, model.layer1, model.layer2, model.layer3, model.layer4]


def _vgg(model) -> tuple[nn.Module, int, list[nn.Module]]:
    # Rebuild `features` from its stages so each stage is a real submodule (and a state-dict prefix).
    model.features = nn.Sequential(*_split_at_pools(model.features))
    model.classifier, num_features = _strip_classifier(model.classifier)
    return model, num_features, [*model.features, model.classifier]


def _features_sequential(model) -> tuple[nn.Module, int, list[nn.Module]]:
    """EfficientNet, MobileNet, ConvNeXt: `features` is already a stem-first list of stages."""
    model.classifier, num_features = _strip_classifier(model.classifier)
    blocks = list(model.features)
    if not isinstance(model.classifier, nn.Identity):
        blocks.append(model.classifier)
    return model, num_features, blocks


def _densenet(model) -> tuple[nn.Module, int, list[nn.Module]]:
    num_features = model.classifier.in_features
    model.classifier = nn.Identity()
    f = model.features
    blocks = [nn.ModuleList([f.conv0, f.norm0])]
    for i in range(1, 5):
        parts = [getattr(f, f"denseblock{i}")]
        parts.append(getattr(f, f"transition{i}") if i < 4 else f.norm5)
        blocks.append(nn.ModuleList(parts))
    return model, num_features, blocks


def _googlenet(model) -> tuple[nn.Module, int, list[nn.Module]]:
    # The auxiliary classifiers only exist to help training from scratch; drop them.
    model.aux_logits, model.aux1, model.aux2 = False, None, None
    num_features = model.fc.in_features
    model.fc = nn.Identity()
    parts = lambda *names: nn.ModuleList([getattr(model, n) for n in names])  # noqa: E731
    return (
        model,
        num_features,
        [
            parts("conv1", "conv2", "conv3"),
            parts("inception3a", "inception3b"),
            parts("inception4a", "inception4b", "inception4c", "inception4d", "inception4e"),
            parts("inception5a", "inception5b"),
        ],
    )


def _inception(model) -> tuple[nn.Module, int, list[nn.Module]]:
    num_features = model.fc.in_features
    model.fc = nn.Identity()
    if model.AuxLogits is not None:
        model.AuxLogits.fc = nn.Identity()  # 768 auxiliary features; the classifier adds its own head
    parts = lambda *names: nn.ModuleList([getattr(model, n) for n in names if getattr(model, n) is not None])  # noqa: E731
    return (
        model,
        num_features,
        [
            parts("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"),
            parts("Mixed_5b", "Mixed_5c", "Mixed_5d"),
            parts("Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "AuxLogits"),
            parts("Mixed_7a", "Mixed_7b", "Mixed_7c"),
        ],
    )


TORCHVISION_FAMILIES: dict[str, Callable] = {
    "googlenet": _googlenet,
    "inception": _inception,
    "resnet": _resnet,
    "resnext": _resnet,
    "wide_resnet": _resnet,
    "vgg": _vgg,
    "alexnet": _vgg,
    "efficientnet": _features_sequential,
    "mobilenet_v2": _features_sequential,
    "mobilenet_v3": _features_sequential,
    "convnext": _features_sequential,
    "densenet": _densenet,
}


def _torchvision_family(name: str) -> Callable | None:
    return next((split for prefix, split in TORCHVISION_FAMILIES.items() if name.startswith(prefix)), None)


def torchvision_names() -> list[str]:
    import torchvision

    return [n for n in torchvision.models.list_models(module=torchvision.models) if _torchvision_family(n)]


def _torchvision_data_config(weights) -> DataConfig:
    preset = weights.transforms()
    crop, resize = preset.crop_size[0], preset.resize_size[0]
    return DataConfig(
        input_size=crop,
        mean=tuple(preset.mean),
        std=tuple(preset.std),
        interpolation=preset.interpolation.value,
        crop_pct=crop / resize,
    )


def build_torchvision(name: str, pretrained: bool, weights_name: str | None, aux_weight: float = 0.0) -> Backbone:
    import torchvision

    available = torchvision.models.get_model_weights(name)
    try:
        chosen = available[weights_name] if weights_name else available.DEFAULT
    except KeyError:
        raise TransferlabError(
            f"model.weights={weights_name} is not a torchvision weight of {name}; "
            f"choose one of {[w.name for w in available]}"
        ) from None
    # GoogLeNet and Inception v3 weights come from TensorFlow: they expect `transform_input`
    # (torchvision turns it on with the weights) and their files include the auxiliary heads.
    ported = (
        {"aux_logits": True, "transform_input": True, "init_weights": False}
        if name in ("googlenet", "inception_v3")
        else {}
    )
    model = torchvision.models.get_model(name, weights=None, **ported)
    if pretrained:
        model.load_state_dict(weight_sources.torchvision_state_dict(chosen))
    if name == "inception_v3" and not aux_weight:
        model.aux_logits, model.AuxLogits = False, None
    features, num_features, blocks = _torchvision_family(name)(model)
    aux = 768 if name == "inception_v3" and aux_weight else 0
    minimum, reason = chosen.meta.get("min_size", (1, 1))[0], ""
    if aux:  # the auxiliary head pools Mixed_6e's 17×17 map (at 299 px) with a 5×5 window, then a 5×5 conv
        minimum, reason = (
            299,
            (
                f" with its auxiliary classifier (model.aux_weight={aux_weight}, used while the "
                f"backbone trains; model.aux_weight=0 turns it off)"
            ),
        )
    return Backbone(
        name,
        features,
        num_features,
        blocks,
        _torchvision_data_config(chosen),
        aux_features=aux,
        aux_weight=aux_weight if aux else 0.0,
        min_input_size=minimum,
        min_input_reason=reason,
    )


# ---------------------------------------------------------------- timm and packaged
