"""tune.lr_find=true: Lightning's range test, read with fastai's minimum/10 rule, used as optimizer.lr."""

from __future__ import annotations

import json

import numpy as np
import pytest
from lightning.pytorch.callbacks import Callback

from transferlab.run.lr_finder import SKIP_BEGIN, minimum_over_ten
from transferlab.run.pipeline import train

from conftest import TINY, compose_config


def test_a_tenth_of_the_rate_at_the_lowest_loss_after_the_start_up():
    lrs = np.logspace(-6, 0, 40)
    losses = np.concatenate([[0.5], np.linspace(2.3, 0.4, 30), np.linspace(0.5, 3.0, 9)])  # a spurious low start
    lowest = SKIP_BEGIN + int(np.argmin(losses[SKIP_BEGIN:]))
    assert minimum_over_ten({"lr": lrs, "loss": losses}) == pytest.approx(lrs[lowest] / 10)
    assert lowest == 30, "the first, start-up point is not the minimum"
    assert minimum_over_ten({"lr": lrs[:SKIP_BEGIN], "loss": losses[:SKIP_BEGIN]}) is None


class FirstStepRates(Callback):
    """The optimizer's learning rates at the run's first training step (after the range test)."""

    seen: list[list[float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == 0 and batch_idx == 0:
            FirstStepRates.seen.append([group["lr"] for group in trainer.optimizers[0].param_groups])


def test_the_run_trains_at_the_found_rate_and_reports_it(colour_folder, tmp_path):
    overrides = [
        *TINY,
        f"data.root={colour_folder}",
        "model=small_cnn",
        "strategy=scratch",
        "tune.lr_find=true",
        "tune.num_training=40",
        "trainer.max_epochs=1",
    ]
    cfg = compose_config(
        [*overrides, "scheduler=none", "+callbacks.first_rates._target_=test_lr_finder.FirstStepRates"], tmp_path
    )
    FirstStepRates.seen.clear()
    metrics = train(cfg)
    found = json.loads((tmp_path / "metrics.json").read_text())["tune/lr"]
    assert found == metrics["tune/lr"] and 1e-6 / 10 <= found <= 1.0 / 10
    assert found != cfg.optimizer.lr, "the config's rate was replaced"
    # The fit's own optimizer (not the range test's, which starts at min_lr) steps at the found rate:
    # scratch trains every block at the head's rate, and scheduler=none leaves the rates as they start.
    (rates,) = FirstStepRates.seen
    assert len(rates) > 1 and rates == pytest.approx([found] * len(rates))
    assert metrics["epochs"] == 1, "the range test's 40 steps did not change the run's own epoch budget"
