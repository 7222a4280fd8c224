"""strategy=auto's decision, made before the run's classifier is built.

    config (strategy=auto) ─ backbone, datamodule (built once, for the probe and the run) ─ probe: the
    frozen pretrained backbone over a sample of the training split ─► decision table ─► the config that
    `strategy=<choice>` composes from the same command line

The run then trains from that config: the strategy node and recipe (learning rate, epochs, early
stopping) of `strategy=<choice>`, with the options the table chose; the rest as composed. The recipe is
read by composing `strategy=<choice>` (the one reading that layers recipe= and experiment= over it as
Hydra does); the run's own config is not composed again. The decided config replaces the run's saved
`.hydra/config.yaml`, so `resume=<run dir>` continues with the choice and never probes again.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from transferlab.run import build
from transferlab.strategies.auto import Auto
from transferlab.strategies.policies import HeadOnly

log = logging.getLogger(__name__)

# What a strategy's recipe sets (conf/strategy/*.yaml).
RECIPE_KEYS = ("optimizer.lr", "trainer.max_epochs", "callbacks.early_stopping")


@dataclass(frozen=True)
class Decided:
    cfg: DictConfig  # what the run trains: strategy=<choice> with its recipe
    built: build.Prebuilt  # the probe's backbone and datamodule, which the run trains (build.experiment)


def decide(cfg: DictConfig, command_line: list[str], device: torch.device) -> Decided | None:
    """None, unless the config's strategy decides from the data (auto): then its decision."""
    auto = build.built("strategy", cfg.strategy)
    if not isinstance(auto, Auto):
        return None
    # A frozen pass, as head_only makes it: pretrained weights, no auxiliary classifier.
    spec, backbone = build.backbone(cfg, HeadOnly())
    data = build.datamodule(cfg, backbone)
    backbone.to(device).eval()

    def features(images: torch.Tensor) -> torch.Tensor:
        return backbone(images.contiguous(memory_format=torch.channels_last) if cfg.channels_last else images)

    # The probe draws nothing the run would: the run's classifier starts from the generators' state
    # after the backbone and datamodule were built, as under strategy=<choice> alone.
    states = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        decision = auto.decide(features, data, len(backbone.blocks), device)
    random.setstate(states[0])
    np.random.set_state(states[1])
    decided = decided_config(cfg, decision, command_line)
    log.info(
        "strategy=auto chose %s and trains with its recipe: %s",
        decision.strategy,
        recipe_changes(cfg, decided) or "unchanged",
    )
    return Decided(decided, build.Prebuilt(spec, backbone.train(), data))


def decided_config(cfg: DictConfig, decision, command_line: list[str]) -> DictConfig:
    """A copy of `cfg` that trains as `strategy=<choice>` with the same command line does (where a value set
    there still wins): that strategy's node, with the options the table chose, and its recipe."""
    others = [o for o in command_line if build.override_key(o) != "strategy"]
    chosen = build.compose([*others, f"strategy={decision.strategy}"])
    decided = cfg.copy()
    with open_dict(decided):
        decided.strategy = chosen.strategy
        for key, value in decision.options.items():
            decided.strategy[key] = value
        for key in RECIPE_KEYS:
            OmegaConf.update(decided, key, OmegaConf.select(chosen, key), merge=False)
        decided.auto = decision.report  # reported in metrics.json; its presence marks a decided run
    return decided


def with_decision(saved: DictConfig, decided: DictConfig) -> DictConfig:
    """`saved` (the run's .hydra/config.yaml, as Hydra wrote it) with what the decision changed: the strategy
    node, its recipe and the report. Nothing else of the running config (composed once) is copied over."""
    updated = saved.copy()
    with open_dict(updated):
        for key in ("strategy", "auto", *RECIPE_KEYS):
            OmegaConf.update(updated, key, OmegaConf.select(decided, key), merge=False)
    return updated


def recipe_changes(before: DictConfig, after: DictConfig) -> dict:
    """The recipe values the chosen strategy changed, by dotted key."""
    changed = {}
    for key in RECIPE_KEYS:
        value, old = OmegaConf.select(after, key), OmegaConf.select(before, key)
        if value == old:
            continue
        if OmegaConf.is_dict(value) and OmegaConf.is_dict(old):  # name the options that changed
            changed.update({f"{key}.{k}": v for k, v in value.items() if old.get(k) != v})
        else:
            changed[key] = value
    return changed
