"""The OmegaConf resolvers the Hydra configs use; registered before Hydra composes them."""

from __future__ import annotations

import re

from omegaconf import OmegaConf

from transferlab.distributed import identity


def path_safe(name: object) -> str:
    """Overrides as one directory name: a path value must not nest it, a command line must take it back
    unquoted (`resume=DIR`: Hydra refuses "=", ",", brackets and quotes there), and names stay short."""
    return re.sub(r"[^\w.+\-]", "_", str(name))[:120]


def register() -> None:
    """Idempotent: every script (and the tests) calls it once before composing a config."""
    if not OmegaConf.has_resolver("coalesce"):
        # `${coalesce:${resume},<new dir>}`: the resumed run's directory, else a new one.
        OmegaConf.register_new_resolver("coalesce", lambda *values: next((v for v in values if v), None))
    if not OmegaConf.has_resolver("path_safe"):
        # Sweep sub-directories are named after the overrides; a path value must not nest them.
        OmegaConf.register_new_resolver("path_safe", path_safe)
    if not OmegaConf.has_resolver("named_after"):
        # A single run's directory: its start time, then its overrides (`_model=resnet18,strategy=head_only`),
        # so that TensorBoard's run list says what each run was. Nothing for a run of the defaults.
        OmegaConf.register_new_resolver(
            "named_after", lambda overrides: f"_{path_safe(overrides)}" if overrides else ""
        )
    if not OmegaConf.has_resolver("run_stamp"):
        # A run's directory name: its start time; the Slurm job for the tasks of one multi-task
        # (multi-node) run, which must all agree on it and may start seconds apart.
        OmegaConf.register_new_resolver("run_stamp", identity.run_stamp, use_cache=True)
    if not OmegaConf.has_resolver("config_subdir"):
        # A resumed run keeps the config it was started with in .hydra/.
        OmegaConf.register_new_resolver("config_subdir", lambda resume: ".hydra/resumed" if resume else ".hydra")
    if not OmegaConf.has_resolver("add"):
        # `${add:${strategy.freeze_epochs},${strategy.epochs}}`: fastai_fine_tune's epochs in all.
        OmegaConf.register_new_resolver("add", lambda *values: sum(values))
