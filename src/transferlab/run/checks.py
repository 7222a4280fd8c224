"""The config, checked before anything is built: a wrong type, an out-of-range value or an unknown
key is one line naming the key, the value and what is allowed (never a traceback from deep inside
torch or a model).

Three kinds of check, each owned here:

* `options.RULES`: every key transferlab reads, with its type and range (the one table; the
  constructors apply the same rules).
* The `_target_` sections (strategy, data, optimizer, scheduler): each key must be an argument of
  the class the section builds, of the type its signature declares.
* The optimizer and the scheduler are built once on a stand-in parameter, so that torch's own
  checks (a negative learning rate, a momentum above 1, ...) speak before training starts.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from transferlab.errors import TransferlabError, did_you_mean
from transferlab.options import RULES, is_a, shown

# Sections built from `_target_`: their keys are checked against the class's signature.
TARGET_SECTIONS = ("strategy", "data", "optimizer", "scheduler")


def check_values(cfg: DictConfig) -> None:
    """RULES over the config: no torch, no Lightning, no class imported (a bad value answers at once)."""
    for key, rule in RULES.items():
        found, value = _lookup(cfg, key)
        if found and not rule.allows(value):
            raise TransferlabError(rule.refusal(key, value))


def check_config(cfg: DictConfig) -> None:
    """Raise TransferlabError (one line) for the first value the run could not use."""
    check_values(cfg)
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
            f"trainer.max_epochs={shown(epochs)}: {' and '.join(needs_length)} spreads over the run's epochs, "
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
            f"trainer.max_epochs={shown(epochs)}: strategy={name} counts epochs as fastai's fine_tune(N) does, "
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
            raise TransferlabError(f"{section}.{key}={shown(value)}: expected {_hint_text(hint)}")


def check_optimizer(cfg: DictConfig) -> None:
    """Build the optimizer (and scheduler) on a stand-in parameter: torch checks its own arguments."""
    import torch  # here, not above: check_values answers without torch

    from transferlab.classifier.schedules import build_scheduler

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
        return is_a(value, hint)
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


def _reason(error: Exception) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0]
