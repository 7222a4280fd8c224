"""Every option of every config group composes and builds what it names."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from conftest import CONF, compose_config
from transferlab.freeze import FreezePolicy


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("strategy", options("strategy"))
def test_strategies_build_freeze_policies(strategy, tmp_path):
    cfg = compose_config([f"strategy={strategy}"], tmp_path)
    assert isinstance(instantiate(cfg.strategy), FreezePolicy)


@pytest.mark.parametrize("optimizer", options("optimizer"))
@pytest.mark.parametrize("scheduler", options("scheduler"))
def test_optimizers_and_schedulers_are_partials(optimizer, scheduler, tmp_path):
    cfg = compose_config([f"optimizer={optimizer}", f"scheduler={scheduler}"], tmp_path)
    built = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(built, torch.optim.Optimizer) and built.param_groups[0]["lr"] == cfg.optimizer.lr
    if scheduler == "none":
        assert cfg.scheduler is None
    else:
        assert isinstance(instantiate(cfg.scheduler)(built), torch.optim.lr_scheduler.LRScheduler)


@pytest.mark.parametrize("model", options("model"))
def test_every_model_config_names_a_buildable_backbone(model, tmp_path):
    from transferlab.backbones import create_backbone

    generic = {"timm": ["model.name=timm/resnet18"], "torchvision": ["model.name=densenet121"]}
    overrides = [f"model={model}", *generic.get(model, [])]
    cfg = compose_config(overrides, tmp_path)
    backbone = create_backbone(cfg.model.name, pretrained=False)
    assert len(backbone.blocks) >= 4 and backbone.num_features > 0
