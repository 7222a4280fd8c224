"""The build step: a composed config in, the objects of a run out, each instantiated here and only here.

    checked config ─► policy ─► model_spec ─► backbone ─► datamodule ─► classifier
                                                                    └► feature cache, callbacks, loggers, trainer

Like lightning-hydra-template's single instantiation point: `run.pipeline.train`, `run.decide`,
`run.describe`, the screen and the tests all build through these functions, so what describe reports is
what training trains. Every function takes the composed config (`cfg`, as `src/train.py` gets it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, InstantiationException
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelSummary
from omegaconf import DictConfig, OmegaConf, open_dict

from transferlab.caches.features import FeatureCache
from transferlab.callbacks.checkpoints import AtomicCheckpointIO
from transferlab.callbacks.seeding import SeedEachBatch
from transferlab.classifier.module import ImageClassifier
from transferlab.data.base import ImageClassificationDataModule
from transferlab.distributed.sync_batchnorm import TimmAwareSyncBatchNorm
from transferlab.errors import TransferlabError, hydra_refusal
from transferlab.models.backbones import Backbone, create_backbone
from transferlab.run import resolvers
from transferlab.strategies.base import FreezePolicy

log = logging.getLogger(__name__)

CONF = Path(__file__).resolve().parents[3] / "conf"


def compose(overrides: list[str], config_name: str = "train", return_hydra_config: bool = False) -> DictConfig:
    """The config `src/train.py` would run with these overrides, for scripts that do not train."""
    resolvers.register()
    try:
        if GlobalHydra.instance().is_initialized():  # inside a Hydra app (src/train.py): its config search path
            return hydra_compose(config_name, overrides=overrides, return_hydra_config=return_hydra_config)
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return hydra_compose(config_name, overrides=overrides, return_hydra_config=return_hydra_config)
    except HydraException as error:  # an unknown key or group option: one line, with the nearest names
        raise TransferlabError(hydra_refusal(error)) from None


def run_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """The config of a run writing to `output_dir`, with Hydra's runtime set as `src/train.py` has it:
    for benchmarks and tests that train in this process (`pipeline.train(run_config(...))`)."""
    cfg = compose(overrides, return_hydra_config=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def built(section: str, node: Any, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate`, with a constructor's refusal as one line naming the config section
    (Hydra wraps it in a multi-line InstantiationException)."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, TransferlabError):
            raise cause from None
        if isinstance(cause, (TypeError, ValueError, MisconfigurationException)):
            raise TransferlabError(f"{section}: {cause}") from None
        raise


def policy(cfg: DictConfig) -> FreezePolicy:
    freeze_policy = built("strategy", cfg.strategy)
    if not isinstance(freeze_policy, FreezePolicy):  # strategy=auto: run.decide chooses one before the build
        raise TransferlabError(
            f"strategy={freeze_policy.name} chooses a strategy from the data before the run is built"
        )
    if freeze_policy.owns_schedule and cfg.get("scheduler"):
        raise TransferlabError(
            f"strategy={freeze_policy.name} sets the learning rate at every step (its own schedule): "
            f"use scheduler=none, not {cfg.scheduler._target_.rsplit('.', 1)[-1]}"
        )
    return freeze_policy


def model_spec(cfg: DictConfig, freeze_policy: FreezePolicy) -> dict:
    """The backbone's arguments for this run: `model:` as configured, with what the policy rules out
    turned off (pretrained weights for scratch, Inception's auxiliary classifier for a frozen start)."""
    spec = OmegaConf.to_container(cfg.model, resolve=True)
    pretrained = bool(spec["pretrained"]) and freeze_policy.uses_pretrained_weights
    if spec["pretrained"] and not pretrained:
        log.info("strategy %s trains from random weights: no pretrained weights are loaded", freeze_policy.name)
    spec.update(pretrained=pretrained, weights=spec.get("weights") if pretrained else None)
    if cfg.head.get("pool", "avg") != "avg":  # fastai's concat pooling, which the backbone does (models/pooling.py)
        spec["pool"] = cfg.head.pool
    if spec.get("aux_weight") and freeze_policy.frozen_backbone_epochs != 0:
        # Inception's auxiliary classifier only runs while the whole backbone is in train mode from the
        # first step: a backbone frozen at first (head_only; two_phase and gradual, whose first epochs may
        # run on cached features) would leave it without gradients (an error under DDP).
        spec["aux_weight"] = 0.0
    return spec


def backbone(cfg: DictConfig, freeze_policy: FreezePolicy) -> tuple[dict, Backbone]:
    """The model spec and the backbone it builds (downloading pretrained weights if need be)."""
    spec = model_spec(cfg, freeze_policy)
    built_backbone = create_backbone(**spec)
    if not spec["pretrained"] and freeze_policy.uses_pretrained_weights and freeze_policy.freezes_backbone:
        log.warning("strategy %s freezes parts of a randomly initialised %s", freeze_policy.name, cfg.model.name)
    return spec, built_backbone


def datamodule(cfg: DictConfig, built_backbone: Backbone) -> ImageClassificationDataModule:
    """The dataset's datamodule, preparing images as the backbone's weights expect, with its splits set up."""
    data = built("data", cfg.data, data_config=built_backbone.data_config, _convert_="object")
    check_input_size(data.data_config.input_size, built_backbone)
    data.prepare_data()
    data.setup("fit")
    return data


def check_input_size(size: int, built_backbone: Backbone) -> None:
    """A network's smallest input (its pooling would otherwise fail deep in the first forward pass)."""
    if size < built_backbone.min_input_size:
        raise TransferlabError(
            f"data.image_size={size} is below the {built_backbone.min_input_size} px {built_backbone.name} "
            f"needs{built_backbone.min_input_reason}: set data.image_size={built_backbone.min_input_size} or more"
        )


def classifier(
    cfg: DictConfig,
    spec: dict,
    built_backbone: Backbone,
    num_classes: int,
    class_names: list[str] | None = None,
    data_config: dict | None = None,
    freeze_policy: FreezePolicy | None = None,
    class_weights: list[float] | None = None,
) -> ImageClassifier:
    return ImageClassifier(
        model=spec,
        num_classes=num_classes,
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True) if cfg.get("scheduler") else None,
        class_names=class_names,
        data_config=data_config,
        dropout=cfg.head.dropout,
        head_hidden=cfg.head.get("hidden"),
        head_init=cfg.head.get("init", "torch"),
        channels_last=cfg.channels_last,
        backbone=built_backbone,
        param_groups=freeze_policy.param_groups if freeze_policy is not None else None,
        class_weights=class_weights,
    )


def class_weights(cfg: DictConfig, data: ImageClassificationDataModule) -> list[float] | None:
    """loss.class_weight=balanced: each class weighs N / (classes × its train images), scikit-learn's
    "balanced", so that every class counts as much in the loss as a balanced set would make it."""
    if (cfg.get("loss") or {}).get("class_weight") != "balanced":
        return None
    counts = np.bincount(data.splits["train"].labels, minlength=data.num_classes)
    return [len(data.splits["train"].labels) / (data.num_classes * max(int(n), 1)) for n in counts]


def feature_cache(cfg: DictConfig) -> FeatureCache:
    options = OmegaConf.to_container(cfg.get("feature_cache") or {"enabled": False}, resolve=True)
    return FeatureCache(**options)


@dataclass
class Experiment:
    """What a run trains: built from its config in this order (the datamodule needs the backbone's
    preprocessing, the classifier the datamodule's classes)."""

    policy: FreezePolicy
    spec: dict
    backbone: Backbone
    datamodule: ImageClassificationDataModule
    module: ImageClassifier


@dataclass(frozen=True)
class Prebuilt:
    """A backbone (with its spec) and datamodule built before the experiment: strategy=auto's probe's."""

    spec: dict
    backbone: Backbone
    datamodule: ImageClassificationDataModule


def experiment(cfg: DictConfig, prebuilt: Prebuilt | None = None) -> Experiment:
    """The run's objects from a checked config (run.checks.check_config: the caller checks, once). A
    `prebuilt` backbone and datamodule are used when the policy asks for the same backbone (not when
    Inception's auxiliary classifier, off for the probe, trains from the first step)."""
    freeze_policy = policy(cfg)
    if prebuilt is not None and model_spec(cfg, freeze_policy) == prebuilt.spec:
        spec, built_backbone, data = prebuilt.spec, prebuilt.backbone, prebuilt.datamodule
    else:
        spec, built_backbone = backbone(cfg, freeze_policy)
        data = datamodule(cfg, built_backbone)
    module = classifier(
        cfg,
        spec,
        built_backbone,
        data.num_classes,
        data.class_names,
        data.data_config.to_dict(),
        freeze_policy,
        class_weights(cfg, data),
    )
    return Experiment(freeze_policy, spec, built_backbone, data, module)


def override_key(override: str) -> str:
    """The top-level key a command-line override sets: `+strategy.n=3` → strategy."""
    return override.lstrip("+~").split("=", 1)[0].split(".", 1)[0]


def callbacks(
    cfg: DictConfig, freeze_policy: FreezePolicy, *extra: Callback, validation: bool = True
) -> list[Callback]:
    """The policy, per-batch reseeding, what the run needs besides (`extra`), then `callbacks:`.
    Without a validation split (`validation=False`) nothing selects or stops early: best.ckpt is the
    last epoch's weights."""
    nodes = dict(cfg.get("callbacks") or {})
    if not validation:
        nodes.pop("early_stopping", None)
        if nodes.get("model_checkpoint") is not None:
            nodes["model_checkpoint"] = OmegaConf.merge(nodes["model_checkpoint"], {"monitor": None})
    # An entry set to null is switched off (a recipe without early stopping: callbacks.early_stopping=null).
    configured = [built(f"callbacks.{name}", node) for name, node in nodes.items() if node is not None]
    if not cfg.get("verbose"):  # the layer table is upstream's detail: verbose=true prints it
        configured = [c for c in configured if not isinstance(c, ModelSummary)]
    if not cfg.get("logger"):  # logger=none: the monitor writes only to loggers, and refuses a run without one
        configured = [c for c in configured if not isinstance(c, LearningRateMonitor)]
    return [freeze_policy, SeedEachBatch(cfg.seed), *extra, *configured]


def loggers(cfg: DictConfig) -> list:
    return [built(f"logger.{name}", node) for name, node in (cfg.get("logger") or {}).items()]


def trainer(cfg: DictConfig, run_callbacks: list[Callback], run_loggers: list, **placement: Any) -> L.Trainer:
    # trainer.sync_batchnorm, timm-aware and on CPU too (Lightning's drops timm's fused activations).
    plugins = [AtomicCheckpointIO(), *([TimmAwareSyncBatchNorm()] if cfg.trainer.get("sync_batchnorm") else [])]
    return built(
        "trainer",
        cfg.trainer,
        callbacks=run_callbacks,
        logger=run_loggers,
        plugins=plugins,
        sync_batchnorm=False,
        enable_model_summary=bool(cfg.get("verbose")),
        **placement,
    )
