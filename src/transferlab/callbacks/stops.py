"""How a run stops before its end, and what it leaves: a signal (preemption, Ctrl-C) or a diverged loss.

- `StopSignals`: SIGTERM (what Slurm and Kubernetes send before they kill; Lightning notices it and
  stops after the current step), SIGUSR1 (Slurm's warning signal; noticed here, the same way) and
  Ctrl-C stop the run at a step boundary and save `last.ckpt` there, with the position in the epoch
  (the training loader's state), so that `resume=<run dir>` continues with the next batch of the
  same epoch and the run ends as one that was never stopped. The pipeline then writes metrics.json
  with `status: interrupted` and the resume command, and the process exits 143 (SIGTERM), 138
  (SIGUSR1) or 130 (Ctrl-C): never 0. Under Slurm with Lightning's auto-requeue, SIGUSR1 is
  Lightning's (it requeues the job), not ours.
- `StopOnDivergence`: a non-finite training loss, or an epoch's loss above `max_loss_ratio` × the smaller
  of the first epoch's and ln(classes) (the loss of a uniform guess: a run that diverges from its first
  step has no sane first epoch to compare with), stops the run (`Diverged`): metrics.json says
  `status: diverged`, where, and the last checkpoint whose weights are all finite.
- `EarlyStopping`: Lightning's, kept stopped when a run that it stopped is resumed.
"""

from __future__ import annotations

import logging
import math
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.callbacks import EarlyStopping as LightningEarlyStopping
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

EXIT_STATUS = {"SIGTERM": 128 + signal.SIGTERM, "SIGUSR1": 128 + signal.SIGUSR1, "Ctrl-C": 130}


class SignalStop(Exception):
    """Raised at a step boundary after SIGUSR1 (SIGTERM: Lightning raises its own SIGTERMException)."""


@dataclass
class Stopped:
    """Where a signal stopped the run, and the checkpoint saved there (None: none could be written)."""

    cause: str  # SIGTERM, SIGUSR1 or Ctrl-C
    epoch: int
    step: int
    checkpoint: Path | None
    stage: str = "fit"  # or "test": training had finished, the test did not

    @property
    def exit_status(self) -> int:
        return EXIT_STATUS[self.cause]


class StopSignals(Callback):
    def __init__(self, dirpath: str, filename: str = "last") -> None:
        self.path = Path(dirpath) / f"{filename}.ckpt"
        self.stopped: Stopped | None = None
        self._usr1 = False
        self._previous: Any = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.stopped, self._usr1 = None, False
        current = signal.getsignal(signal.SIGUSR1)
        if current in (signal.SIG_DFL, signal.SIG_IGN, None):  # Lightning's Slurm requeue handler stays
            self._previous = current
            signal.signal(signal.SIGUSR1, self._note_usr1)

    def _note_usr1(self, signum: int, frame: Any) -> None:
        self._usr1 = True  # acted on at the next step boundary: never in the middle of a step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self._usr1:
            raise SignalStop("SIGUSR1")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        cause = (
            "SIGTERM"
            if isinstance(exception, SIGTERMException)
            else "SIGUSR1"
            if isinstance(exception, SignalStop)
            else "Ctrl-C"
            if isinstance(exception, KeyboardInterrupt)
            else None
        )
        if cause is not None and trainer.testing:
            self.stopped = Stopped(cause, trainer.current_epoch, trainer.global_step, None, stage="test")
        if cause is None or not trainer.training:
            return
        saved: Path | None = self.path
        try:
            trainer.save_checkpoint(
                self.path, weights_only=False
            )  # atomic (AtomicCheckpointIO): a second kill keeps the old one
        except Exception as error:  # noqa: BLE001 - a full disk must not hide the stop itself
            log.error("could not save %s (%s): resume from the last epoch checkpoint instead", self.path, error)
            saved = self.path if self.path.is_file() else None
        self.stopped = Stopped(cause, trainer.current_epoch, trainer.global_step, saved)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGUSR1, self._previous)
            self._previous = None


class EarlyStopping(LightningEarlyStopping):
    """Lightning's, and a run resumed after it stopped early stays stopped. Lightning restores the
    callback's counters but not the loop's stop, so the resumed fit (a test a signal interrupted, or
    a sweep continued) would train on from the next epoch and could choose another best.ckpt."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.stopped_epoch > 0:
            trainer.should_stop = True


class Diverged(Exception):
    """The training loss became non-finite, or grew past the allowed multiple of the first epoch's."""

    def __init__(self, reason: str, epoch: int, step: int) -> None:
        super().__init__(reason)
        self.reason, self.epoch, self.step = reason, epoch, step


class StopOnDivergence(Callback):
    """Checks every step's loss for a non-finite value and every epoch's mean loss against the first.

    The step check stays on the device: each step folds its loss into a flag there (the first bad step
    and its loss), and the host reads the flag every `trainer.log_every_n_steps` steps and at the epoch's
    last batch, before validation (under DDP one all-reduce then, not one a step). A read is a host sync:
    on a GPU, one a step would stall the queue of kernels each step (benchmarks/host_syncs.py counts them)."""

    def __init__(self, max_loss_ratio: float | None = 100.0) -> None:
        self.max_loss_ratio = max_loss_ratio
        self.first_epoch_loss: float | None = None
        self.bad_step: torch.Tensor | None = None  # on the loss's device: the first non-finite step, or -1
        self.bad_loss: torch.Tensor | None = None  # and its loss

    def state_dict(self) -> dict[str, Any]:
        return {"first_epoch_loss": self.first_epoch_loss}  # a resumed run compares with the same epoch

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.first_epoch_loss = state_dict.get("first_epoch_loss")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        loss = loss.detach()
        if self.bad_step is None or self.bad_step.device != loss.device:
            self.bad_step = torch.full((), -1, dtype=torch.long, device=loss.device)
            self.bad_loss = torch.zeros((), dtype=torch.float32, device=loss.device)
        first = ~torch.isfinite(loss).all() & (self.bad_step < 0)  # no sync: a tensor, not a bool
        self.bad_step = torch.where(first, trainer.global_step, self.bad_step)
        self.bad_loss = torch.where(first, loss.float().reshape(-1)[0], self.bad_loss)
        last_batch = batch_idx + 1 >= trainer.num_training_batches
        if last_batch or trainer.global_step % max(trainer.log_every_n_steps, 1) == 0:
            self.check_steps(trainer)

    def check_steps(self, trainer: L.Trainer) -> None:
        """Raise Diverged if a step since the last check had a non-finite loss (on any rank)."""
        bad = (self.bad_step >= 0).float()
        if trainer.world_size > 1:  # every rank checks at the same steps, and stops together
            bad = trainer.strategy.reduce(bad, reduce_op="max")
        if bad.item():
            mine = int(self.bad_step.item()) >= 0  # another rank's loss may be the non-finite one
            step = int(self.bad_step.item()) if mine else trainer.global_step
            loss = float(self.bad_loss.item()) if mine else float("nan")
            raise Diverged(f"the training loss is {loss}", trainer.current_epoch, step)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get("train/loss")
        if value is None or self.max_loss_ratio is None:
            return
        loss = float(value)
        if self.first_epoch_loss is None:
            self.first_epoch_loss = loss
        uniform = math.log(max(pl_module.hparams.get("num_classes", 2), 2))
        reference, what = min((self.first_epoch_loss, "the first epoch's"), (uniform, "a uniform guess's"))
        if math.isfinite(loss) and loss > self.max_loss_ratio * reference:
            raise Diverged(
                f"the epoch's training loss {loss:.4g} is over {self.max_loss_ratio:g}× {what} {reference:.4g}",
                trainer.current_epoch,
                trainer.global_step,
            )


def finite_checkpoint(*paths: Path) -> Path | None:
    """The first of `paths` that exists and whose weights are all finite."""
    for path in paths:
        if not path.is_file():
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        except Exception:  # noqa: BLE001 - a damaged file is no checkpoint to go back to
            continue
        if all(torch.isfinite(t).all() for t in state.values() if torch.is_floating_point(t)):
            return path
    return None
