"""Learning-rate schedules stepped every optimizer step (scheduler=warmup_cosine).

Why per step: the small sets of this framework have 8–17 optimizer steps an epoch, so a warm-up
counted in whole epochs would hold the first epoch at one low rate and then jump. Here the rate
rises linearly to its peak over `warmup_epochs` worth of steps, then falls along a cosine to
`min_lr_ratio` × the peak at the end of trainer.max_epochs (timm's and Hugging Face's usual
fine-tuning schedule). A fresh head on a pretrained backbone sends large gradients into it in its
first steps; the warm-up keeps those steps small (whether that buys a larger peak rate depends on
the data: see docs/recipes.md).

The factor is a function of the step count alone (`last_epoch`, restored from a checkpoint), so a
resumed run continues the schedule exactly. Groups that join later (gradual, two_phase) append
their rate to `base_lrs` and join at the current factor (strategies/base.py's add_param_group).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from hydra.utils import instantiate
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from transferlab.errors import TransferlabError
from transferlab.options import check


def warmup_cosine_factor(step: int, total_steps: int, warmup_steps: int, min_lr_ratio: float) -> float:
    """The share of the peak rate at optimizer step `step` (0-based) of `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps  # the first step already moves: (1 / warmup) of the peak
    progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class WarmupCosine(LRScheduler):
    """Linear warm-up over `warmup_epochs`, then a cosine to `min_lr_ratio` × the peak at `total_steps`.

    Our own rather than torch's SequentialLR(LinearLR, CosineAnnealingLR), which gives the same rates
    for fixed groups: its factor is a closed form of the step count, so a group that joins mid-run
    starts at it (`current_factor`), which torch's chained schedulers, each step computed from the last
    group rates, cannot tell a new group."""

    per_step = True  # configure_optimizers passes total_steps and steps_per_epoch, and steps it every batch

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        steps_per_epoch: int,
        warmup_epochs: float = 1.0,
        min_lr_ratio: float = 0.0,
    ) -> None:
        check("scheduler.warmup_epochs", warmup_epochs), check("scheduler.min_lr_ratio", min_lr_ratio)
        self.total_steps = total_steps
        self.warmup_steps = round(warmup_epochs * steps_per_epoch)
        self.min_lr_ratio = min_lr_ratio
        super().__init__(optimizer)

    def current_factor(self) -> float:  # not `factor`: torch's ConstantLR and ReduceLROnPlateau have a float one
        return warmup_cosine_factor(self.last_epoch, self.total_steps, self.warmup_steps, self.min_lr_ratio)

    def get_lr(self) -> list[float]:
        factor = self.current_factor()  # once per step, for every group
        return [base_lr * factor for base_lr in self.base_lrs]


def build_scheduler(
    config: dict, optimizer: Optimizer, budget: Callable[[], tuple[float, int]]
) -> tuple[LRScheduler, str]:
    """The `scheduler:` config built on `optimizer`, and the interval Lightning steps it at ("epoch" or
    "step"). Only a per-step schedule asks for `budget()`: (the run's optimizer steps, steps an epoch)."""
    for key in ("total_steps", "steps_per_epoch"):
        if key in config:
            raise TransferlabError(f"scheduler.{key}: the run sets it from its own step budget; remove it")
    factory: Any = instantiate(config)
    if not getattr(factory.func, "per_step", False):
        return factory(optimizer), "epoch"
    total_steps, steps_per_epoch = budget()
    if not math.isfinite(total_steps):
        raise TransferlabError(
            "scheduler: a per-step schedule needs a step budget; set trainer.max_epochs (or trainer.max_steps)"
        )
    return factory(optimizer, total_steps=int(total_steps), steps_per_epoch=max(steps_per_epoch, 1)), "step"
