"""Every option of every config group composes and builds what it names."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from transferlab.freeze import FreezePolicy

from conftest import CONF, compose_config


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


@pytest.mark.parametrize("recipe", options("recipe"))
def test_the_notes_comparison_recipes_compose(recipe, tmp_path):
    cfg = compose_config(["experiment=notes_comparison", f"+recipe={recipe}"], tmp_path)
    policy = instantiate(cfg.strategy)
    expected = {
        "cnn_scratch": "Scratch",
        "scratch": "Scratch",
        "head_only": "HeadOnly",
        "full_finetune": "FullFinetune",
        "two_phase": "TwoPhase",
    }[recipe]
    assert type(policy).__name__ == expected
    assert cfg.model.name == ("small_cnn" if recipe == "cnn_scratch" else "efficientnet_lite0")


def test_experiments_and_the_optuna_search_compose(tmp_path):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        search = compose("train", overrides=["hparams_search=optuna"], return_hydra_config=True)
        compare = compose("train", overrides=["experiment=digits_compare"], return_hydra_config=True)
    assert search.hydra.sweeper.direction == "maximize" and search.optimized_metric == "val/acc_best"
    assert set(search.hydra.sweeper.params) == {"optimizer.lr", "optimizer.weight_decay", "strategy"}
    assert compare.hydra.sweeper.params == {
        "model": "small_cnn,efficientnet_lite0",
        "strategy": "scratch,head_only,two_phase",
    }
