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
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn
from torch.optim import Optimizer

from transferlab import internals
from transferlab.classifier.module import block_param_groups
from transferlab.distributed import ranks

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
        its features can be computed once for those epochs (caches/features.py)."""
        return None if not self.trains_backbone else 0

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        """No phase change by default."""

    def lr_scales(self, blocks: int) -> list[float]:
        """Each backbone block's learning rate as a share of the head's, stem first (all 1 by default)."""
        return [1.0] * blocks

    def param_groups(self, module: nn.Module, base_lr: float) -> list[dict]:
        """The optimizer's parameter groups when training starts (what the classifier builds its optimizer
        from, as timm's `param_groups_layer_decay`): the trainable parameters only, one group per block."""
        return block_param_groups(module, base_lr, self.lr_scales(len(module.backbone.blocks)))

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        ranks.check_same_on_every_rank("strategy", self.name)  # every rank trains the same way (auto decides per rank)
        super().setup(trainer, pl_module, stage)  # freeze_before_training
        if "backbone" in self.inference_mode and getattr(pl_module, "aux_head", None) is not None:
            set_trainable([pl_module.aux_head], False)  # Inception gives no auxiliary logits in eval mode
        self.ddp_reduces = ranks.trainable_names(pl_module)  # Lightning wraps the model in DDP next

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)  # the phase change, if any
        self.ddp_reduces = ranks.follow_trainable(trainer, self.ddp_reduces)
        # Everything trains but the frozen parts: a block unfrozen by this epoch's phase change leaves
        # eval mode too. Once per epoch is enough: Lightning itself never switches modes during training
        # but around each validation, after which it restores the modes it saw before (these, eval
        # included). Per batch, walking every module cost 5 ms, more than a step on cached features.
        pl_module.train()
        for path in self.inference_mode:
            pl_module.get_submodule(path).eval()

    def add_param_group(
        self,
        pl_module: L.LightningModule,
        optimizer: Optimizer,
        modules: list[nn.Module],
        lr: float,
        announce: bool = True,
    ) -> int:
        """Make `modules` trainable and give the optimizer (and its schedulers) those not yet in it; returns
        how many parameters joined. `announce=False`: the caller says it in one line for several groups."""
        set_trainable(modules, True)
        known = {id(p) for group in optimizer.param_groups for p in group["params"]}
        params = [p for m in modules for p in m.parameters() if id(p) not in known]
        if not params:
            return 0  # already there: a resumed run restored this group from the checkpoint
        # A schedule that knows its current factor (schedules.WarmupCosine.current_factor) has the group join at it, not at
        # its undecayed rate; the epoch schedulers of torch follow a new group from their next step.
        schedulers = [c.scheduler for c in pl_module.trainer.lr_scheduler_configs if c.scheduler.optimizer is optimizer]
        now = lr * math.prod(s.current_factor() for s in schedulers if hasattr(s, "current_factor"))
        optimizer.add_param_group({"params": params, "lr": now, "initial_lr": lr})
        for scheduler in schedulers:
            scheduler.base_lrs.append(lr)
            internals.append_last_lr(scheduler, now)
        joined = sum(p.numel() for p in params)
        if announce:
            log.info("epoch %d: %d parameters join the optimizer at lr %.2e", pl_module.current_epoch, joined, lr)
        return joined
