"""`tune.lr_find=true`: Lightning's learning-rate finder before fit, its suggestion used as optimizer.lr."""

from __future__ import annotations

import logging

import lightning as L
import numpy as np
from lightning.pytorch.tuner import Tuner

from transferlab import internals
from transferlab.callbacks.figures import tensorboard
from transferlab.errors import TransferlabError

log = logging.getLogger(__name__)


def find_learning_rate(
    trainer: L.Trainer,
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    min_lr: float,
    max_lr: float,
    num_training: int,
) -> float:
    """Run the range test (lr growing exponentially from `min_lr` to `max_lr` over `num_training` steps,
    model and optimizer restored afterwards), set its suggestion as the head's learning rate (the base
    every policy scales: hparams.optimizer["lr"]), log the curve to TensorBoard and return it."""
    # update_attr=False: Lightning looks for a top-level `lr` attribute; ours is the optimizer config's.
    # The range test counts steps, not epochs: a short run (few batches, few epochs) must not cut it short.
    max_epochs = internals.require(internals.FIT_LOOP_MAX_EPOCHS, trainer)
    internals.assign(internals.FIT_LOOP_MAX_EPOCHS, trainer, max(max_epochs, num_training))
    try:
        finder = Tuner(trainer).lr_find(
            module, datamodule=datamodule, min_lr=min_lr, max_lr=max_lr, num_training=num_training, update_attr=False
        )
    finally:
        internals.assign(internals.FIT_LOOP_MAX_EPOCHS, trainer, max_epochs)
    suggestion = minimum_over_ten(finder.results) if finder is not None else None
    if suggestion is None:
        raise TransferlabError(
            f"tune.lr_find: the range test from {min_lr:g} to {max_lr:g} over {num_training} steps gave no curve "
            f"to read (it needs more than {SKIP_BEGIN + 1} steps): raise tune.num_training or set optimizer.lr"
        )
    previous = module.hparams.optimizer["lr"]
    module.hparams.optimizer["lr"] = suggestion
    writer = tensorboard(trainer)
    if writer is not None:
        figure = finder.plot(suggest=False)
        figure.axes[0].axvline(suggestion, color="tab:red", linestyle="--", label=f"suggestion {suggestion:.1e}")
        figure.axes[0].legend()
        writer.add_figure("tune/lr_finder", figure, global_step=0)
    log.info("tune.lr_find: optimizer.lr %.2e (the config said %.2e)", suggestion, previous)
    return suggestion


# The first steps' smoothed losses are dominated by the smoothing's start-up (Lightning skips 10 too).
SKIP_BEGIN = 10


def minimum_over_ten(results: dict) -> float | None:
    """fastai's rule: a tenth of the learning rate at the lowest (smoothed) loss, where the loss still falls
    fast and well before it diverges. Lightning's own suggestion, the steepest slope, is fragile: on the
    default experiment it chose 3.6e-5, where the loss was still rising with noise, 400× below the rates
    at which it falls (1e-2 to 1e-1)."""
    lrs, losses = np.asarray(results.get("lr", [])), np.asarray(results.get("loss", []))
    if len(lrs) <= SKIP_BEGIN + 1:
        return None
    lowest = SKIP_BEGIN + int(np.nanargmin(losses[SKIP_BEGIN:]))
    return float(lrs[lowest] / 10)
