"""Per-batch reseeding: a resumed run draws the same random numbers as one that never stopped."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from transferlab.stable_hash import seed_of


class SeedEachBatch(Callback):
    """Reseed torch's random generators before each training batch from (seed, epoch, batch),
    so a run resumed from a checkpoint draws the same dropout masks as one that never
    stopped, whatever else (loader start-up, sanity checks) consumed random numbers.
    Under DDP the rank joins the key: otherwise every rank would draw the same masks for
    its share of the batch (sample i of each share dropped alike).

    Only torch's generators: a training step draws from nothing else (augmentation is keyed by
    (seed, epoch, index) in the dataset, with generators of its own). And only the CUDA generators
    once CUDA is in use: `torch.manual_seed` (and seed_everything) also queue a lazy reseed of every
    uninitialised accelerator, recording a stack trace each time: 15 ms per epoch of cached features."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        key = (self.seed, trainer.current_epoch, batch_idx)
        seed = seed_of(*key) if trainer.world_size == 1 else seed_of(*key, trainer.global_rank)
        torch.default_generator.manual_seed(seed)
        if torch.cuda.is_initialized():
            torch.cuda.manual_seed_all(seed)
