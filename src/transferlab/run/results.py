"""What a run leaves in its directory: metrics.json (strict JSON, written atomically), the saved config,
and the hyperparameters TensorBoard lists it by."""

from __future__ import annotations

import json
import math
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from transferlab.files import atomic


def run_facts(cfg: DictConfig, choices: dict, status: str, **facts) -> dict:
    """A metrics.json for a run that did not complete: its status, what it was, and `facts`."""
    described = {
        "model": cfg.model.get("name"),
        "data": choices.get("data"),
        "strategy": choices.get("strategy"),
    }
    return {"status": status, **facts, **described, "seed": cfg.seed}


def hyperparameters(cfg: DictConfig, strategy: str, choices: dict, overrides: list[str] | None = None) -> dict:
    """Flat primitives for TensorBoard's HPARAMS tab: what tells runs apart first (model, strategy, data,
    learning rate, seed), then every key the command line set; not the whole config, whose hundred
    columns would push these out of view."""
    root = cfg.data.get("root")
    flat = {
        "model": cfg.model.name,
        "strategy": strategy,
        "data": f"{choices.get('data')} ({Path(str(root)).name})" if root else choices.get("data"),
        "lr": cfg.optimizer.get("lr"),
        "seed": cfg.seed,
        "optimizer": choices.get("optimizer"),
        "scheduler": choices.get("scheduler"),
        "batch_size": cfg.data.get("batch_size"),
        "image_size": cfg.data.get("image_size"),
        "max_epochs": cfg.trainer.get("max_epochs"),
    }
    shown = {"optimizer.lr", "data.batch_size", "data.image_size", "trainer.max_epochs"}  # above by short name
    for override in overrides or []:
        key = override.lstrip("+~").split("=", 1)[0]
        if key in shown or key in ("seed", "resume") or key.startswith(("hydra.", "paths.")) or "." not in key:
            continue  # groups (model=, data=) are above by name
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, (int, float, str, bool)):
            flat.setdefault(key, value)
    return {k: v for k, v in flat.items() if isinstance(v, (int, float, str, bool))}


def write_json(path: Path, content: dict) -> None:
    """Strict JSON, written atomically; a value that is not a finite number is written as null (NaN is
    not JSON, and a file a reader cannot parse is worse than a missing value). A write that fails (a
    full disk) leaves the previous file as it was and no partial one."""
    finite = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in content.items()}
    with atomic(path) as partial:
        partial.write_text(json.dumps(finite, indent=2, allow_nan=False) + "\n")


def save_config(cfg: DictConfig, saved: Path) -> None:
    """The run's config in place of Hydra's copy (atomic: a resume never reads half a file)."""
    with atomic(saved) as partial:
        OmegaConf.save(cfg, partial)
