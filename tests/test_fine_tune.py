"""strategy=fastai_fine_tune follows fastai's fine_tune: two one-cycle phases, halved and spread rates after unfreezing."""

from __future__ import annotations

import math

import pytest
from lightning.pytorch.callbacks import Callback
from omegaconf import open_dict

from transferlab.errors import TransferlabError
from transferlab.run import build
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


def test_the_schedule_of_each_phase_and_the_rates_of_the_unfrozen_blocks(colour_folder, tmp_path):
    cfg = compose_config(
        [
            *TINY,
            f"data.root={colour_folder}",
            "model=small_cnn",
            "model.pretrained=false",
            "strategy=fastai_fine_tune",
            "trainer.max_epochs=3",
            "feature_cache.enabled=false",
        ],
        tmp_path,
    )
    with open_dict(cfg):
        cfg.callbacks.rates = {"_target_": "test_fine_tune.StepRates"}
    base = cfg.optimizer.lr  # the strategy's recipe
    train(cfg)
    steps = StepRates.instances[-1].steps
    frozen = [s for s in steps if s[0] == 0]
    unfrozen = [s for s in steps if s[0] > 0]
    assert all(len(lrs) == 1 for _, lrs, _ in frozen), "the head alone while frozen"
    assert frozen[0][1][0] == pytest.approx(base / 25) and frozen[0][2] == pytest.approx(0.95)
    assert max(lrs[0] for _, lrs, _ in frozen) <= base
    peak = max(unfrozen, key=lambda s: s[1][0])
    head, *blocks = peak[1]
    assert len(blocks) == 4 and head <= base / 2 and unfrozen[0][1][0] == pytest.approx(base / 2 / 5)
    # The blocks join stem first: stem at head / 100, each block above it a constant factor higher.
    ratios = [blocks[i + 1] / blocks[i] for i in range(3)]
    assert blocks[0] == pytest.approx(head / 100) and blocks[3] == pytest.approx(head)
    assert ratios == pytest.approx([100 ** (1 / 3)] * 3)
    # Step k of the n unfrozen steps sits at k / n of the phase's one-cycle course, from the first to the last.
    expected = [base / 2 * one_cycle(k / len(unfrozen), 0.3, 5.0, 1e5)[0] for k in range(len(unfrozen))]
    assert [lrs[0] for _, lrs, _ in unfrozen] == pytest.approx(expected)
    assert unfrozen[-1][1][0] < base / 2 / 5, "annealing below the phase's starting rate by the last step"


def test_a_scheduler_beside_its_own_schedule_is_one_clear_error(tmp_path):
    cfg = compose_config(["strategy=fastai_fine_tune", "scheduler=cosine"], tmp_path)
    with pytest.raises(TransferlabError, match="strategy=fastai_fine_tune sets the learning rate at every step"):
        build.policy(cfg)
