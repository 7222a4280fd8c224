"""Freeze policies: which backbone blocks train, when, and at what learning rate.

Each policy is a Lightning `BaseFinetuning` callback selected by `strategy=`.
Two things differ from Lightning's helpers on purpose:

* Frozen BatchNorm keeps its pretrained statistics by staying in eval mode.
  Lightning's `freeze()` instead sets `track_running_stats=False`, which makes a
  BN layer in train mode normalise with batch statistics (finetuning-scheduler
  #13). Lightning switches modes around validation, so the policy sets them
  before every training batch: frozen parts in eval, the rest in train.
* Parameters join the optimizer by identity, not by value (`torch.equal`), and
  the learning-rate scheduler learns about each new group.
* Frozen parts are named by module path and looked up before every batch, so a
  conversion that swaps modules after freezing (sync BatchNorm) leaves nothing stale;
  under DDP a phase change rebuilds the wrapper so the new parameters are reduced too.
"""

from __future__ import annotations

import logging
import math

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader, Subset

from transferlab import internals, parallel
from transferlab.errors import TransferlabError

log = logging.getLogger(__name__)


def set_trainable(modules: list[nn.Module], trainable: bool) -> None:
    for module in modules:
        for param in module.parameters():
            param.requires_grad = trainable


def block_paths(pl_module: L.LightningModule, blocks: slice) -> list[str]:
    """Module paths (in the LightningModule) of a slice of the backbone's blocks."""
    prefix = "backbone.features"
    return [
        f"{prefix}.{path}" if path else prefix for paths in pl_module.backbone.block_paths[blocks] for path in paths
    ]


def reinitialise(modules: list[nn.Module]) -> None:
    """Fresh random weights, as the notes advise for retrained layers."""
    for module in modules:
        for layer in module.modules():
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()


class FreezePolicy(BaseFinetuning):
    """Base policy: subclasses freeze in `freeze_before_training` and may change
    phase in `finetune_function`."""

    name: str = ""  # the strategy= config it belongs to, reported in metrics.json
    # False for policies that train from random weights (the model is built without a download).
    uses_pretrained_weights: bool = True
    # False for policies that never train the backbone (no auxiliary classifier then).
    trains_backbone: bool = True
    # Whether pretrained layers stay frozen for some epochs (a warning when they are random instead).
    freezes_backbone: bool = True
    # Whether the policy looks at the data before training to choose what to freeze (strategy=auto).
    decides_from_data: bool = False
    # Whether the policy sets the learning rates itself at every step (then no scheduler= may be set).
    owns_schedule: bool = False

    def __init__(self) -> None:
        super().__init__()
        # Module paths kept in inference mode (eval) while training, e.g. "backbone".
        self.inference_mode: list[str] = []
        self.ddp_reduces: frozenset[str] = frozenset()  # the trainable parameters DDP was built with

    @property
    def frozen_backbone_epochs(self) -> int | None:
        """How many epochs the whole backbone stays frozen from the start (None: the whole run):
        its features can be computed once for those epochs (feature_cache.py)."""
        return None if not self.trains_backbone else 0

    def prepare(self, pl_module: L.LightningModule, datamodule: L.LightningDataModule) -> None:
        """Called by `run.train` before training (and before the feature cache): a policy that
        looks at the data first (auto) decides here. Nothing to do by default."""

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        """No phase change by default."""

    def report(self) -> dict[str, float | str]:
        """What the policy measured or decided, for metrics.json (auto/…); nothing by default."""
        return {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)  # freeze_before_training
        if "backbone" in self.inference_mode and getattr(pl_module, "aux_head", None) is not None:
            set_trainable([pl_module.aux_head], False)  # Inception gives no auxiliary logits in eval mode
        self.ddp_reduces = parallel.trainable_names(pl_module)  # Lightning wraps the model in DDP next

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)  # the phase change, if any
        self.ddp_reduces = parallel.follow_trainable(trainer, self.ddp_reduces)
        # Everything trains but the frozen parts: a block unfrozen by this epoch's phase change leaves
        # eval mode too. Once per epoch is enough: Lightning itself never switches modes during training
        # but around each validation, after which it restores the modes it saw before (these, eval
        # included). Per batch, walking every module cost 5 ms, more than a step on cached features.
        pl_module.train()
        for path in self.inference_mode:
            pl_module.get_submodule(path).eval()

    def add_param_group(
        self, pl_module: L.LightningModule, optimizer: Optimizer, modules: list[nn.Module], lr: float
    ) -> None:
        """Make `modules` trainable and give the optimizer (and its schedulers) those not yet in it."""
        set_trainable(modules, True)
        known = {id(p) for group in optimizer.param_groups for p in group["params"]}
        params = [p for m in modules for p in m.parameters() if id(p) not in known]
        if not params:
            return  # already there: a resumed run restored this group from the checkpoint
        # A schedule that knows its current factor (schedules.WarmupCosine.current_factor) has the group join at it, not at
        # its undecayed rate; the epoch schedulers of torch follow a new group from their next step.
        schedulers = [c.scheduler for c in pl_module.trainer.lr_scheduler_configs if c.scheduler.optimizer is optimizer]
        now = lr * math.prod(s.current_factor() for s in schedulers if hasattr(s, "current_factor"))
        optimizer.add_param_group({"params": params, "lr": now, "initial_lr": lr})
        for scheduler in schedulers:
            scheduler.base_lrs.append(lr)
            internals.append_last_lr(scheduler, now)
        log.info(
            "epoch %d: %d parameters join the optimizer at lr %.2e",
            pl_module.current_epoch,
            sum(p.numel() for p in params),
            lr,
        )


class HeadOnly(FreezePolicy):
    """Fixed feature extractor: only the new head trains; the backbone runs in inference mode."""

    name = "head_only"

    trains_backbone = False

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        set_trainable([pl_module.backbone], False)
        self.inference_mode = ["backbone"]


class FullFinetune(FreezePolicy):
    """Everything trains; the backbone at `backbone_lr_scale` × the head's learning rate."""

    name = "full_finetune"
    freezes_backbone = False

    def __init__(self, backbone_lr_scale: float = 1.0) -> None:
        super().__init__()
        self.backbone_lr_scale = backbone_lr_scale

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        set_trainable([pl_module.backbone], True)
        pl_module.block_lr_scales = [self.backbone_lr_scale] * len(pl_module.backbone.blocks)


class TopBlocks(FreezePolicy):
    """The last `n` blocks train (optionally re-initialised); the rest stays frozen in inference mode."""

    name = "top_blocks"

    def __init__(self, n: int = 2, reinit: bool = False, backbone_lr_scale: float = 1.0) -> None:
        super().__init__()
        if n < 1:
            raise TransferlabError(f"strategy.n={n}: train at least one block (or use strategy=head_only)")
        self.n, self.reinit, self.backbone_lr_scale = n, reinit, backbone_lr_scale

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        blocks = pl_module.backbone.blocks
        if self.n > len(blocks):
            raise TransferlabError(
                f"strategy.n={self.n}, but {pl_module.backbone.name} has only {len(blocks)} blocks "
                f"(use strategy=full_finetune to train them all)"
            )
        frozen, top = blocks[: -self.n], blocks[-self.n :]
        set_trainable(frozen, False)
        set_trainable(top, True)
        if self.reinit:
            reinitialise(top)
        self.inference_mode = block_paths(pl_module, slice(None, -self.n))
        pl_module.block_lr_scales = [self.backbone_lr_scale] * len(blocks)


class TwoPhase(FreezePolicy):
    """The Keras recipe: train the head on a frozen backbone for `head_epochs`, then
    unfreeze the whole backbone at `unfreeze_lr_scale` × lr, its BatchNorm kept in
    inference mode so the pretrained statistics survive the small-data fine-tune."""

    name = "two_phase"

    def __init__(self, head_epochs: int = 1, unfreeze_lr_scale: float = 0.01) -> None:
        super().__init__()
        self.head_epochs, self.unfreeze_lr_scale = head_epochs, unfreeze_lr_scale

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        set_trainable([pl_module.backbone], False)
        self.inference_mode = ["backbone"]

    @property
    def frozen_backbone_epochs(self) -> int:
        return self.head_epochs

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        if epoch >= self.head_epochs:
            lr = pl_module.hparams.optimizer["lr"] * self.unfreeze_lr_scale
            self.add_param_group(pl_module, optimizer, [pl_module.backbone], lr)


class Scratch(FreezePolicy):
    """Random initialisation, everything trains: the baseline that shows what pretraining buys."""

    name = "scratch"
    freezes_backbone = False

    uses_pretrained_weights = False

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        set_trainable([pl_module.backbone], True)


class Discriminative(FreezePolicy):
    """Everything trains; each block's lr is `decay` × the one above it (head at lr, stem lowest)."""

    name = "discriminative"
    freezes_backbone = False

    def __init__(self, decay: float = 0.5) -> None:
        super().__init__()
        if not 0 < decay <= 1:
            raise TransferlabError(f"strategy.decay={decay}: choose 0 < decay ≤ 1")
        self.decay = decay

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        set_trainable([pl_module.backbone], True)
        count = len(pl_module.backbone.blocks)
        pl_module.block_lr_scales = [self.decay ** (count - index) for index in range(count)]


class Gradual(FreezePolicy):
    """ULMFiT-style gradual unfreezing: the head alone first, then one more block from the
    top every `every` epochs, each joining the optimizer at lr × decay^(its depth from the top)."""

    name = "gradual"

    def __init__(self, every: int = 1, decay: float = 0.5) -> None:
        super().__init__()
        if every < 1:
            raise TransferlabError(f"strategy.every={every}: unfreeze a block every 1 or more epochs")
        if not 0 < decay <= 1:
            raise TransferlabError(f"strategy.decay={decay}: choose 0 < decay ≤ 1")
        self.every, self.decay = every, decay

    @property
    def frozen_backbone_epochs(self) -> int:
        return self.every

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        set_trainable([pl_module.backbone], False)
        self.inference_mode = block_paths(pl_module, slice(None))

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        blocks = pl_module.backbone.blocks
        unfrozen = min(epoch // self.every, len(blocks))
        base_lr = pl_module.hparams.optimizer["lr"]
        # Idempotent: a resumed run re-adds nothing and re-freezes nothing.
        for depth in range(1, unfrozen + 1):
            self.add_param_group(pl_module, optimizer, [blocks[-depth]], base_lr * self.decay**depth)
        self.inference_mode = block_paths(pl_module, slice(None, len(blocks) - unfrozen))


class Auto(FreezePolicy):
    """The notes' decision table as a strategy. It measures (a) labelled training images per
    class and (b) how close the data is to the backbone's pretraining: the chance-corrected
    accuracy of a linear probe on one frozen forward pass (`transferability.py`), then:

    |              | similar (b ≥ similar)  | different                 |
    |--------------|------------------------|---------------------------|
    | few images   | head_only              | top_blocks (n = top_n)    |
    | many (a ≥ many_per_class) | full_finetune (backbone lr × 0.1) | full_finetune (same lr) |
    """

    name = "auto"
    decides_from_data = True

    def __init__(self, many_per_class: int = 100, similar: float = 0.7, top_n: int = 2, max_images: int = 2000) -> None:
        super().__init__()
        if max_images < 1:
            raise TransferlabError(
                f"strategy.max_images={max_images}: choose how many training images the linear probe may use (default 2000)"
            )
        self.many_per_class, self.similar, self.top_n, self.max_images = many_per_class, similar, top_n, max_images
        self.chosen: FreezePolicy | None = None
        self.decision: dict[str, float | str] = {}

    @property
    def frozen_backbone_epochs(self) -> int | None:
        # Known once decided: run.train decides before the feature cache, so head_only uses it.
        return self.chosen.frozen_backbone_epochs if self.chosen is not None else 0

    def prepare(self, pl_module: L.LightningModule, datamodule: L.LightningDataModule) -> None:
        if self.chosen is None:
            self.decide(pl_module, datamodule)

    def report(self) -> dict[str, float | str]:
        return self.decision

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        if self.chosen is None:  # decided once; testing re-runs this setup
            self.decide(pl_module, pl_module.trainer.datamodule)
        parallel.check_same_on_every_rank("strategy=auto's choice", self.chosen.name)
        self.chosen.freeze_before_training(pl_module)
        self.inference_mode = self.chosen.inference_mode

    def decide(self, pl_module: L.LightningModule, datamodule: L.LightningDataModule) -> None:
        from transferlab.transferability import linear_probe_score

        labels = datamodule.splits["train"].labels
        per_class = len(labels) / datamodule.num_classes
        check_probe_classes(labels, datamodule.class_names)
        features, probe_labels = self.probe_features(pl_module, datamodule)
        similarity = linear_probe_score(features.numpy(), probe_labels.numpy(), seed=datamodule.seed)
        many, similar = per_class >= self.many_per_class, similarity >= self.similar
        if many:
            self.chosen = FullFinetune(backbone_lr_scale=0.1 if similar else 1.0)
        elif similar:
            self.chosen = HeadOnly()
        else:
            self.chosen = TopBlocks(n=min(self.top_n, len(pl_module.backbone.blocks)))
        counts = np.bincount(probe_labels.numpy(), minlength=datamodule.num_classes)
        self.decision = {
            "auto/images_per_class": round(per_class, 1),
            "auto/probe_images": int(counts.sum()),
            "auto/probe_min_per_class": int(counts.min()),
            "auto/similarity": round(similarity, 4),
            "auto/many_per_class": self.many_per_class,
            "auto/similar": self.similar,
            "auto/choice": self.chosen.name,
        }
        log.info(
            "strategy=auto: linear probe on %d of %d training images (seed %d; per class: %s)",
            counts.sum(),
            len(labels),
            datamodule.seed,
            per_class_text(datamodule.class_names, counts),
        )
        log.info(
            "strategy=auto: %.1f images per class (%s ≥ %d), similarity %.3f (%s ≥ %.2f) → %s",
            per_class,
            "many" if many else "few",
            self.many_per_class,
            similarity,
            "similar" if similar else "different",
            self.similar,
            self.chosen.name,
        )

    def probe_features(
        self, pl_module: L.LightningModule, datamodule: L.LightningDataModule
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen features of a seeded, stratified sample of the training split (its evaluation
        transform), chosen by index: a split stored class by class has every class in it."""
        from transferlab.transferability import frozen_features, probe_sample

        indices = probe_sample(datamodule.splits["train"].labels, self.max_images, datamodule.seed)
        images = Subset(datamodule.image_dataset("train", augment=False), indices.tolist())
        loader = DataLoader(
            images,
            batch_size=datamodule.batch_size,
            num_workers=datamodule.num_workers,
            pin_memory=datamodule.pin_memory,
        )
        pl_module.backbone.eval()
        return frozen_features(pl_module.features, loader, device=pl_module.device)

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        self.chosen.finetune_function(pl_module, epoch, optimizer)


def check_probe_classes(labels: list[int], class_names: list[str]) -> None:
    """The probe tells classes apart by cross-validation: 2 classes, 2 training images of each."""
    counts = np.bincount(labels, minlength=len(class_names))
    if len(class_names) < 2:
        raise TransferlabError(
            "strategy=auto needs at least 2 classes to measure similarity (choose another strategy=)"
        )
    if counts.min() < 2:
        name = class_names[int(counts.argmin())]
        raise TransferlabError(
            f"strategy=auto: class {name!r} has {counts.min()} training image(s); its linear probe needs at least 2 "
            f"of every class (add images, or choose strategy=head_only, top_blocks or full_finetune)"
        )


def per_class_text(class_names: list[str], counts: np.ndarray, listed: int = 10) -> str:
    """'ants 120, bees 121', or a range for many classes (the log stays one line)."""
    if len(class_names) <= listed:
        return ", ".join(f"{name} {count}" for name, count in zip(class_names, counts))
    return f"{counts.min()}–{counts.max()} in each of {len(class_names)} classes"
