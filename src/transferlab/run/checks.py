"""The config, checked before anything is built: a wrong type, an out-of-range value or an unknown
key is one line naming the key, the value and what is allowed (never a traceback from deep inside
torch or a model).

Three kinds of check, each owned here:

* `RULES`: the keys transferlab itself reads (data, head, feature cache, trainer basics, ...),
  with their type and range.
* The `_target_` sections (strategy, data, optimizer, scheduler): each key must be an argument of
  the class the section builds, of the type its signature declares.
* The optimizer and the scheduler are built once on a stand-in parameter, so that torch's own
  checks (a negative learning rate, a momentum above 1, ...) speak before training starts.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from transferlab.classifier.schedules import build_scheduler
from transferlab.errors import TransferlabError, did_you_mean


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
        if not _is_a(value, self.kind):
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


def fraction(open_low: bool = False, open_high: bool = False, optional: bool = False) -> Rule:
    return Rule(float, 0, 1, optional=optional, open_low=open_low, open_high=open_high)


RULES: dict[str, Rule] = {
    "seed": Rule(int),
    "verbose": Rule(bool),
    "monitor": Rule(str, also=("val/acc", "val/balanced_acc", "val/macro_f1")),
    "loss.class_weight": Rule(str, optional=True, also=("balanced",)),
    "data.sampler": Rule(str, optional=True, also=("balanced",)),
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
    "strategy.n": Rule(int, 1),
    "strategy.reinit": Rule(bool),
    "strategy.backbone_lr_scale": Rule(float, 0),
    "strategy.unfreeze_lr_scale": Rule(float, 0),
    "strategy.head_epochs": Rule(int, 0),
    "strategy.every": Rule(int, 1),
    "strategy.decay": fraction(open_low=True),
    "strategy.many_per_class": Rule(int, 1),
    "strategy.similar": Rule(float, -1, 1),
    "strategy.top_n": Rule(int, 1),
    "strategy.max_images": Rule(int, 1),
}

# Sections built from `_target_`: their keys are checked against the class's signature.
TARGET_SECTIONS = ("strategy", "data", "optimizer", "scheduler")


def check_config(cfg: DictConfig) -> None:
    """Raise TransferlabError (one line) for the first value the run could not use."""
    for key, rule in RULES.items():
        found, value = _lookup(cfg, key)
        if found and not rule.allows(value):
            advice = f"{rule.advice}; " if rule.advice else ""
            raise TransferlabError(f"{key}={_shown(value)}: {advice}expected {rule.describe()}")
    for section in TARGET_SECTIONS:
        node = cfg.get(section)
        if isinstance(node, DictConfig) and "_target_" in node:
            check_arguments(section, node)
    check_epoch_count(cfg)
    check_run_length(cfg)
    check_optimizer(cfg)


def check_run_length(cfg: DictConfig) -> None:
    """trainer.max_epochs=-1 (Lightning's "no limit") with a schedule that is a function of the run's
    length: CosineAnnealingLR with T_max=-1 swings the rate between its peak and 0 every epoch."""
    trainer = cfg.get("trainer") or {}
    epochs, steps = trainer.get("max_epochs"), trainer.get("max_steps", -1)
    if epochs not in (-1, None):
        return
    scheduler, strategy = cfg.get("scheduler"), cfg.get("strategy")
    needs_length = []
    if isinstance(scheduler, DictConfig) and "_target_" in scheduler:
        target = _target("scheduler", scheduler)
        if "T_max" in scheduler or getattr(target, "per_step", False):
            needs_length.append(f"the {target.__name__} schedule")
    if isinstance(strategy, DictConfig) and "_target_" in strategy:
        policy = _target("strategy", strategy)
        if getattr(policy, "owns_schedule", False):
            needs_length.append(f"strategy={policy.name}'s schedule")
    if needs_length and (steps in (-1, None) or "T_max" in (scheduler or {})):
        raise TransferlabError(
            f"trainer.max_epochs={_shown(epochs)}: {' and '.join(needs_length)} spreads over the run's epochs, "
            "so the run needs a length; set trainer.max_epochs to 1 or more (or scheduler=none or step to train "
            "until early stopping ends it)"
        )


def check_epoch_count(cfg: DictConfig) -> None:
    """A strategy that counts its epochs as its anchor does (fastai_fine_tune: `epochs` after `freeze_epochs`,
    fastai's fine_tune(epochs)) sets trainer.max_epochs itself; another value there would change the recipe."""
    strategy, trainer = cfg.get("strategy"), cfg.get("trainer") or {}
    if not (isinstance(strategy, DictConfig) and "epochs" in strategy and "freeze_epochs" in strategy):
        return
    name = getattr(_target("strategy", strategy), "name", "this strategy")
    total, epochs = strategy.freeze_epochs + strategy.epochs, trainer.get("max_epochs")
    if epochs != total:
        raise TransferlabError(
            f"trainer.max_epochs={_shown(epochs)}: strategy={name} counts epochs as fastai's fine_tune(N) does, "
            f"{strategy.freeze_epochs} frozen + N: set strategy.epochs=N instead (now {strategy.epochs}, so {total} "
            "epochs in all), and trainer.max_epochs follows"
        )


def check_arguments(section: str, node: DictConfig) -> None:
    """Every key of a `_target_` section is an argument of its class, of the type the class declares."""
    target = _target(section, node)
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return  # a builtin without a signature: nothing to check against
    parameters = signature.parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    hints = _type_hints(target)
    values = OmegaConf.to_container(node, resolve=True)
    for key, value in values.items():
        if key.startswith("_"):
            continue
        if key not in parameters and not takes_any:
            accepted = [
                name
                for name, p in parameters.items()
                if name not in ("self", "params", "optimizer", "data_config")
                and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            ]
            raise TransferlabError(
                f"{section}.{key}: {target.__name__} takes no option {key!r}"
                f"{did_you_mean(key, accepted, f'{section}.')}; it takes {', '.join(accepted) or 'none'}"
            )
        hint = hints.get(key)
        if hint is not None and not _matches(value, hint):
            raise TransferlabError(f"{section}.{key}={_shown(value)}: expected {_hint_text(hint)}")


def check_optimizer(cfg: DictConfig) -> None:
    """Build the optimizer (and scheduler) on a stand-in parameter: torch checks its own arguments."""
    stand_in = [torch.nn.Parameter(torch.zeros(1))]
    try:
        optimizer = instantiate(cfg.optimizer)(stand_in)
    except Exception as error:  # noqa: BLE001 - torch raises ValueError, TypeError, RuntimeError
        raise TransferlabError(f"optimizer ({cfg.optimizer._target_}): {_reason(error)}") from None
    if cfg.get("scheduler"):
        try:
            build_scheduler(cfg.scheduler, optimizer, budget=lambda: (1, 1))  # a stand-in step budget
        except Exception as error:  # noqa: BLE001
            raise TransferlabError(f"scheduler ({cfg.scheduler._target_}): {_reason(error)}") from None


def _lookup(cfg: DictConfig, key: str) -> tuple[bool, Any]:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return False, None
        node = node[part]
    return True, OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _target(section: str, node: DictConfig) -> Callable:
    try:
        return get_object(node._target_)
    except Exception:  # noqa: BLE001 - ImportError, AttributeError, Hydra's own
        raise TransferlabError(f"{section}._target_={node._target_}: no such class can be imported") from None


def _type_hints(target: Callable) -> dict[str, Any]:
    try:
        return typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:  # noqa: BLE001 - forward references a library does not resolve: no types to check
        return {}


def _is_a(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _matches(value: Any, hint: Any) -> bool:
    """Whether a config value fits a type hint; hints this cannot judge (classes, tensors) accept anything."""
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, argument) for argument in arguments)
    if hint is type(None):
        return value is None
    if origin is typing.Literal:
        return value in arguments
    if hint in (bool, int, float, str):
        return _is_a(value, hint)
    container = origin or hint
    if inspect.isclass(container) and issubclass(container, (list, tuple, Sequence)) and container is not str:
        return isinstance(value, (list, tuple))
    if inspect.isclass(container) and issubclass(container, (dict, Mapping)):
        return isinstance(value, dict)
    return True


def _hint_text(hint: Any) -> str:
    text = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    arguments = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return " or ".join(dict.fromkeys(text.get(a, getattr(a, "__name__", str(a))) for a in arguments))


def _shown(value: Any) -> str:
    return "null" if value is None else repr(value) if isinstance(value, str) else str(value)


def _reason(error: Exception) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0]
