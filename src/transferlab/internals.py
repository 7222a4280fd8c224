"""Every private attribute of Lightning and torch that transferlab relies on, in one place.

Private names (a leading underscore) can vanish or change in any release of their library,
and using one that is gone fails far from its cause: replacing a module function that no
longer exists sets a new attribute nobody reads (the patch silently does nothing), and a
missing method surfaces as an AttributeError deep inside a training run. Each use goes
through `require`, which raises `UpstreamInternalMissing` naming the library and version,
the attribute, what transferlab used it for and what to do. tests/test_internals.py checks
that every entry of `INTERNALS` exists in the installed versions, so an upgrade that removes
one fails there first.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from transferlab.errors import TransferlabError

# The versions these internals were last checked against (tests/test_internals.py, on this machine).
CHECKED_WITH = {"lightning": "2.6.6", "torch": "2.14.1"}


class UpstreamInternalMissing(TransferlabError, RuntimeError):
    """A private attribute of an upstream library that transferlab relies on is gone."""


def _new_scheduler() -> Any:
    import torch

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)


@dataclass(frozen=True)
class Internal:
    library: str  # the distribution whose version the error names
    owner: str  # "package.module" or "package.module:Class"
    name: str
    used_for: str
    # For an attribute that __init__ sets (not on the class): builds an instance to look on.
    instance: Callable[[], Any] | None = None
    workaround: str = ""  # what a run can do instead, if anything, until transferlab follows the change

    @property
    def where(self) -> str:  # a dotted name is an attribute chain from the owner (fit_loop.max_epochs)
        return f"{self.owner.replace(':', '.')}.{self.name}"

    def owner_object(self) -> Any:
        """The module or class `owner` names (raises UpstreamInternalMissing if that is gone too)."""
        module_name, _, class_name = self.owner.partition(":")
        try:
            owner = importlib.import_module(module_name)
            return getattr(owner, class_name) if class_name else owner
        except (ImportError, AttributeError) as error:
            raise self.missing(f"{self.owner.replace(':', '.')} ({type(error).__name__}: {error})") from None

    def missing(self, what: str | None = None) -> UpstreamInternalMissing:
        try:
            version = metadata.version(self.library)
        except metadata.PackageNotFoundError:
            version = "(version unknown)"
        checked = CHECKED_WITH.get(self.library)
        pin = f"pip install '{self.library}=={checked}'" if checked else f"an older {self.library}"
        return UpstreamInternalMissing(
            f"{self.library} {version} has no {what or self.where}, a private attribute transferlab uses to "
            f"{self.used_for}: install a {self.library} version that has it ({pin}, the version transferlab was "
            f"checked with){f', or {self.workaround}' if self.workaround else ''}, and report this to "
            f"transferlab's maintainers (src/transferlab/internals.py)"
        )


REBUILD_WORKAROUND = (
    "train in one process, or with a strategy whose trainable parameters do not change mid-run "
    "(not two_phase or gradual)"
)

FABRIC_HYDRA_COMMAND = Internal(
    "lightning",
    "lightning.fabric.strategies.launchers.subprocess_script",
    "_hydra_subprocess_cmd",
    "start the DDP child processes of a Hydra run or sweep job with that job's own overrides and output "
    "directory (transferlab.distributed.launch.install replaces it)",
)
TRAINER_HYDRA_COMMAND = Internal(
    "lightning",
    "lightning.pytorch.strategies.launchers.subprocess_script",
    "_hydra_subprocess_cmd",
    "start the DDP child processes of a Hydra run or sweep job with that job's own overrides and output "
    "directory (transferlab.distributed.launch.install replaces it)",
)
DDP_STRATEGY_SETUP_MODEL = Internal(
    "lightning",
    "lightning.pytorch.strategies:DDPStrategy",
    "_setup_model",
    "rebuild the DistributedDataParallel wrapper when a phase change makes more parameters trainable "
    "(transferlab.distributed.ranks.follow_trainable)",
    workaround=REBUILD_WORKAROUND,
)
DDP_STRATEGY_REGISTER_HOOKS = Internal(
    "lightning",
    "lightning.pytorch.strategies:DDPStrategy",
    "_register_ddp_hooks",
    "register the user's DDP communication hook on a rebuilt wrapper (transferlab.distributed.ranks.follow_trainable)",
    workaround=REBUILD_WORKAROUND,
)
DDP_REMOVE_AUTOGRAD_HOOKS = Internal(
    "torch",
    "torch.nn.parallel:DistributedDataParallel",
    "_remove_autograd_hooks",
    "stop the old wrapper's reducer from all-reducing gradients once it is replaced "
    "(transferlab.distributed.ranks.follow_trainable)",
    workaround=REBUILD_WORKAROUND,
)
SCHEDULER_LAST_LR = Internal(
    "torch",
    "torch.optim.lr_scheduler:LRScheduler",
    "_last_lr",
    "give a parameter group that joins the optimizer mid-run (two_phase, gradual) its learning rate in the "
    "scheduler too (transferlab.strategies.base.FreezePolicy.add_param_group)",
    instance=_new_scheduler,
    workaround="train with scheduler=none",
)
LOOP_WORKAROUND = "install the Lightning version transferlab was checked with"


def _new_trainer() -> Any:
    from lightning.pytorch import Trainer

    return Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)


# Lightning's loops: public names on objects Lightning documents as internal (the loop classes are private).
FIT_LOOP_SETUP_DATA = Internal(
    "lightning",
    "lightning.pytorch:Trainer",
    "fit_loop.setup_data",
    "load the training data to count a per-step schedule's steps when Lightning has not yet "
    "(transferlab.classifier.module.ImageClassifier.step_budget)",
    instance=_new_trainer,
    workaround="train with scheduler=cosine or none",
)
FIT_LOOP_MAX_EPOCHS = Internal(
    "lightning",
    "lightning.pytorch:Trainer",
    "fit_loop.max_epochs",
    "let tune.lr_find's range test run its steps in a short run (transferlab.run.lr_finder)",
    instance=_new_trainer,
    workaround="set optimizer.lr instead of tune.lr_find=true",
)
EPOCH_BATCH_PROGRESS = Internal(
    "lightning",
    "lightning.pytorch:Trainer",
    "fit_loop.epoch_loop.batch_progress",
    "know a mid-epoch checkpoint's place in its epoch (the training loader's state, the first line of a resumed run)",
    instance=_new_trainer,
    workaround=LOOP_WORKAROUND,
)
RELOAD_DATALOADERS = Internal(
    "lightning",
    "lightning.pytorch:Trainer",
    "reload_dataloaders_every_n_epochs",
    "switch the loaders from cached features back to images when the backbone starts training "
    "(transferlab.caches.features.BackToImages)",
    instance=_new_trainer,
    workaround="train with feature_cache.enabled=false",
)

INTERNALS: tuple[Internal, ...] = (
    FABRIC_HYDRA_COMMAND,
    TRAINER_HYDRA_COMMAND,
    DDP_STRATEGY_SETUP_MODEL,
    DDP_STRATEGY_REGISTER_HOOKS,
    DDP_REMOVE_AUTOGRAD_HOOKS,
    SCHEDULER_LAST_LR,
    FIT_LOOP_SETUP_DATA,
    FIT_LOOP_MAX_EPOCHS,
    EPOCH_BATCH_PROGRESS,
    RELOAD_DATALOADERS,
)


def require(internal: Internal, on: Any = None) -> Any:
    """`internal`'s attribute (a dotted name walks down: `fit_loop.max_epochs`), looked up on `on` (the
    module, class or instance at hand) or, without one, on the registered owner; raises
    UpstreamInternalMissing if it is not there."""
    found = internal.owner_object() if on is None else on
    try:
        for part in internal.name.split("."):
            found = getattr(found, part)
    except AttributeError:
        raise internal.missing() from None
    return found


def assign(internal: Internal, on: Any, value: Any) -> None:
    """Set `internal`'s attribute on `on` to `value`, once `require` found it there (never a new attribute
    that the library would not read)."""
    require(internal, on)
    *parents, name = internal.name.split(".")
    owner = on
    for part in parents:
        owner = getattr(owner, part)
    setattr(owner, name, value)


def missing_internals() -> list[Internal]:
    """The registered internals the installed libraries lack (an instance is built where one is needed)."""
    gone = []
    for internal in INTERNALS:
        try:
            require(internal, internal.instance() if internal.instance else None)
        except UpstreamInternalMissing:
            gone.append(internal)
    return gone


def append_last_lr(scheduler: Any, lr: float) -> None:
    """Append `lr` to a scheduler's private `_last_lr` (what get_last_lr() and Lightning's
    LearningRateMonitor read) for a parameter group just added to its optimizer; `base_lrs`,
    public, is the caller's to extend."""
    require(SCHEDULER_LAST_LR, scheduler).append(lr)
