"""A callback that sends its own process a real signal at a chosen step (tests/test_stops.py): what Slurm,
Kubernetes or a user's Ctrl-C do from outside, at a step the test can name."""

import os
import signal

import lightning as L


class SignalAt(L.Callback):
    """Sends this process `name` after training batch `batch` of epoch `epoch` (both 0-based)."""

    def __init__(self, epoch: int, batch: int, name: str = "SIGTERM") -> None:
        self.epoch, self.batch, self.name = epoch, batch, name

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
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
