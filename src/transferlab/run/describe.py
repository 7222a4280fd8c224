"""A model described without training it (src/describe.py): input size, normalisation, blocks with
their parameter counts and how many train under the strategy; or every model name and its source.

`describe` builds through `transferlab.run.build`, as training does, so what it counts is what
training trains. With model.pretrained=false it never touches the network.
"""

from __future__ import annotations

from omegaconf import DictConfig

from transferlab.classifier.module import describe_head
from transferlab.models.backbones import list_backbones
from transferlab.run import build
from transferlab.run.checks import check_config
from transferlab.strategies.auto import Auto
from transferlab.strategies.policies import HeadOnly


def list_models() -> str:
    """Every model name, where it comes from, and the overrides that select it."""
    configs = {p.stem for p in (build.CONF / "model").glob("*.yaml")}
    rows = [f"{'name':<24} {'source':<26} config"]
    for name, source in list_backbones().items():
        rows.append(
            f"{name:<24} {source:<26} {'model=' + name if name in configs else f'model=torchvision model.name={name}'}"
        )
    rows.append(f"{'timm/<any timm model>':<24} {'timm (Hugging Face hub)':<26} model=timm model.name=timm/<name>")
    return "\n".join(rows)


def describe(cfg: DictConfig) -> str:
    """The model and strategy of `cfg` (a composed training config), checked as training checks it."""
    check_config(cfg)
    undecided = isinstance(build.built("strategy", cfg.strategy), Auto)
    policy = HeadOnly() if undecided else build.policy(cfg)  # auto probes as head_only builds
    spec, backbone = build.backbone(cfg, policy)  # the backbone training builds, auxiliary head included or not
    data = backbone.data_config
    lines = [
        f"model        {backbone.name} ({'pretrained' if spec['pretrained'] else 'random weights'})",
        f"input size   {data.input_size}×{data.input_size}, {data.interpolation}, crop {data.crop_pct:.3f}",
        f"normalise    mean {tuple(round(m, 3) for m in data.mean)}, std {tuple(round(s, 3) for s in data.std)}",
        f"features     {backbone.num_features}",
    ]
    # A 2-class head is enough to show the split between frozen and trainable parameters.
    module = build.classifier(cfg, spec, backbone, num_classes=2)
    strategy = "auto" if undecided else policy.name
    if undecided:
        lines.append(f"strategy     {strategy} decides from the data at training time; counts below: all blocks")
    else:
        policy.freeze_before_training(module)
    lines.append(f"\n{'block':<6} {'name':<40} {'params':>12} {'trainable':>12}   under strategy {strategy}")
    for index, (name, block) in enumerate(zip(backbone.block_names(), backbone.blocks)):
        total = sum(p.numel() for p in block.parameters())
        trainable = sum(p.numel() for p in block.parameters() if p.requires_grad)
        lines.append(f"{index:<6} {name[:40]:<40} {total:>12,} {trainable:>12,}")
    head = sum(p.numel() for p in module.head.parameters())
    lines.append(f"{'head':<6} {describe_head(module.head)[:40]:<40} {head:>12,} {head:>12,}")
    if module.aux_head is not None:
        aux = sum(p.numel() for p in module.aux_head.parameters())
        trains = sum(p.numel() for p in module.aux_head.parameters() if p.requires_grad)
        lines.append(f"{'aux':<6} {'Linear(768, num_classes=2), Inception':<40} {aux:>12,} {trains:>12,}")
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    lines.append(f"\ntotal {total:,} parameters: {trainable:,} trainable, {total - trainable:,} frozen")
    return "\n".join(lines)
