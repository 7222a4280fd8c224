"""Many processes that train what one process trains.

What Lightning's DDP does not do for a transfer-learning run (sync BatchNorm that keeps
timm's fused activations is in sync_batchnorm.py):

* **Ranks known before any process group**: Lightning's launcher, torchrun and Slurm each
  say who a process is in their own variables; the passes before fit and metrics.json need it.
* **Phase changes.** DistributedDataParallel reduces the gradients of the parameters that
  required grad when it was built; a block unfrozen later (two_phase, gradual, a resumed
  run) would train separately on every rank (Lightning #20340). `follow_trainable` rebuilds
  the wrapper when the trainable set changes: DDP's constructor broadcasts rank 0's weights
  and its reducer then covers the new set.
* **Proof.** `check_ranks_in_sync` compares a checksum of every parameter across ranks at
  the end of fit: a run whose ranks drifted apart fails, naming the first parameter.
"""

from __future__ import annotations

import hashlib
import logging

import lightning as L
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from transferlab import internals

# A process's identity, from its environment (identity.py, light); here too, beside what needs the process group.
from transferlab.distributed.identity import (  # noqa: F401
    is_global_zero,
    local_rank,
    run_stamp,
    slurm_tasks,
    started_externally,
)
from transferlab.errors import TransferlabError

log = logging.getLogger(__name__)


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def trainable_names(module: nn.Module) -> frozenset[str]:
    return frozenset(name for name, param in module.named_parameters() if param.requires_grad)


def follow_trainable(trainer: L.Trainer, wrapped_with: frozenset[str]) -> frozenset[str]:
    """Rebuild the DDP wrapper if the trainable parameters changed since it was built; returns
    the set the current wrapper reduces. Called at the start of an epoch, when no gradient is pending."""
    strategy, module = trainer.strategy, trainer.lightning_module
    now = trainable_names(module)
    if now == wrapped_with or not isinstance(strategy.model, DistributedDataParallel):
        return now
    # Lightning's DDPStrategy and torch's DDP internals (private: all checked before any is used).
    old = strategy.model
    remove_autograd_hooks = internals.require(internals.DDP_REMOVE_AUTOGRAD_HOOKS, old)
    setup_model = internals.require(internals.DDP_STRATEGY_SETUP_MODEL, strategy)
    register_ddp_hooks = internals.require(internals.DDP_STRATEGY_REGISTER_HOOKS, strategy)
    remove_autograd_hooks()  # the old reducer must not all-reduce (or wait for) gradients any more
    strategy.model = setup_model(old.module)  # broadcasts rank 0's parameters and buffers
    register_ddp_hooks()  # the user's communication hook (CUDA), as Lightning registers it
    log.info(
        "DDP: %d trainable parameter tensors now (%d before): wrapper rebuilt, ranks start from rank 0's weights",
        len(now),
        len(wrapped_with),
    )
    return now


def check_same_on_every_rank(what: str, value: str) -> None:
    """Every rank decided `what` on its own (before any process group existed): raise on all ranks,
    rather than train different models or wait forever, if they did not decide alike."""
    if not distributed():
        return
    values: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    if len(set(values)) > 1:
        raise TransferlabError(f"{what} differs between the ranks ({values}): set it explicitly")


def parameter_digests(module: nn.Module) -> list[tuple[str, str]]:
    """(name, sha1 of its bytes) for every parameter: equal digests mean bit-identical weights."""
    digests = []
    for name, param in module.named_parameters():
        data = param.detach().to("cpu", copy=True).contiguous().view(-1).view(torch.uint8).numpy()
        digests.append((name, hashlib.sha1(data.tobytes()).hexdigest()))
    return digests


def check_ranks_in_sync(module: nn.Module) -> None:
    """Raise, naming the first parameter that differs, unless every rank holds the same weights."""
    mine = parameter_digests(module)
    gathered: list[list[tuple[str, str]] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, mine)
    reference = gathered[0]
    for rank, theirs in enumerate(gathered[1:], start=1):
        for (name, expected), (_, actual) in zip(reference, theirs):
            if expected != actual:
                raise TransferlabError(
                    f"DDP ranks out of sync after fit: parameter '{name}' differs between rank 0 and rank {rank} "
                    f"(each process trained its own copy; the checkpoint holds rank 0's)"
                )
