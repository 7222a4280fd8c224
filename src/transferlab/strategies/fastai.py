"""fastai's `Learner.fine_tune` as a freeze policy (strategy=fastai_fine_tune, recipe=fastai_fine_tune).

fastai (callback/schedule.py, `fine_tune`): freeze the body, `fit_one_cycle(freeze_epochs,
slice(base_lr), pct_start=0.99)`; then halve base_lr, unfreeze, and `fit_one_cycle(epochs,
slice(base_lr / lr_mult, base_lr), pct_start, div)`. Each phase has its own one-cycle
schedule: the learning rate rises (cosine) from peak / div to its peak over the first
pct_start of the phase's steps, then falls (cosine) to peak / div_final; Adam's β1 moves the
other way, 0.95 → 0.85 → 0.95. After unfreezing, the rates spread geometrically from the stem
(base_lr / lr_mult) to the head (base_lr), as fastai's `slice` does over its layer groups.

The schedule is a function of (epoch, batch) alone, set before every training batch, so a
resumed run continues it exactly; no `scheduler=` is used (the recipe sets scheduler=none).

Our own rather than torch's OneCycleLR: that runs one cycle over a fixed set of groups, while
fine_tune runs two, the second over the groups that join at the unfreezing.

While frozen, the body's norm layers train as fastai's do (`train_bn`, its default; BatchNorm, and
LayerNorm and InstanceNorm as fastai's norm_types): their weights at a tenth of the head's rate (fastai's
`slice(base_lr)` gives the body's groups base_lr / 10) without weight decay, BatchNorm's statistics
following the new images. As fastai's `wd_bn_bias=False`, the head's norm weights and biases get no
weight decay either (the body's biases, which join at the unfreezing, still do). train_bn=false
holds it in inference mode, as every other transferlab policy does (in fastai, on the photos set, it
changed nothing in the frozen epoch; what lets that epoch learn is fastai's head with its concat
pooling, recipe=fastai_fine_tune's head.pool=avgmax: docs/recipes.md).
"""

from __future__ import annotations

import logging
import math

import lightning as L
from torch import nn
from torch.optim import Optimizer

from transferlab.options import check
from transferlab.strategies.base import FreezePolicy, set_trainable

log = logging.getLogger(__name__)


def one_cycle(progress: float, pct_start: float, div: float, div_final: float) -> tuple[float, float]:
    """(learning-rate factor of the peak, β1) at `progress` ∈ [0, 1] of a phase (fastai's combined cosines)."""

    def cosine(start: float, end: float, fraction: float) -> float:
        return end + (start - end) / 2 * (1 + math.cos(math.pi * fraction))

    if progress < pct_start:
        fraction = progress / pct_start
        return cosine(1 / div, 1.0, fraction), cosine(0.95, 0.85, fraction)
    fraction = (progress - pct_start) / (1 - pct_start) if pct_start < 1 else 1.0
    return cosine(1.0, 1 / div_final, fraction), cosine(0.85, 0.95, fraction)


# fastai's norm_types (and SyncBatchNorm, which sync_batchnorm swaps in): the layers whose weights
# train_bn trains and wd_bn_bias=False spares. timm's BatchNormAct2d and LayerNorm2d are subclasses.
NORM_TYPES = (
    *(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm),
    *(nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm),
)


def norm_layers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, NORM_TYPES)]


def norm_and_bias_params(module: nn.Module) -> list[nn.Parameter]:
    """fastai's `norm_bias_params(with_bias=True)`: every normalisation layer's weights, and every bias."""
    params = []
    for layer in module.modules():
        own = list(layer.parameters(recurse=False))
        params += own if isinstance(layer, NORM_TYPES) else [p for p in own if p is getattr(layer, "bias", None)]
    return params


class FastaiFineTune(FreezePolicy):
    """The head (and the body's BatchNorm) for `freeze_epochs` (one-cycle to the base lr), then everything
    (one-cycle to base lr / 2, the stem at that / lr_mult) for `epochs` more: fastai's fine_tune(epochs).
    trainer.max_epochs is freeze_epochs + epochs (the config sets it; run/checks.py refuses another)."""

    name = "fastai_fine_tune"
    owns_schedule = True

    def __init__(
        self,
        epochs: int = 9,
        freeze_epochs: int = 1,
        lr_mult: float = 100.0,
        pct_start: float = 0.3,
        div: float = 5.0,
        div_final: float = 1e5,
        train_bn: bool = True,
        wd_bn_bias: bool = False,
    ) -> None:
        """fastai's fine_tune as conf/strategy/fastai_fine_tune.yaml sets it (a run saved before epochs,
        train_bn and wd_bn_bias existed resumes with what it trained: options.AS_SAVED_BEFORE)."""
        super().__init__()
        self.epochs, self.freeze_epochs = (
            check("strategy.epochs", epochs),
            check("strategy.freeze_epochs", freeze_epochs),
        )
        self.lr_mult, self.pct_start = check("strategy.lr_mult", lr_mult), check("strategy.pct_start", pct_start)
        self.div, self.div_final = check("strategy.div", div), check("strategy.div_final", div_final)
        self.train_bn, self.wd_bn_bias = check("strategy.train_bn", train_bn), check("strategy.wd_bn_bias", wd_bn_bias)

    @property
    def frozen_backbone_epochs(self) -> int:
        # A body whose BatchNorm trains changes while frozen: its features cannot be computed once.
        return 0 if self.train_bn else self.freeze_epochs

    def epoch_plan(self) -> str:
        """How the run's epochs divide, for its first line."""
        return f"fastai's fine_tune({self.epochs}): {self.freeze_epochs} frozen + {self.epochs}"

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        set_trainable([pl_module.backbone], False)
        if self.train_bn:
            set_trainable(norm_layers(pl_module.backbone), True)
        # Train mode throughout with train_bn (as fastai's model): only its norm layers learn in the frozen body.
        self.inference_mode = [] if self.train_bn else ["backbone"]

    def param_groups(self, module: nn.Module, base_lr: float) -> list[dict]:
        """The head at base_lr (its norm weights and biases without weight decay unless wd_bn_bias); with
        train_bn each block's norm layers at base_lr / 10, without weight decay. `initial_lr` is a group's
        share of its phase's peak (read at every step); `block` says whose it is."""
        head, *_ = super().param_groups(module, base_lr)
        groups = [head]
        if not self.wd_bn_bias:
            spared = {id(p) for p in norm_and_bias_params(module)}
            no_decay = [p for p in head["params"] if id(p) in spared]
            head["params"] = [p for p in head["params"] if id(p) not in spared]
            if no_decay:
                groups.append({"params": no_decay, "lr": base_lr, "weight_decay": 0.0})
        for index, block in enumerate(module.backbone.blocks):
            params = [p for p in block.parameters() if p.requires_grad]
            if params:
                groups.append(
                    {
                        "params": params,
                        "lr": base_lr / 10,
                        "initial_lr": base_lr / 10,
                        "weight_decay": 0.0,
                        "block": index,
                    }
                )
        return groups

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        if epoch < self.freeze_epochs:
            return
        blocks = pl_module.backbone.blocks
        peak = pl_module.hparams.optimizer["lr"] / 2  # fastai halves base_lr for the unfrozen phase
        rates = [peak / self.lr_mult ** (1 - index / max(len(blocks) - 1, 1)) for index in range(len(blocks))]
        # Idempotent, like every phase change: a resumed run re-adds nothing (its groups come back with the optimizer).
        joined = sum(self.add_param_group(pl_module, optimizer, [b], r, announce=False) for b, r in zip(blocks, rates))
        if joined:
            log.info(
                "epoch %d: the body's %d blocks join the optimizer, %d parameters at lr %.2e (stem) to %.2e (top)",
                pl_module.current_epoch, len(blocks), joined, rates[0], rates[-1],
            )  # fmt: skip
        for group in optimizer.param_groups:
            if "block" in group:  # a block's BatchNorm, trained while frozen, now moves at its block's rate
                group["initial_lr"] = rates[group["block"]]
        self.inference_mode = []  # everything trains, BatchNorm statistics included (as fastai's unfreeze)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        """Every group's learning rate (and Adam's β1) at this step of its phase's one-cycle schedule."""
        frozen = trainer.current_epoch < self.freeze_epochs
        unfrozen = self.epochs if self.epochs is not None else trainer.max_epochs - self.freeze_epochs
        first, epochs = (0, self.freeze_epochs) if frozen else (self.freeze_epochs, unfrozen)
        steps = max(epochs * trainer.num_training_batches, 1)
        progress = min(((trainer.current_epoch - first) * trainer.num_training_batches + batch_idx) / steps, 1.0)
        # fastai's fit_one_cycle defaults for the frozen phase (pct_start 0.99, div 25); fine_tune's after it.
        pct_start, div = (0.99, 25.0) if frozen else (self.pct_start, self.div)
        factor, beta1 = one_cycle(progress, pct_start, div, self.div_final)
        peak = pl_module.hparams.optimizer["lr"] / (1 if frozen else 2)
        for group in trainer.optimizers[0].param_groups:
            # A block's share of the phase's peak is the rate it joined at (add_param_group keeps it as
            # initial_lr, and a resumed optimizer restores it); the head, there from the start, has the peak.
            share = group["initial_lr"] / peak if "initial_lr" in group else 1.0
            group["lr"] = peak * share * factor
            if "betas" in group:
                group["betas"] = (beta1, group["betas"][1])
