"""Checkpoints a kill cannot half-write, and a last.ckpt that does not cost cheap epochs a rewrite each."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from transferlab.errors import TransferlabError
from transferlab.files import atomic
from transferlab.models.weights import first_line


class LastCheckpoint(ModelCheckpoint):
    """last.ckpt, what `resume=` continues from: at the end of an epoch when `every_s` seconds have
    passed since the last one was written, and always after the final epoch (max_epochs, or early
    stopping). A kill loses at most `every_s` seconds of training, and cheap epochs (cached features,
    about 0.1 s) stop paying 30 ms each to rewrite the whole model. every_s=0: every epoch."""

    def __init__(self, every_s: float = 30.0, **options: Any) -> None:
        super().__init__(**options)
        self.every_s = every_s
        self.written_at: float | None = None  # monotonic time of this process's last write
        self.seen_mtime: int | None = None

    def due(self, trainer: L.Trainer) -> bool:
        final = trainer.should_stop or (
            trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs
        )
        return final or self.written_at is None or time.monotonic() - self.written_at >= self.every_s

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.due(trainer):
            super().on_train_epoch_end(trainer, pl_module)
            self.note_write()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.due(trainer):
            super().on_validation_end(trainer, pl_module)
            self.note_write()

    def note_write(self) -> None:
        """Lightning writes in one of the two hooks, depending on the validation schedule: the file tells which."""
        path = Path(self.dirpath or ".") / f"{self.filename}{self.FILE_EXTENSION}"
        mtime = path.stat().st_mtime_ns if path.is_file() else None
        if mtime is not None and mtime != self.seen_mtime:
            self.seen_mtime, self.written_at = mtime, time.monotonic()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file, then rename: a run killed mid-save keeps its previous checkpoint."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        path = Path(path)
        try:
            with atomic(path) as partial:  # no half file left behind, the previous checkpoint kept
                super().save_checkpoint(checkpoint, partial, storage_options)
        except (OSError, RuntimeError) as error:  # torch.save says "file write failed" for a full disk
            raise TransferlabError(
                f"could not write the checkpoint {path} ({first_line(error)}): is the disk full or read-only? "
                "Free space there, or write runs elsewhere (paths.log_dir=… or TRANSFERLAB_OUTPUTS)"
            ) from None
