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


def _new_module() -> Any:
    import torch

    return torch.nn.Module()


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
    def where(self) -> str:
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
BATCHNORM_BASE = Internal(
    "torch",
    "torch.nn.modules.batchnorm",
    "_BatchNorm",
    "recognise every BatchNorm layer to synchronise (transferlab.distributed.sync_batchnorm)",
)
MODULE_PARAMETERS = Internal(
    "torch",
    "torch.nn:Module",
    "_parameters",
    "put the synchronised layers' tensors back into the original BatchNorm modules (transferlab.distributed.sync_batchnorm revert)",
    instance=_new_module,
)
MODULE_BUFFERS = Internal(
    "torch",
    "torch.nn:Module",
    "_buffers",
    "put the synchronised layers' buffers back into the original BatchNorm modules (transferlab.distributed.sync_batchnorm revert)",
    instance=_new_module,
)

INTERNALS: tuple[Internal, ...] = (
    FABRIC_HYDRA_COMMAND,
    TRAINER_HYDRA_COMMAND,
    DDP_STRATEGY_SETUP_MODEL,
    DDP_STRATEGY_REGISTER_HOOKS,
    DDP_REMOVE_AUTOGRAD_HOOKS,
    SCHEDULER_LAST_LR,
    BATCHNORM_BASE,
    MODULE_PARAMETERS,
    MODULE_BUFFERS,
)


def require(internal: Internal, on: Any = None) -> Any:
    """`internal`'s attribute, looked up on `on` (the module, class or instance at hand) or, without
    one, on the registered owner; raises UpstreamInternalMissing if it is not there."""
    owner = internal.owner_object() if on is None else on
    try:
        return getattr(owner, internal.name)
    except AttributeError:
        raise internal.missing() from None


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
