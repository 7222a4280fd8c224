"""Every option's rule, stated once, and the version of what a config means.

- `RULES`: each key transferlab reads (by its config path) with its type and range. The config check
  (run/checks.py) applies the table to a composed config before anything is built or imported, and the
  constructors that take these options (the strategies, the schedule, the datamodule, the head's
  pooling) apply the same rule through `check`: one rule, one message, whichever meets the value first.
- Defaults live in the YAML of conf/ and in the constructors' signatures, and the two are equal
  (tests/test_configs.py compares every option of every group with its class).
- `SCHEMA_VERSION`: part of every sweep digest (run/sweeps.py) and feature-cache key (caches/features.py).
  Adding an option needs nothing here: its key changes every digest and key anyway. Bump the version
  when the same config comes to train differently (a default's behaviour, a bug fixed in what an option
  does), so that no finished sweep job and no cached feature made before is taken for one made after.

Pure Python, no torch: `python src/train.py optimizer.lr=-1` answers before torch or Lightning loads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from transferlab.errors import TransferlabError

SCHEMA_VERSION = 2  # 1: the digests and feature-cache keys before this table (run/sweeps.py reads them)

# Options that came with a default training otherwise than the config before them: what a config saved
# without them (resume= of a run started by an earlier version) trained with, by the class its section
# builds. An option added at a default that trains as before needs no entry.
AS_SAVED_BEFORE: dict[str, dict[str, Any]] = {
    # fastai_fine_tune before fastai's train_bn and wd_bn_bias; its `epochs` (then absent: the rest of
    # trainer.max_epochs after the frozen ones) is filled in by `saved_before` below.
    "transferlab.strategies.fastai.FastaiFineTune": {"train_bn": False, "wd_bn_bias": True},
}


def saved_before(section: dict, max_epochs: int | None = None) -> dict:
    """A `_target_` section of a saved config with the options it lacks set as AS_SAVED_BEFORE says."""
    filled = {**AS_SAVED_BEFORE.get(section.get("_target_", ""), {}), **section}
    if filled.get("_target_", "").endswith("FastaiFineTune") and "epochs" not in filled and max_epochs:
        filled["epochs"] = max_epochs - filled.get("freeze_epochs", 1)
    return filled


@dataclass(frozen=True)
class Rule:
    """A value of `kind` within [low, high] (`open_low`/`open_high`: excluding the bound); None if `optional`."""

    kind: type
    low: float = -math.inf
    high: float = math.inf
    optional: bool = False
    open_low: bool = False
    open_high: bool = False
    also: tuple = ()  # values allowed besides the range (trainer.max_epochs=-1); for a str: the only ones
    advice: str = ""  # why the range, when it is not obvious

    def allows(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if value in self.also and type(value) is type(self.also[0]):
            return True
        if not is_a(value, self.kind):
            return False
        if self.kind is str and self.also:
            return value in self.also
        if self.kind in (int, float):
            above = value > self.low if self.open_low else value >= self.low
            below = value < self.high if self.open_high else value <= self.high
            return math.isfinite(value) and above and below
        return True

    def describe(self) -> str:
        if self.kind is str and self.also:
            return "one of " + ", ".join(map(str, self.also)) + (" (or null)" if self.optional else "")
        text = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[self.kind]
        if self.kind in (int, float):
            lower = f"> {self.low:g}" if self.open_low else f"≥ {self.low:g}"
            upper = f"< {self.high:g}" if self.open_high else f"≤ {self.high:g}"
            bounds = [
                b for b, finite in ((lower, math.isfinite(self.low)), (upper, math.isfinite(self.high))) if finite
            ]
            text += f" {' and '.join(bounds)}" if bounds else ""
        extras = [*(str(v) for v in self.also), *(["null"] if self.optional else [])]
        return text + (f" (or {', '.join(extras)})" if extras else "")

    def refusal(self, key: str, value: Any) -> str:
        advice = f"{self.advice}; " if self.advice and is_a(value, self.kind) else ""  # why the range
        return f"{key}={shown(value)}: {advice}expected {self.describe()}"


def fraction(open_low: bool = False, open_high: bool = False, optional: bool = False) -> Rule:
    return Rule(float, 0, 1, optional=optional, open_low=open_low, open_high=open_high)


RULES: dict[str, Rule] = {
    "seed": Rule(int),
    "verbose": Rule(bool),
    "monitor": Rule(str, also=("val/acc", "val/balanced_acc", "val/macro_f1")),
    "loss.class_weight": Rule(str, optional=True, also=("balanced",)),
    "channels_last": Rule(bool),
    "gpu_per_job": Rule(bool),
    "head.dropout": fraction(open_high=True),
    "head.hidden": Rule(int, 1, optional=True),
    "head.pool": Rule(str, also=("avg", "avgmax")),
    "head.init": Rule(str, also=("torch", "glorot")),
    "feature_cache.enabled": Rule(bool),
    "feature_cache.views": Rule(int, 1),
    "feature_cache.dir": Rule(str, optional=True),
    "compile.enabled": Rule(bool),
    "tune.lr_find": Rule(bool),
    "tune.min_lr": Rule(float, 0, open_low=True),
    "tune.max_lr": Rule(float, 0, open_low=True),
    "tune.num_training": Rule(int, 2),
    "model.name": Rule(str),
    "model.pretrained": Rule(bool),
    "model.weights": Rule(str, optional=True),
    "model.aux_weight": Rule(float, 0),
    "data.image_size": Rule(int, 1, optional=True),
    "data.crop_pct": fraction(open_low=True, optional=True),
    "data.batch_size": Rule(int, 1),
    "data.num_workers": Rule(int, 0, optional=True),
    "data.seed": Rule(int),
    "data.sampler": Rule(str, optional=True, also=("balanced",)),
    "data.decode_cache": Rule(str, optional=True, also=("memory", "disk")),
    "data.subset.train": Rule(int, 1, optional=True),
    "data.subset.val": Rule(int, 1, optional=True),
    "data.subset.test": Rule(int, 1, optional=True),
    "data.augment.enabled": Rule(bool),
    "data.augment.scale_min": fraction(open_low=True),
    "data.augment.hflip": fraction(),
    "data.augment.rotation": Rule(float, 0, 180),
    "data.augment.rotation_fill": Rule(str, also=("black", "reflect")),
    "optimizer.lr": Rule(float, 0, open_low=True),
    "optimizer.weight_decay": Rule(float, 0),
    "optimizer.momentum": fraction(),
    "scheduler.warmup_epochs": Rule(float, 0, advice="0 is no warm-up"),
    "scheduler.min_lr_ratio": fraction(),
    # Before trainer.max_epochs, which fastai_fine_tune computes from them.
    "strategy.epochs": Rule(int, 1),
    "strategy.freeze_epochs": Rule(int, 1, advice="fine_tune trains the head alone first"),
    # -1: Lightning's "until max_steps".
    "trainer.max_epochs": Rule(
        int,
        1,
        optional=True,
        also=(-1,),
        advice="train at least one epoch (a run without one has no validation score and no checkpoint to test)",
    ),
    "trainer.log_every_n_steps": Rule(int, 1),
    "trainer.num_nodes": Rule(int, 1),
    "trainer.accumulate_grad_batches": Rule(int, 1),
    "strategy.n": Rule(int, 1, advice="train at least one block (or use strategy=head_only)"),
    "strategy.reinit": Rule(bool),
    "strategy.backbone_lr_scale": Rule(float, 0),
    "strategy.unfreeze_lr_scale": Rule(float, 0),
    "strategy.head_epochs": Rule(int, 0),
    "strategy.every": Rule(int, 1, advice="unfreeze a block every 1 or more epochs"),
    "strategy.decay": fraction(open_low=True),
    "strategy.lr_mult": Rule(float, 0, open_low=True),
    "strategy.pct_start": fraction(open_low=True, open_high=True),
    "strategy.div": Rule(float, 0, open_low=True),
    "strategy.div_final": Rule(float, 0, open_low=True),
    "strategy.train_bn": Rule(bool),
    "strategy.wd_bn_bias": Rule(bool),
    "strategy.many_per_class": Rule(int, 1),
    "strategy.similar": Rule(float, -1, 1),
    "strategy.top_n": Rule(int, 1),
    "strategy.max_images": Rule(
        int, 1, advice="choose how many training images the linear probe may use (default 2000)"
    ),
}


def check(key: str, value: Any) -> Any:
    """`value` if RULES[key] allows it, else a TransferlabError naming the key (for constructors)."""
    rule = RULES[key]
    if not rule.allows(value):
        raise TransferlabError(rule.refusal(key, value))
    return value


def is_a(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def shown(value: Any) -> str:
    return "null" if value is None else repr(value) if isinstance(value, str) else str(value)
