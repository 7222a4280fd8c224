"""fastai's `Learner.fine_tune` as a freeze policy (strategy=fastai_fine_tune, recipe=fastai_fine_tune).

fastai (callback/schedule.py, `fine_tune`): freeze the body, `fit_one_cycle(freeze_epochs,
base_lr, pct_start=0.99)`; then halve base_lr, unfreeze, and `fit_one_cycle(epochs,
slice(base_lr / lr_mult, base_lr), pct_start, div)`. Each phase has its own one-cycle
schedule: the learning rate rises (cosine) from peak / div to its peak over the first
pct_start of the phase's steps, then falls (cosine) to peak / div_final; Adam's β1 moves the
other way, 0.95 → 0.85 → 0.95. After unfreezing, the rates spread geometrically from the stem
(base_lr / lr_mult) to the head (base_lr), as fastai's `slice` does over its layer groups.

The schedule is a function of (epoch, batch) alone, set before every training batch, so a
resumed run continues it exactly; no `scheduler=` is used (the recipe sets scheduler=none).

Our own rather than torch's OneCycleLR: that runs one cycle over a fixed set of groups, while
fine_tune runs two, the second over the groups that join at the unfreezing.

One difference from fastai, on purpose: while frozen, the body's BatchNorm stays in inference
mode with its pretrained statistics (as every transferlab policy), where fastai trains it.
"""

from __future__ import annotations

import math

import lightning as L
from torch.optim import Optimizer

from transferlab.errors import TransferlabError
from transferlab.strategies.base import FreezePolicy, set_trainable


def one_cycle(progress: float, pct_start: float, div: float, div_final: float) -> tuple[float, float]:
    """(learning-rate factor of the peak, β1) at `progress` ∈ [0, 1] of a phase (fastai's combined cosines)."""

    def cosine(start: float, end: float, fraction: float) -> float:
        return end + (start - end) / 2 * (1 + math.cos(math.pi * fraction))

    if progress < pct_start:
        fraction = progress / pct_start
        return cosine(1 / div, 1.0, fraction), cosine(0.95, 0.85, fraction)
    fraction = (progress - pct_start) / (1 - pct_start) if pct_start < 1 else 1.0
    return cosine(1.0, 1 / div_final, fraction), cosine(0.85, 0.95, fraction)


class FastaiFineTune(FreezePolicy):
    """The head alone for `freeze_epochs` (one-cycle to the base lr), then everything (one-cycle to
    base lr / 2, the stem at that / lr_mult) for the remaining epochs of trainer.max_epochs."""

    name = "fastai_fine_tune"
    owns_schedule = True

    def __init__(
        self,
        freeze_epochs: int = 1,
        lr_mult: float = 100.0,
        pct_start: float = 0.3,
        div: float = 5.0,
        div_final: float = 1e5,
    ) -> None:
        super().__init__()
        if freeze_epochs < 1:
            raise TransferlabError(f"strategy.freeze_epochs={freeze_epochs}: fine_tune trains the head alone first")
        self.freeze_epochs, self.lr_mult, self.pct_start = freeze_epochs, lr_mult, pct_start
        self.div, self.div_final = div, div_final

    @property
    def frozen_backbone_epochs(self) -> int:
        return self.freeze_epochs

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        set_trainable([pl_module.backbone], False)
        self.inference_mode = ["backbone"]

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        if epoch < self.freeze_epochs:
            return
        blocks = pl_module.backbone.blocks
        peak = pl_module.hparams.optimizer["lr"] / 2  # fastai halves base_lr for the unfrozen phase
        # Idempotent, like every phase change: a resumed run re-adds nothing (its groups come back with the optimizer).
        for index, block in enumerate(blocks):
            spread = index / max(len(blocks) - 1, 1)  # 0 at the stem, 1 at the top block
            self.add_param_group(pl_module, optimizer, [block], peak / self.lr_mult ** (1 - spread))
        self.inference_mode = []  # everything trains, BatchNorm statistics included (as fastai's unfreeze)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        """Every group's learning rate (and Adam's β1) at this step of its phase's one-cycle schedule."""
        frozen = trainer.current_epoch < self.freeze_epochs
        first, epochs = (
            (0, self.freeze_epochs) if frozen else (self.freeze_epochs, trainer.max_epochs - self.freeze_epochs)
        )
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
