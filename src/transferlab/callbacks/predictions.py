"""Every test image's label, prediction and confidence in the run directory (`test_predictions.csv`):
what the sweep report pairs two runs on (McNemar's test), image by image."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from transferlab.distributed import ranks
from transferlab.review import predictions


class TestPredictions(Callback):
    def __init__(self) -> None:
        self.rows: list[tuple[int, int, int, float]] = []  # test index, label, prediction, confidence

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.rows = []

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        loader = trainer.test_dataloaders
        indices = loader.sampler.dataset_indices(batch_idx, loader.batch_size, len(batch[1]))
        confidence, predicted = outputs["probabilities"].max(dim=-1)
        self.rows += zip(indices, batch[1].tolist(), predicted.tolist(), confidence.tolist())

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if ranks.distributed():
            every_rank: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(every_rank, self.rows)
            self.rows = [row for rows in every_rank for row in rows]
        if trainer.is_global_zero:
            datamodule = trainer.datamodule
            predictions.write(
                Path(trainer.default_root_dir) / predictions.FILE,
                sorted(self.rows),
                datamodule.class_names,
                datamodule.splits["test"].images,
            )
