"""A callback that sends its own process a real signal at a chosen step (tests/test_stops.py): what Slurm,
Kubernetes or a user's Ctrl-C do from outside, at a step the test can name."""

import os
import signal

import lightning as L


class SignalAt(L.Callback):
    """Sends this process `name` after training batch `batch` of epoch `epoch` (both 0-based), or with
    stage="test" after test batch `batch`; with a `marker` file, only the first time (a resumed run keeps
    its callbacks, and would be stopped again where nothing of it is left to skip)."""

    def __init__(self, epoch: int, batch: int, name: str = "SIGTERM", stage: str = "train", marker: str = "") -> None:
        self.epoch, self.batch, self.name, self.stage, self.marker = epoch, batch, name, stage, marker

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.stage == "train" and trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), getattr(signal, self.name))

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.stage == "test" and batch_idx == self.batch and not (self.marker and os.path.exists(self.marker)):
            if self.marker:
                open(self.marker, "w").close()
            os.kill(os.getpid(), getattr(signal, self.name))


class FailOnce(L.Callback):
    """Raises what a lost GPU or worker raises, the first time only (a marker file remembers): a
    transient failure that `sweep.retries` is for."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def on_train_start(self, trainer, pl_module) -> None:
        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            raise RuntimeError("CUDA error: out of memory (simulated)")
