"""scheduler=warmup_cosine: the rate at every optimizer step against its closed form, through a real fit,
a phase change and a resume."""

from __future__ import annotations

import math

import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from transferlab.classifier.schedules import WarmupCosine, warmup_cosine_factor
from transferlab.errors import TransferlabError
from transferlab.strategies.policies import FullFinetune, TwoPhase

from test_freeze import LR, build, make_trainer

WARMUP = {"_target_": "transferlab.classifier.schedules.WarmupCosine", "_partial_": True, "warmup_epochs": 1.0}


class StepRates(Callback):
    """Every group's learning rate at every optimizer step, in order."""

    def __init__(self) -> None:
        self.rates: list[list[float]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.rates.append([group["lr"] for group in optimizer.param_groups])


def test_the_factor_rises_linearly_then_follows_a_cosine_to_its_floor():
    # 10 warm-up steps of 110: 0.1, 0.2, ... 1.0; then cos from 1 down to the floor at step 110.
    assert [warmup_cosine_factor(s, 110, 10, 0.0) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert warmup_cosine_factor(10, 110, 10, 0.0) == pytest.approx(1.0)
    assert warmup_cosine_factor(60, 110, 10, 0.0) == pytest.approx(0.5)  # half-way down the cosine
    assert warmup_cosine_factor(60, 110, 10, 0.2) == pytest.approx(0.6)
    assert warmup_cosine_factor(85, 110, 10, 0.0) == pytest.approx((1 + math.cos(math.pi * 0.75)) / 2)
    assert warmup_cosine_factor(110, 110, 10, 0.2) == pytest.approx(0.2)
    assert warmup_cosine_factor(0, 100, 0, 0.0) == pytest.approx(1.0), "no warm-up: the peak at once"


def test_every_step_of_a_fit_runs_at_the_closed_form_rate_and_a_joining_group_follows(colour_folder):
    # Two warm-up epochs: the backbone joins (epoch 1) in the middle of the warm-up.
    module, datamodule = build(colour_folder, scheduler={**WARMUP, "warmup_epochs": 2.0})
    record = StepRates()
    trainer = make_trainer(TwoPhase(head_epochs=1, unfreeze_lr_scale=0.1), 3, record)
    trainer.fit(module, datamodule)

    per_epoch = trainer.num_training_batches
    total = 3 * per_epoch
    assert per_epoch >= 2 and len(record.rates) == total
    expected = [LR * warmup_cosine_factor(step, total, 2 * per_epoch, 0.0) for step in range(total)]
    assert [rates[0] for rates in record.rates] == pytest.approx(expected), "the head, every step"
    assert all(len(rates) == 1 for rates in record.rates[:per_epoch]), "the backbone is frozen in epoch 0"
    # The backbone joins at lr × 0.1 × the schedule's factor, from its very first step (not at the undecayed rate).
    joined = [rates[1] for rates in record.rates[per_epoch:]]
    assert joined == pytest.approx([0.1 * rate for rate in expected[per_epoch:]])
    assert joined[0] < 0.1 * LR, "mid-warm-up: its first step is below its peak"


def test_a_resumed_run_continues_the_schedule_and_matches_an_uninterrupted_run(colour_folder, tmp_path):
    every_epoch = ModelCheckpoint(dirpath=tmp_path, filename="e{epoch}", save_top_k=-1, auto_insert_metric_name=False)
    whole, datamodule = build(colour_folder, scheduler=WARMUP)
    uninterrupted = StepRates()
    make_trainer(FullFinetune(), 3, every_epoch, uninterrupted, checkpointing=True).fit(whole, datamodule)

    resumed, datamodule = build(colour_folder, scheduler=WARMUP)
    after = StepRates()
    trainer = make_trainer(FullFinetune(), 3, after, checkpointing=True, default_root_dir=tmp_path / "b")
    trainer.fit(resumed, datamodule, ckpt_path=tmp_path / "e0.ckpt")

    flat = lambda rates: [rate for step in rates for rate in step]  # noqa: E731
    assert flat(after.rates) == pytest.approx(flat(uninterrupted.rates[-len(after.rates) :]))
    assert len(after.rates) == 2 * trainer.num_training_batches, "epochs 1 and 2 ran, no more"
    for (name, expected), actual in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(expected, actual, atol=1e-6), name


def test_the_warm_up_counts_steps_of_an_epoch_when_max_steps_ends_the_run(colour_folder):
    # max_epochs=-1, max_steps=N: the warm-up is still one epoch of steps, and the cosine ends at step N.
    module, datamodule = build(colour_folder, scheduler=WARMUP)
    record = StepRates()
    trainer = make_trainer(FullFinetune(), -1, record, max_steps=5)
    trainer.fit(module, datamodule)
    per_epoch = trainer.num_training_batches
    assert per_epoch < 5 and len(record.rates) == 5
    expected = [LR * warmup_cosine_factor(step, 5, per_epoch, 0.0) for step in range(5)]
    assert [rates[0] for rates in record.rates] == pytest.approx(expected)


def test_a_step_budget_in_the_scheduler_config_is_one_clear_error(colour_folder):
    module, datamodule = build(colour_folder, scheduler={**WARMUP, "total_steps": 500})
    with pytest.raises(TransferlabError, match=r"scheduler.total_steps: the run sets it from its own step budget"):
        make_trainer(FullFinetune(), 2).fit(module, datamodule)


def test_a_per_step_schedule_without_an_epoch_budget_is_one_clear_error(colour_folder):
    module, datamodule = build(colour_folder, scheduler=WARMUP)
    with pytest.raises(TransferlabError, match=r"per-step schedule needs a step budget; set trainer.max_epochs"):
        make_trainer(FullFinetune(), -1).fit(module, datamodule)


def test_for_fixed_groups_it_equals_torchs_linear_warm_up_then_cosine():
    """On groups that never change, WarmupCosine gives torch's SequentialLR(LinearLR, CosineAnnealingLR) at
    every step; it is kept for the groups that join mid-run (tests above), which torch's cannot place."""
    total, warmup, floor = 40, 5, 0.1

    def optimizer() -> torch.optim.Optimizer:
        groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in (0.1, 0.01)]
        return torch.optim.SGD(groups)

    ours_optimizer, torch_optimizer = optimizer(), optimizer()
    ours = WarmupCosine(
        ours_optimizer, total_steps=total, steps_per_epoch=warmup, warmup_epochs=1.0, min_lr_ratio=floor
    )
    reference = torch.optim.lr_scheduler.SequentialLR(
        torch_optimizer,
        [
            torch.optim.lr_scheduler.LinearLR(torch_optimizer, 1 / warmup, 1.0, total_iters=warmup - 1),
            torch.optim.lr_scheduler.CosineAnnealingLR(torch_optimizer, T_max=total - warmup, eta_min=0.0),
        ],
        milestones=[warmup],
    )
    # CosineAnnealingLR has one eta_min for every group; ours a floor proportional to each group's peak.
    # With two groups that differ tenfold, compare the shape with eta_min 0 and the floor separately.
    ours_zero_optimizer = optimizer()
    ours_zero = WarmupCosine(ours_zero_optimizer, total, warmup, warmup_epochs=1.0, min_lr_ratio=0.0)
    for step in range(total):
        assert [g["lr"] for g in ours_zero_optimizer.param_groups] == pytest.approx(
            [g["lr"] for g in torch_optimizer.param_groups], abs=1e-9
        ), step
        peaks = [0.1, 0.01]
        factor = warmup_cosine_factor(step, total, warmup, floor)
        assert [g["lr"] for g in ours_optimizer.param_groups] == pytest.approx([p * factor for p in peaks], abs=1e-12)
        for stepping in (ours_optimizer, ours_zero_optimizer, torch_optimizer):
            stepping.step()
        ours.step(), ours_zero.step(), reference.step()
