"""Private Lightning/torch attributes transferlab relies on: all listed in transferlab.internals, all present
in the installed versions, and a missing one is one loud error naming it instead of a patch that does nothing."""

from __future__ import annotations

import ast
from types import SimpleNamespace

import pytest
import torch
from lightning.fabric.strategies.launchers import subprocess_script as fabric_launcher
from lightning.pytorch.strategies.launchers import subprocess_script as trainer_launcher
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from transferlab import internals
from transferlab.distributed import launch, ranks
from transferlab.errors import TransferlabError
from transferlab.internals import INTERNALS, UpstreamInternalMissing, append_last_lr, missing_internals

from conftest import ROOT


def test_every_registered_internal_exists_in_the_installed_versions():
    """Fails when an upgrade of Lightning or torch removes (or renames) one of them."""
    assert [internal.where for internal in missing_internals()] == []


def test_a_removed_internal_is_reported_missing(monkeypatch):
    monkeypatch.delattr(DistributedDataParallel, "_remove_autograd_hooks")
    assert missing_internals() == [internals.DDP_REMOVE_AUTOGRAD_HOOKS]


def private_names_used_but_not_defined() -> dict[str, str]:
    """Underscore names src/ reads from objects (or imports) without defining them anywhere in src/:
    private attributes of another library."""
    defined, used = set(), {}
    trees = {path: ast.parse(path.read_text()) for path in (ROOT / "src").rglob("*.py")}
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                defined.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                defined.add(node.id)
    for path, tree in trees.items():
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Attribute):
                names = [node.attr]
            elif isinstance(node, ast.ImportFrom):
                names = [alias.name for alias in node.names]
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr", "setattr")
                and len(node.args) > 1
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
            ):
                names = [node.args[1].value]
            for name in names:
                # _target_, _partial_: Hydra's config keys, read from configs as attributes, are not private.
                if (
                    name.startswith("_")
                    and not name.startswith("__")
                    and not name.endswith("_")
                    and name not in defined
                ):
                    used.setdefault(name, str(path.relative_to(ROOT)))
    return used


def test_every_private_upstream_name_src_uses_is_registered():
    registered = {internal.name for internal in INTERNALS}
    unregistered = {name: path for name, path in private_names_used_but_not_defined().items() if name not in registered}
    assert unregistered == {}, "list these in src/transferlab/internals.py (INTERNALS)"


# Public names on Lightning's loops and trainer that its docs call internal: reached only through the registry.
LOOP_NAMES = {"fit_loop", "epoch_loop", "batch_progress", "reload_dataloaders_every_n_epochs", "setup_data"}


def test_lightnings_loop_internals_are_reached_only_through_the_registry():
    """An attribute chain on trainer.fit_loop (or the reload switch) outside internals.py is one that an
    upgrade can break silently; through `require`/`assign` it is one error naming it."""
    found = []
    for path in (ROOT / "src").rglob("*.py"):
        if path.name == "internals.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in LOOP_NAMES:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: .{node.attr}")
    assert found == []
    registered = {part for internal in INTERNALS for part in internal.name.split(".")}
    assert registered >= LOOP_NAMES


def test_a_loop_internal_lightning_dropped_is_one_error_and_nothing_is_set(monkeypatch):
    trainer = internals._new_trainer()
    internals.assign(internals.RELOAD_DATALOADERS, trainer, 1)
    assert trainer.reload_dataloaders_every_n_epochs == 1
    missing = SimpleNamespace(fit_loop=SimpleNamespace())
    with pytest.raises(UpstreamInternalMissing, match=r"Trainer\.fit_loop\.max_epochs.*tune\.lr_find"):
        internals.assign(internals.FIT_LOOP_MAX_EPOCHS, missing, 5)
    assert not hasattr(missing.fit_loop, "max_epochs"), "no attribute added that Lightning never reads"


def test_ddp_install_replaces_both_launcher_commands(monkeypatch):
    for module in (fabric_launcher, trainer_launcher):  # restored after the test
        monkeypatch.setattr(module, "_hydra_subprocess_cmd", module._hydra_subprocess_cmd)
    launch.install()
    assert fabric_launcher._hydra_subprocess_cmd is launch.job_command
    assert trainer_launcher._hydra_subprocess_cmd is launch.job_command


def test_ddp_install_refuses_when_a_launcher_command_is_gone(monkeypatch):
    original = fabric_launcher._hydra_subprocess_cmd
    monkeypatch.delattr(trainer_launcher, "_hydra_subprocess_cmd")
    with pytest.raises(UpstreamInternalMissing) as error:
        launch.install()
    message = str(error.value)
    assert "lightning.pytorch.strategies.launchers.subprocess_script._hydra_subprocess_cmd" in message
    assert "lightning " in message and "pip install 'lightning==" in message
    assert isinstance(error.value, RuntimeError) and isinstance(error.value, TransferlabError)
    assert fabric_launcher._hydra_subprocess_cmd is original, "nothing replaced when one of them is missing"
    assert not hasattr(trainer_launcher, "_hydra_subprocess_cmd"), "no attribute added that Lightning never reads"


def scheduler() -> torch.optim.lr_scheduler.LRScheduler:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)


def test_append_last_lr_gives_the_new_group_its_rate():
    steps = scheduler()
    append_last_lr(steps, 0.5)
    assert steps.get_last_lr() == [0.1, 0.5]


def test_append_last_lr_refuses_when_the_private_list_is_gone():
    steps = scheduler()
    del steps._last_lr
    with pytest.raises(
        UpstreamInternalMissing, match=r"torch \S+ has no torch\.optim\.lr_scheduler\.LRScheduler\._last_lr"
    ) as error:
        append_last_lr(steps, 0.5)
    assert "scheduler=none" in str(error.value)


def test_follow_trainable_refuses_to_rebuild_without_the_ddp_internals(monkeypatch):
    monkeypatch.delattr(DistributedDataParallel, "_remove_autograd_hooks")
    wrapper = DistributedDataParallel.__new__(DistributedDataParallel)  # a stand-in: no process group needed
    strategy = SimpleNamespace(model=wrapper, _setup_model=None, _register_ddp_hooks=None)
    trainer = SimpleNamespace(strategy=strategy, lightning_module=nn.Linear(2, 2))
    with pytest.raises(UpstreamInternalMissing, match="DistributedDataParallel._remove_autograd_hooks") as error:
        ranks.follow_trainable(trainer, frozenset())
    assert "not two_phase or gradual" in str(error.value)
    assert strategy.model is wrapper, "the wrapper is left as it was"
