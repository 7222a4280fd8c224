"""Every option of every config group composes and builds what it names."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hydra.utils import instantiate

from transferlab.classifier.schedules import build_scheduler
from transferlab.run import build
from transferlab.run.decide import decide
from transferlab.strategies.auto import Auto, Decision
from transferlab.strategies.base import FreezePolicy
from transferlab.strategies.policies import Scratch

from conftest import CONF, compose_config


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("strategy", options("strategy"))
def test_strategies_build_freeze_policies(strategy, tmp_path):
    cfg = compose_config([f"strategy={strategy}"], tmp_path)
    # auto is the one strategy that is no policy itself: it chooses one before the run is built.
    assert isinstance(instantiate(cfg.strategy), Auto if strategy == "auto" else FreezePolicy)


@pytest.mark.parametrize("optimizer", options("optimizer"))
@pytest.mark.parametrize("scheduler", options("scheduler"))
def test_optimizers_and_schedulers_are_partials(optimizer, scheduler, tmp_path):
    cfg = compose_config([f"optimizer={optimizer}", f"scheduler={scheduler}"], tmp_path)
    built = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(built, torch.optim.Optimizer) and built.param_groups[0]["lr"] == cfg.optimizer.lr
    if scheduler == "none":
        assert cfg.scheduler is None
    else:
        stepper, interval = build_scheduler(cfg.scheduler, built, budget=lambda: (100, 10))
        assert isinstance(stepper, torch.optim.lr_scheduler.LRScheduler)
        assert interval == ("step" if scheduler == "warmup_cosine" else "epoch")


@pytest.mark.parametrize("model", options("model"))
def test_every_model_config_names_a_buildable_backbone(model, tmp_path):
    generic = {"timm": ["model.name=timm/resnet18"], "torchvision": ["model.name=densenet121"]}
    overrides = [f"model={model}", *generic.get(model, [])]
    cfg = compose_config([*overrides, "model.pretrained=false"], tmp_path)
    _, backbone = build.backbone(cfg, Scratch())  # with the config's own options (vgg_custom's cfg, …)
    blocks = [p for block in backbone.blocks for p in block.parameters()]
    assert len(backbone.blocks) >= 4 and len(blocks) == len(list(backbone.features.parameters())), (
        "every parameter in a block"
    )
    size = max(backbone.min_input_size, 32)
    with torch.no_grad():
        pooled = backbone.eval()(torch.rand(2, 3, size, size))
    assert pooled.shape == (2, backbone.num_features), "one pooled vector an image, of the size the head is built for"


NOTES_RECIPES = ("cnn_scratch", "scratch", "head_only", "full_finetune", "two_phase")


@pytest.mark.parametrize("recipe", NOTES_RECIPES)
def test_the_notes_comparison_recipes_compose(recipe, tmp_path):
    cfg = compose_config(["experiment=notes_comparison", f"recipe={recipe}"], tmp_path)
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
    assert search.hydra.sweeper.direction == "maximize" and search.optimized_metric == "monitor/best"
    assert set(search.hydra.sweeper.params) == {"optimizer.lr", "optimizer.weight_decay", "strategy"}
    assert compare.hydra.sweeper.params == {
        "model": "small_cnn,efficientnet_lite0",
        "strategy": "scratch,head_only,two_phase",
    }


def test_the_anchor_recipes_are_one_override_each(tmp_path):
    """recipe=pytorch_tutorial and recipe=keras_guide set what their sources set, and nothing of the
    strategies' own recipes survives; the command line still wins."""
    tutorial = compose_config(["recipe=pytorch_tutorial"], tmp_path)
    assert (
        type(instantiate(tutorial.strategy)).__name__ == "FullFinetune" and tutorial.strategy.backbone_lr_scale == 1.0
    )
    assert (tutorial.optimizer._target_, tutorial.optimizer.lr, tutorial.optimizer.momentum) == (
        "torch.optim.SGD",
        1e-3,
        0.9,
    )
    assert (tutorial.scheduler._target_, tutorial.scheduler.step_size, tutorial.scheduler.gamma) == (
        "torch.optim.lr_scheduler.StepLR",
        7,
        0.1,
    )
    assert (tutorial.data.batch_size, tutorial.data.augment.scale_min, tutorial.data.augment.hflip) == (4, 0.08, 0.5)
    assert (
        tutorial.head.dropout == 0 and tutorial.trainer.max_epochs == 25 and tutorial.callbacks.early_stopping is None
    )
    keras = compose_config(["recipe=keras_guide"], tmp_path)
    policy = instantiate(keras.strategy)
    assert type(policy).__name__ == "TwoPhase" and (policy.head_epochs, policy.unfreeze_lr_scale) == (2, 0.01)
    assert (keras.optimizer._target_, keras.optimizer.lr, keras.scheduler) == ("torch.optim.Adam", 1e-3, None)
    assert (keras.data.batch_size, keras.data.augment.rotation, keras.head.dropout, keras.trainer.max_epochs) == (
        64,
        36,
        0.2,
        3,
    )
    assert compose_config(["recipe=keras_guide", "trainer.max_epochs=5"], tmp_path).trainer.max_epochs == 5


def test_each_strategy_carries_its_recipe_and_the_command_line_overrides_it(tmp_path):
    head_only = compose_config(["strategy=head_only"], tmp_path)
    assert (head_only.optimizer.lr, head_only.trainer.max_epochs, head_only.callbacks.early_stopping.patience) == (
        0.01,
        30,
        10,
    )
    chosen = compose_config(["strategy=head_only", "optimizer.lr=0.5", "trainer.max_epochs=3"], tmp_path)
    assert (chosen.optimizer.lr, chosen.trainer.max_epochs) == (0.5, 3)


@pytest.mark.parametrize(
    "command_line, choice, expected",
    [
        ([], "head_only", (0.01, 30, 10)),  # head_only's recipe, as strategy=head_only has it
        (["optimizer.lr=0.5"], "head_only", (0.5, 30, 10)),  # the command line still wins
        (["callbacks.early_stopping=null"], "head_only", (0.01, 30, None)),
        ([], "top_blocks", (0.003, 10, 5)),
        (["optimizer.lr=0.02"], "full_finetune", (0.02, 10, 5)),
        (["strategy.similar=0.1"], "full_finetune", (0.003, 10, 5)),  # auto's own options are left out
    ],
)
def test_auto_trains_with_the_recipe_of_the_strategy_it_chose(command_line, choice, expected, tmp_path, monkeypatch):
    overrides = ["strategy=auto", "model.pretrained=false", "data.image_size=32", *command_line]
    cfg = compose_config(overrides, tmp_path)
    assert cfg.trainer.max_epochs == 10, "auto's own: the shared recipe"
    options = {"top_blocks": {"n": 1}, "full_finetune": {"backbone_lr_scale": 1.0}}.get(choice, {})
    report = {"auto/choice": choice}
    monkeypatch.setattr(Auto, "decide", lambda self, *args, **kwargs: Decision(choice, options, report))
    decided = decide(cfg, overrides, torch.device("cpu")).cfg
    early_stopping = decided.callbacks.early_stopping
    assert (decided.optimizer.lr, decided.trainer.max_epochs, early_stopping and early_stopping.patience) == expected
    assert decided.strategy._target_.endswith(
        {"head_only": "HeadOnly", "top_blocks": "TopBlocks"}.get(choice, "FullFinetune")
    )
    assert all(decided.strategy[key] == value for key, value in options.items()), "the table's options"
    assert decided.auto == report and cfg.strategy._target_.endswith("Auto"), "a new config: the composed one is kept"


def declared_defaults(target: type) -> dict:
    """The defaults of the options `target`'s own __init__ declares (not those it passes on to a base)."""
    import inspect

    init = target.__init__ if "__init__" in vars(target) else None
    if init is None and dataclasses.is_dataclass(target):
        return {f.name: f.default for f in dataclasses.fields(target) if f.default is not dataclasses.MISSING}
    if init is None:
        return {}
    return {name: p.default for name, p in inspect.signature(init).parameters.items() if p.default is not p.empty}


def group_nodes() -> list[tuple[str, str, dict]]:
    """(where, _target_, options) of every transferlab class a config of conf/ builds: each group's
    options, the callbacks, and the augmentation of each data config."""
    from omegaconf import OmegaConf

    nodes = []
    for group in ("strategy", "scheduler", "data", "callbacks"):
        for option in options(group):
            loaded = OmegaConf.to_container(OmegaConf.load(CONF / group / f"{option}.yaml"), resolve=False)
            loaded.pop("defaults", None)
            sections = loaded.items() if group == "callbacks" else [(group, loaded.get(group, loaded))]
            for name, node in sections:
                if isinstance(node, dict) and str(node.get("_target_", "")).startswith("transferlab."):
                    nodes.append((f"conf/{group}/{option}.yaml {name}", node["_target_"], node))
            if group == "data" and isinstance(loaded.get("augment"), dict):
                nodes.append(
                    (f"conf/data/{option}.yaml augment", "transferlab.data.transforms.Augment", loaded["augment"])
                )
    return nodes


def test_every_option_a_class_declares_has_the_default_its_config_gives(tmp_path):
    """One default per option: where a config of conf/ sets an option that its class declares, the two
    agree (what a dataset sets among the options its base class declares, batch size or image size,
    is that dataset's recipe, as a strategy's learning rate is). Interpolated values are the config's own."""
    from hydra.utils import get_class

    disagree, compared = [], 0
    for where, target, node in group_nodes():
        if where.endswith("augment") and not where.startswith("conf/data/image_folder"):
            continue  # a dataset's augmentation is its recipe (digits: no flip); image_folder's is the default
        defaults = declared_defaults(get_class(target))
        if target.endswith("ImageFolderDataModule"):  # the generic data config: the base class's defaults too
            defaults = {
                **declared_defaults(get_class("transferlab.data.base.ImageClassificationDataModule")),
                **defaults,
            }
        for key, value in node.items():
            if key.startswith("_") or key not in defaults or (isinstance(value, str) and "${" in value):
                continue
            default = defaults[key]
            if key == "augment" or (default is None and isinstance(value, dict) and not any(value.values())):
                continue  # compared with Augment's fields; subset {train: null, …} is None's "every image"
            compared += 1
            same = list(default) == list(value) if isinstance(default, (tuple, list)) else default == value
            if not same:
                disagree.append(f"{where}: {key}: {value!r} in the config, {default!r} in {target}")
    assert not disagree, "\n".join(disagree)
    assert compared >= 30  # the comparison reached the strategies, schedules, datasets and callbacks
