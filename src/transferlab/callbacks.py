"""Lightning extras: a labelled sample grid in TensorBoard, and checkpoints a kill cannot half-write."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import matplotlib

matplotlib.use("Agg")  # figures are rendered into event files, never shown
import matplotlib.pyplot as plt  # noqa: E402
from lightning.fabric.utilities.seed import seed_everything  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402
from lightning.pytorch.plugins.io import TorchCheckpointIO  # noqa: E402

from transferlab.transforms import denormalize  # noqa: E402


class SampleGrid(Callback):
    """Logs a grid of labelled training images as the model sees them after augmentation
    (the 3×3 grid the notes draw by hand), from the first batch of the first epoch."""

    def __init__(self, rows: int = 3, cols: int = 3) -> None:
        self.rows, self.cols = rows, cols

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        logger = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
        if logger is None or not trainer.is_global_zero or trainer.global_step > 0 or batch_idx > 0:
            return
        datamodule = trainer.datamodule
        images, labels = batch
        count = min(self.rows * self.cols, len(labels))
        pictures = denormalize(images[:count], datamodule.data_config).permute(0, 2, 3, 1).cpu().numpy()
        figure, axes = plt.subplots(self.rows, self.cols, figsize=(2.2 * self.cols, 2.4 * self.rows))
        for axis, index in zip(axes.flat, range(self.rows * self.cols)):
            axis.axis("off")
            if index < count:
                axis.imshow(pictures[index])
                axis.set_title(datamodule.class_names[int(labels[index])], fontsize=10)
        figure.tight_layout()
        logger.experiment.add_figure("train/samples", figure, global_step=0)
        plt.close(figure)


class SeedEachBatch(Callback):
    """Reseed every random generator before each training batch from (seed, epoch, batch),
    so a run resumed from a checkpoint draws the same dropout masks as one that never
    stopped, whatever else (loader start-up, sanity checks) consumed random numbers."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        seed = hash((self.seed, trainer.current_epoch, batch_idx)) & 0x7FFF_FFFF
        seed_everything(seed, workers=True, verbose=False)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file, then rename: a run killed mid-save keeps its previous checkpoint."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        path = Path(path)
        partial = path.with_name(path.name + ".partial")
        super().save_checkpoint(checkpoint, partial, storage_options)
        os.replace(partial, path)
