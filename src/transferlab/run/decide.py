"""strategy=auto's decision, made before anything of the run is built.

    config (strategy=auto) ─ probe: a frozen pretrained backbone over a sample of the training split ─►
    decision table ─► the config `strategy=<choice>` composes from the same command line

The run then builds once, from that config: the strategy node and recipe (learning rate, epochs, early
stopping) of `strategy=<choice>`, with the options the table chose; the rest as composed. The decided config replaces the run's
saved `.hydra/config.yaml`, so `resume=<run dir>` continues with the choice and never probes again.
"""

from __future__ import annotations

import logging

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from transferlab.run import build
from transferlab.strategies.auto import Auto, Decision
from transferlab.strategies.policies import HeadOnly

log = logging.getLogger(__name__)

# What a strategy's recipe sets (conf/strategy/*.yaml).
RECIPE_KEYS = ("optimizer.lr", "trainer.max_epochs", "callbacks.early_stopping")


def decide(cfg: DictConfig, device: torch.device) -> Decision | None:
    """None, unless the config's strategy decides from the data (auto): then its decision."""
    auto = build.built("strategy", cfg.strategy)
    if not isinstance(auto, Auto):
        return None
    # A frozen pass, as head_only makes it: pretrained weights, no auxiliary classifier.
    _, backbone = build.backbone(cfg, HeadOnly())
    data = build.datamodule(cfg, backbone)
    backbone.to(device).eval()

    def features(images: torch.Tensor) -> torch.Tensor:
        return backbone(images.contiguous(memory_format=torch.channels_last) if cfg.channels_last else images)

    return auto.decide(features, data, len(backbone.blocks), device)


def decided_config(cfg: DictConfig, decision: Decision, command_line: list[str]) -> DictConfig:
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
