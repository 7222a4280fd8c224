"""strategy=fastai_fine_tune follows fastai's fine_tune: two one-cycle phases, halved and spread rates after unfreezing."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import open_dict

from transferlab.errors import TransferlabError
from transferlab.run import build
from transferlab.run.checks import check_config
from transferlab.run.pipeline import train
from transferlab.strategies.fastai import one_cycle

from conftest import TINY, compose_config


def test_one_cycle_matches_fastais_combined_cosines():
    assert one_cycle(0.0, 0.3, 5.0, 1e5) == pytest.approx((1 / 5, 0.95))
    assert one_cycle(0.3, 0.3, 5.0, 1e5) == pytest.approx((1.0, 0.85))
    assert one_cycle(1.0, 0.3, 5.0, 1e5) == pytest.approx((1e-5, 0.95))
    halfway_up = one_cycle(0.15, 0.3, 5.0, 1e5)[0]
    assert halfway_up == pytest.approx(1.0 + (0.2 - 1.0) / 2 * (1 + math.cos(math.pi / 2)))  # cosine, not linear


class StepRates(Callback):
    """(epoch, group learning rates, β1) of every training step, read after the policy set them."""

    instances: list[StepRates] = []

    def __init__(self) -> None:
        self.steps: list[tuple[int, list[float], float]] = []
        StepRates.instances.append(self)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        groups = optimizer.param_groups
        self.steps.append((trainer.current_epoch, [g["lr"] for g in groups], groups[0]["betas"][0]))


def fine_tune_config(colour_folder, tmp_path, *extra: str):
    """small_cnn (BatchNorm in each of its 4 blocks) under fine_tune(2): 1 frozen epoch + 2, step rates recorded."""
    cfg = compose_config(
        [
            *TINY,
            f"data.root={colour_folder}",
            "model=small_cnn",
            "model.pretrained=false",
            "strategy=fastai_fine_tune",
            "strategy.epochs=2",
            "trainer.max_epochs=3",  # TINY sets it; 1 + 2, as the strategy requires
            "feature_cache.enabled=false",
            *extra,
        ],
        tmp_path,
    )
    with open_dict(cfg):
        cfg.callbacks.rates = {"_target_": "test_fine_tune.StepRates"}
    return cfg


def test_the_schedule_of_each_phase_and_the_rates_of_the_unfrozen_blocks(colour_folder, tmp_path, caplog):
    cfg = fine_tune_config(colour_folder, tmp_path)
    base = cfg.optimizer.lr  # the strategy's recipe
    with caplog.at_level(logging.INFO):
        train(cfg)
    assert "training 3 epochs (fastai's fine_tune(2): 1 frozen + 2) on cpu" in caplog.text
    # One line for the unfreezing, not one per block.
    assert "epoch 1: the body's 4 blocks join the optimizer" in caplog.text
    assert "parameters join the optimizer at lr" not in caplog.text
    steps = StepRates.instances[-1].steps
    frozen = [s for s in steps if s[0] == 0]
    unfrozen = [s for s in steps if s[0] > 0]
    # While frozen: the head (its weights, then its bias without weight decay, at one rate), and each block's
    # BatchNorm at a tenth of its rate (fastai's slice(base_lr)).
    assert all(len(lrs) == 6 for _, lrs, _ in frozen), "the head's 2 groups and 4 blocks' BatchNorm while frozen"
    assert all(lrs[1] == lrs[0] for _, lrs, _ in frozen)
    assert all(bn == pytest.approx(lrs[0] / 10) for _, lrs, _ in frozen for bn in lrs[2:])
    assert frozen[0][1][0] == pytest.approx(base / 25) and frozen[0][2] == pytest.approx(0.95)
    assert max(lrs[0] for _, lrs, _ in frozen) <= base
    peak = max(unfrozen, key=lambda s: s[1][0])
    # After unfreezing: the head's 2 groups, the 4 BatchNorm groups, then the rest of each block (joined stem first).
    head, _, *bns = peak[1][:6]
    blocks = peak[1][6:]
    assert len(blocks) == 4 and head <= base / 2 and unfrozen[0][1][0] == pytest.approx(base / 2 / 5)
    assert bns == pytest.approx(blocks), "a block's BatchNorm moves at its block's rate once it is unfrozen"
    # The blocks join stem first: stem at head / 100, each block above it a constant factor higher.
    ratios = [blocks[i + 1] / blocks[i] for i in range(3)]
    assert blocks[0] == pytest.approx(head / 100) and blocks[3] == pytest.approx(head)
    assert ratios == pytest.approx([100 ** (1 / 3)] * 3)
    # Step k of the n unfrozen steps sits at k / n of the phase's one-cycle course, from the first to the last.
    expected = [base / 2 * one_cycle(k / len(unfrozen), 0.3, 5.0, 1e5)[0] for k in range(len(unfrozen))]
    assert [lrs[0] for _, lrs, _ in unfrozen] == pytest.approx(expected)
    assert unfrozen[-1][1][0] < base / 2 / 5, "annealing below the phase's starting rate by the last step"


class FrozenEpoch(Callback):
    """The body's parameters and BatchNorm statistics before and after the frozen epoch."""

    instances: list[FrozenEpoch] = []

    def __init__(self) -> None:
        self.before: dict[str, torch.Tensor] = {}
        self.after: dict[str, torch.Tensor] = {}
        self.modes: list[bool] = []
        FrozenEpoch.instances.append(self)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 0:
            self.before = {k: v.clone() for k, v in pl_module.backbone.state_dict().items()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == 0:
            self.modes.append(pl_module.backbone.training)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 0:
            self.after = {k: v.clone() for k, v in pl_module.backbone.state_dict().items()}


@pytest.mark.parametrize("train_bn", [True, False])
def test_the_frozen_epoch_trains_the_bodys_batchnorm_alone_as_fastais_train_bn(train_bn, colour_folder, tmp_path):
    cfg = fine_tune_config(colour_folder, tmp_path, f"strategy.train_bn={str(train_bn).lower()}")
    with open_dict(cfg):
        cfg.callbacks.frozen = {"_target_": "test_fine_tune.FrozenEpoch"}
    train(cfg)
    seen = FrozenEpoch.instances[-1]
    norms = {n for n, m in build.experiment(cfg).module.backbone.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    changed = {k for k in seen.before if not torch.equal(seen.before[k], seen.after[k])}
    of_norms = {k for k in seen.before if k.rsplit(".", 1)[0] in norms and "num_batches" not in k}
    if train_bn:
        # Weights, biases and running statistics of every BatchNorm; no convolution moves.
        assert {k for k in changed if "num_batches" not in k} == of_norms and seen.modes and all(seen.modes)
    else:
        assert changed == set() and not any(seen.modes), "held in inference mode, as every other policy"


def test_norm_weights_and_biases_get_no_weight_decay_as_fastais_wd_bn_bias(colour_folder, tmp_path):
    cfg = fine_tune_config(colour_folder, tmp_path, "head.hidden=16", "optimizer=adamw")
    run = build.experiment(cfg)
    run.policy.freeze_before_training(run.module)
    head = run.module.head
    norms = {id(p) for layer in head if isinstance(layer, torch.nn.BatchNorm1d) for p in layer.parameters()}
    decayed, spared, *blocks = run.policy.param_groups(run.module, 1e-3)
    assert {id(p) for p in decayed["params"]} == {
        id(layer.weight) for layer in head if isinstance(layer, torch.nn.Linear)
    }
    assert {id(p) for p in spared["params"]} == norms and spared["weight_decay"] == 0.0 and spared["lr"] == 1e-3
    assert blocks and all(group["weight_decay"] == 0.0 for group in blocks)  # the body's BatchNorm (train_bn)
    # A run saved before the option (its class default) decays every head parameter, as it did.
    run.policy.wd_bn_bias = True
    assert len(run.policy.param_groups(run.module, 1e-3)[0]["params"]) == len(list(head.parameters()))


def test_train_bn_trains_layernorm_too_as_fastais_norm_types(tmp_path):
    from transferlab.models import create_backbone
    from transferlab.strategies.fastai import FastaiFineTune

    class Module(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = create_backbone("timm/convnext_atto", pretrained=False)

    module = Module()
    FastaiFineTune(epochs=1, train_bn=True).freeze_before_training(module)
    trainable = {n.rsplit(".", 1)[0] for n, p in module.backbone.named_parameters() if p.requires_grad}
    norms = {n for n, m in module.backbone.named_modules() if isinstance(m, torch.nn.LayerNorm)}
    assert norms and trainable == norms  # every LayerNorm, nothing else (convolutions and MLPs stay frozen)


def test_epochs_count_as_fastais_fine_tune(tmp_path):
    cfg = compose_config(["recipe=fastai_fine_tune", "strategy.epochs=3"], tmp_path)
    assert cfg.trainer.max_epochs == 4, "fine_tune(3): 1 frozen epoch + 3"
    assert compose_config(["recipe=fastai_fine_tune"], tmp_path).trainer.max_epochs == 5  # fine_tune(4)
    assert compose_config(["strategy=fastai_fine_tune", "strategy.freeze_epochs=2"], tmp_path).trainer.max_epochs == 11
    with pytest.raises(TransferlabError) as error:
        check_config(compose_config(["recipe=fastai_fine_tune", "trainer.max_epochs=3"], tmp_path))
    assert str(error.value) == (
        "trainer.max_epochs=3: strategy=fastai_fine_tune counts epochs as fastai's fine_tune(N) does, 1 frozen + N: "
        "set strategy.epochs=N instead (now 4, so 5 epochs in all), and trainer.max_epochs follows"
    )


def test_the_recipes_head_is_fastais_create_head(tmp_path):
    from transferlab.classifier.module import make_head

    head = make_head(1280, 10, dropout=0.5, hidden=512)
    kinds = [type(layer).__name__ for layer in head]
    assert kinds == ["HeadBatchNorm", "Dropout", "Linear", "ReLU", "HeadBatchNorm", "Dropout", "Linear"]
    assert isinstance(head[0], torch.nn.BatchNorm1d)
    # A last training batch of one image (64k + 1 images) trains on, where nn.BatchNorm1d raises.
    assert head.train()(torch.randn(1, 1280)).shape == (1, 10)
    assert [head[1].p, head[5].p] == [0.25, 0.5] and head[2].bias is None and head[6].bias is None
    assert (head[2].in_features, head[2].out_features, head[6].out_features) == (1280, 512, 10)
    # Kaiming normal (fastai's apply_init): std sqrt(2 / fan_in), against PyTorch's uniform default.
    assert head[2].weight.std().item() == pytest.approx(math.sqrt(2 / 1280), rel=0.05)
    recipe = compose_config(["recipe=fastai_fine_tune"], tmp_path)
    assert (recipe.head.hidden, recipe.head.dropout, recipe.optimizer.eps) == (512, 0.5, 1e-5)
    plain = make_head(1280, 10, dropout=0.2)
    assert [type(layer).__name__ for layer in plain] == ["Dropout", "Linear"]


def test_the_keras_guides_head_starts_as_a_keras_dense_and_its_rotations_mirror_the_corners(tmp_path):
    from transferlab.classifier.module import make_head

    torch.manual_seed(0)
    dense = make_head(1280, 10, dropout=0.2, init="glorot")[1]
    bound = math.sqrt(6 / (1280 + 10))  # Glorot uniform: U(-b, b), std b / sqrt(3)
    assert dense.weight.abs().max().item() <= bound and dense.weight.abs().max().item() > 0.99 * bound
    assert dense.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    assert torch.count_nonzero(dense.bias) == 0
    torch.manual_seed(0)
    linear = make_head(1280, 10, dropout=0.2)[1]  # nn.Linear's own: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert linear.weight.abs().max().item() <= 1 / math.sqrt(1280) < 0.5 * bound
    assert torch.count_nonzero(linear.bias) == 10
    recipe = compose_config(["recipe=keras_guide"], tmp_path)
    assert (recipe.head.init, recipe.data.augment.rotation_fill, recipe.data.augment.rotation) == (
        "glorot",
        "reflect",
        36,
    )
    assert compose_config([], tmp_path).head.init == "torch"
    with pytest.raises(TransferlabError, match="data.augment.rotation_fill"):
        check_config(compose_config(["data.augment.rotation_fill=mirror"], tmp_path))


def test_a_scheduler_beside_its_own_schedule_is_one_clear_error(tmp_path):
    cfg = compose_config(["strategy=fastai_fine_tune", "scheduler=cosine"], tmp_path)
    with pytest.raises(TransferlabError, match="strategy=fastai_fine_tune sets the learning rate at every step"):
        build.policy(cfg)


def test_avgmax_pooling_is_the_average_and_the_max_side_by_side():
    from transferlab.models import create_backbone
    from transferlab.models.pooling import AvgMaxPool2d

    plain = create_backbone("small_cnn", pretrained=False)
    concat = create_backbone("small_cnn", pretrained=False, pool="avgmax")
    concat.load_state_dict(plain.state_dict())  # no weights of its own
    seen = {}
    pool = next(m for m in concat.modules() if isinstance(m, AvgMaxPool2d))
    pool.register_forward_hook(lambda module, args, out: seen.update(maps=args[0]))
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        average, both = plain.eval()(images), concat.eval()(images)
    assert concat.num_features == 2 * plain.num_features == both.shape[1]
    assert torch.allclose(both[:, : plain.num_features], average, atol=1e-6)
    assert torch.equal(both[:, plain.num_features :], seen["maps"].amax(dim=(2, 3)))
    lite = create_backbone("efficientnet_lite0", pretrained=False, pool="avgmax")  # timm's catavgmax
    assert lite.num_features == 2560 and lite.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 2560)


def test_avgmax_on_a_backbone_that_cannot_take_it_is_one_clear_error():
    from transferlab.models import create_backbone

    with pytest.raises(TransferlabError, match="^head.pool=avgmax: vgg11 has no global average pooling module"):
        create_backbone("vgg11", pretrained=False, pool="avgmax")


def test_a_checkpoint_with_fastais_head_reloads_into_the_same_network(colour_folder, tmp_path):
    from transferlab.classifier.module import ImageClassifier

    cfg = fine_tune_config(colour_folder, tmp_path, "head.hidden=16", "head.pool=avgmax", "head.dropout=0.5")
    metrics = train(cfg)
    reloaded = ImageClassifier.load_from_checkpoint(metrics["best_checkpoint"], map_location="cpu").eval()
    assert reloaded.backbone.num_features == 2 * 256 and reloaded.head[2].out_features == 16  # strict load: all keys
    state = torch.load(metrics["best_checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    assert all(torch.equal(reloaded.state_dict()[k], v) for k, v in state.items())
    assert reloaded(torch.zeros(2, 3, 32, 32)).shape == (2, 3)
