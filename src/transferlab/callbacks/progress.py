"""One line per epoch in the console and train.log, written above the progress bar while one is live.

`EpochLine` (conf/callbacks/default.yaml) logs through the `transferlab` logger, so Hydra's job logging
puts it on the console and in the run's train.log:
    epoch 2/2  train loss 0.713 acc 0.796  val loss 0.512 acc 0.864  lr 1.5e-03  2.2 s
"""

from __future__ import annotations

import logging
import math
import sys
import time

import lightning as L

from transferlab import internals
from transferlab.console import Progress

log = logging.getLogger(__name__)


class _Current:
    """Writes to whatever sys.stdout (or sys.stderr) is at the time: while Rich's progress bar is
    live, that is Rich's proxy, which prints a line above the bar instead of into it."""

    def __init__(self, name: str) -> None:
        self.name = name

    def write(self, text: str) -> int:
        return getattr(sys, self.name).write(text)

    def flush(self) -> None:
        getattr(sys, self.name).flush()


def log_lines_above_the_bar() -> None:
    """Point the console handlers (Hydra's job logging, Lightning's own) at the current stdout or
    stderr. They hold the stream they were configured with, so without this a line logged while the
    bar is live lands inside the bar's line and the bar redraws below it."""
    for name in ("", "lightning.pytorch", "lightning.fabric"):
        for handler in logging.getLogger(name).handlers:
            if type(handler) is logging.StreamHandler:  # not FileHandler (train.log), a subclass
                for stream in ("stdout", "stderr"):
                    if handler.stream is getattr(sys, stream):
                        handler.setStream(_Current(stream))


class EpochLine(L.Callback):
    """One line per training epoch, after its validation: loss and accuracy, learning rate, seconds.

    The values are the epoch's own: validation runs before `on_train_epoch_end` (Lightning 2.x, when
    it runs every epoch), and an epoch without validation shows none rather than an older one. The
    learning rate is the first parameter group's (the head's), as it was during the epoch.
    """

    def __init__(self) -> None:
        self._started = 0.0
        self._lr: float | None = None
        self._validated = False
        # Within a long epoch (or the test): a line every tenth of its batches, for logs and pipes.
        self._batches: Progress | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.progress_bar_callback is not None:
            log_lines_above_the_bar()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        first, last = trainer.current_epoch + 1, trainer.max_epochs
        if last is None or last < 0:
            span = f"training until step {trainer.max_steps}"
        else:
            # Inside an epoch only when a signal's checkpoint stopped it there (an epoch-end one says all).
            done = internals.require(internals.EPOCH_BATCH_PROGRESS, trainer).current.completed
            inside = done if 0 < done < trainer.num_training_batches else 0
            if first == 1 and not inside:
                span = f"training {last} epoch{'s' * (last != 1)}"
                # How a strategy that counts epochs its own way splits them ("fastai's fine_tune(4): 1 frozen + 4").
                plans = [plan for c in trainer.callbacks if (plan := getattr(c, "epoch_plan", lambda: "")())]
                span += f" ({plans[0]})" if plans else ""
            else:
                span = f"resuming at epoch {first} of {last}" + (f", after its batch {inside}" if inside else "")
        # A run resumed mid-epoch (a signal's checkpoint) starts inside an epoch: no on_train_epoch_start.
        self._started = time.perf_counter()
        optimizers = trainer.optimizers
        self._lr = optimizers[0].param_groups[0]["lr"] if optimizers and optimizers[0].param_groups else None
        device = str(trainer.strategy.root_device)
        if trainer.world_size > 1:
            device = f"{trainer.world_size} processes ({trainer.strategy.root_device.type})"
        log.info("%s on %s; run directory %s", span, device, trainer.default_root_dir)

    def _count(self, trainer: L.Trainer, what: str, batches) -> None:
        total = sum(batches) if isinstance(batches, list) else batches
        usable = trainer.is_global_zero and math.isfinite(total)
        # bar=False: Lightning draws its own bar on a terminal.
        self._batches = Progress(what, int(total), "batches", log, bar=False) if usable else None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        if self._batches is not None:
            self._batches.update()

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._count(trainer, "test", trainer.num_test_batches)

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        if self._batches is not None:
            self._batches.update()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        self._count(trainer, f"epoch {trainer.current_epoch + 1}{total}", trainer.num_training_batches)
        self._started, self._validated = time.perf_counter(), False
        optimizers = trainer.optimizers
        self._lr = optimizers[0].param_groups[0]["lr"] if optimizers and optimizers[0].param_groups else None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated = True

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            log.info("%s", self.line(trainer))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Why the run ended before trainer.max_epochs, when early stopping ended it."""
        stopper = trainer.early_stopping_callback
        if trainer.is_global_zero and stopper is not None and stopper.stopped_epoch > 0:
            log.info(
                "early stopping after epoch %d: %s has not improved for %d epochs (best %.4f)",
                stopper.stopped_epoch + 1,
                stopper.monitor,
                stopper.wait_count,
                float(stopper.best_score),
            )

    def line(self, trainer: L.Trainer) -> str:
        metrics = trainer.callback_metrics

        def pair(split: str) -> str:
            values = [
                f"{name} {float(metrics[f'{split}/{name}']):.3f}"
                for name in ("loss", "acc")
                if f"{split}/{name}" in metrics
            ]
            return f"{split} {' '.join(values)}" if values else ""

        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        parts = [
            f"epoch {trainer.current_epoch + 1}" + (f"/{total}" if total else ""),
            pair("train"),
            pair("val") if self._validated else "",
            f"lr {self._lr:.1e}" if self._lr is not None else "",
            f"{time.perf_counter() - self._started:.1f} s",
        ]
        return "  ".join(part for part in parts if part)
