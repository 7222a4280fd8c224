"""strategy=auto: the notes' decision table (data size × similarity to the pretraining) as a strategy."""

from __future__ import annotations

import logging

import lightning as L
import numpy as np
import torch
from torch.optim import Optimizer
from torch.utils.data import DataLoader, Subset

from transferlab.caches.features import frozen_features
from transferlab.distributed import ranks
from transferlab.errors import TransferlabError
from transferlab.strategies.base import FreezePolicy
from transferlab.strategies.policies import FullFinetune, HeadOnly, TopBlocks
from transferlab.strategies.probe import linear_probe_score, probe_sample

log = logging.getLogger(__name__)


class Auto(FreezePolicy):
    """The notes' decision table as a strategy. It measures (a) labelled training images per
    class and (b) how close the data is to the backbone's pretraining: the chance-corrected
    accuracy of a linear probe on one frozen forward pass (`transferability.py`), then:

    |              | similar (b ≥ similar)  | different                 |
    |--------------|------------------------|---------------------------|
    | few images   | head_only              | top_blocks (n = top_n)    |
    | many (a ≥ many_per_class) | full_finetune (backbone lr × 0.1) | full_finetune (same lr) |
    """

    name = "auto"
    decides_from_data = True

    def __init__(self, many_per_class: int = 100, similar: float = 0.7, top_n: int = 2, max_images: int = 2000) -> None:
        super().__init__()
        if max_images < 1:
            raise TransferlabError(
                f"strategy.max_images={max_images}: choose how many training images the linear probe may use (default 2000)"
            )
        self.many_per_class, self.similar, self.top_n, self.max_images = many_per_class, similar, top_n, max_images
        self.chosen: FreezePolicy | None = None
        self.decision: dict[str, float | str] = {}

    @property
    def frozen_backbone_epochs(self) -> int | None:
        # Known once decided: run.train decides before the feature cache, so head_only uses it.
        return self.chosen.frozen_backbone_epochs if self.chosen is not None else 0

    def prepare(self, pl_module: L.LightningModule, datamodule: L.LightningDataModule) -> None:
        if self.chosen is None:
            self.decide(pl_module, datamodule)

    def report(self) -> dict[str, float | str]:
        return self.decision

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        if self.chosen is None:  # decided once; testing re-runs this setup
            self.decide(pl_module, pl_module.trainer.datamodule)
        ranks.check_same_on_every_rank("strategy=auto's choice", self.chosen.name)
        self.chosen.freeze_before_training(pl_module)
        self.inference_mode = self.chosen.inference_mode

    def decide(self, pl_module: L.LightningModule, datamodule: L.LightningDataModule) -> None:
        labels = datamodule.splits["train"].labels
        per_class = len(labels) / datamodule.num_classes
        check_probe_classes(labels, datamodule.class_names)
        features, probe_labels = self.probe_features(pl_module, datamodule)
        similarity = linear_probe_score(features.numpy(), probe_labels.numpy(), seed=datamodule.seed)
        many, similar = per_class >= self.many_per_class, similarity >= self.similar
        if many:
            self.chosen = FullFinetune(backbone_lr_scale=0.1 if similar else 1.0)
        elif similar:
            self.chosen = HeadOnly()
        else:
            self.chosen = TopBlocks(n=min(self.top_n, len(pl_module.backbone.blocks)))
        counts = np.bincount(probe_labels.numpy(), minlength=datamodule.num_classes)
        self.decision = {
            "auto/images_per_class": round(per_class, 1),
            "auto/probe_images": int(counts.sum()),
            "auto/probe_min_per_class": int(counts.min()),
            "auto/similarity": round(similarity, 4),
            "auto/many_per_class": self.many_per_class,
            "auto/similar": self.similar,
            "auto/choice": self.chosen.name,
        }
        log.info(
            "strategy=auto: linear probe on %d of %d training images (seed %d; per class: %s)",
            counts.sum(),
            len(labels),
            datamodule.seed,
            per_class_text(datamodule.class_names, counts),
        )
        log.info(
            "strategy=auto: %.1f images per class (%s ≥ %d), similarity %.3f (%s ≥ %.2f) → %s",
            per_class,
            "many" if many else "few",
            self.many_per_class,
            similarity,
            "similar" if similar else "different",
            self.similar,
            self.chosen.name,
        )

    def probe_features(
        self, pl_module: L.LightningModule, datamodule: L.LightningDataModule
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen features of a seeded, stratified sample of the training split (its evaluation
        transform), chosen by index: a split stored class by class has every class in it."""
        indices = probe_sample(datamodule.splits["train"].labels, self.max_images, datamodule.seed)
        images = Subset(datamodule.image_dataset("train", augment=False), indices.tolist())
        loader = DataLoader(
            images,
            batch_size=datamodule.batch_size,
            num_workers=datamodule.num_workers,
            pin_memory=datamodule.pin_memory,
        )
        pl_module.backbone.eval()
        return frozen_features(pl_module.features, loader, device=pl_module.device)

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        self.chosen.finetune_function(pl_module, epoch, optimizer)


def check_probe_classes(labels: list[int], class_names: list[str]) -> None:
    """The probe tells classes apart by cross-validation: 2 classes, 2 training images of each."""
    counts = np.bincount(labels, minlength=len(class_names))
    if len(class_names) < 2:
        raise TransferlabError(
            "strategy=auto needs at least 2 classes to measure similarity (choose another strategy=)"
        )
    if counts.min() < 2:
        name = class_names[int(counts.argmin())]
        raise TransferlabError(
            f"strategy=auto: class {name!r} has {counts.min()} training image(s); its linear probe needs at least 2 "
            f"of every class (add images, or choose strategy=head_only, top_blocks or full_finetune)"
        )


def per_class_text(class_names: list[str], counts: np.ndarray, listed: int = 10) -> str:
    """'ants 120, bees 121', or a range for many classes (the log stays one line)."""
    if len(class_names) <= listed:
        return ", ".join(f"{name} {count}" for name, count in zip(class_names, counts))
    return f"{counts.min()}–{counts.max()} in each of {len(class_names)} classes"
