"""strategy=auto: the notes' decision table (data size × similarity to the pretraining) chooses a strategy.

It decides before the run's model is built (run/decide.py): it measures (a) labelled training images
per class and (b) how close the data is to the backbone's pretraining, the chance-corrected accuracy of
a linear probe on one frozen forward pass (probe.py), then:

    |                           | similar (b ≥ similar)             | different               |
    |---------------------------|-----------------------------------|-------------------------|
    | few images                | head_only                         | top_blocks (n = top_n)  |
    | many (a ≥ many_per_class) | full_finetune (backbone lr × 0.1) | full_finetune (same lr) |

`decision_table` is that table, the one rule that both this strategy and the backbone screen apply.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from transferlab.caches.features import frozen_features
from transferlab.errors import TransferlabError
from transferlab.options import check
from transferlab.strategies.probe import linear_probe_score, probe_sample

log = logging.getLogger(__name__)


def decision_table(
    images_per_class: float, similarity: float, many_per_class: float, similar: float, top_n: int, blocks: int
) -> tuple[str, dict[str, float | int | bool]]:
    """The strategy the notes' table gives, and the options it trains with (conf/strategy/<name>.yaml's keys)."""
    if images_per_class >= many_per_class:
        return "full_finetune", {"backbone_lr_scale": 0.1 if similarity >= similar else 1.0}
    if similarity >= similar:
        return "head_only", {}
    return "top_blocks", {"n": min(top_n, blocks), "reinit": False, "backbone_lr_scale": 1.0}


@dataclass(frozen=True)
class Decision:
    strategy: str  # the strategy= the run trains with
    options: dict  # its options, over the strategy's config
    report: dict = field(default_factory=dict)  # what was measured, for metrics.json (auto/…)


@dataclass(frozen=True)
class Auto:
    """The thresholds of the decision table and the probe's sample size (conf/strategy/auto.yaml)."""

    many_per_class: int = 100
    similar: float = 0.7
    top_n: int = 2
    max_images: int = 2000
    name = "auto"

    def __post_init__(self) -> None:
        for key in ("many_per_class", "similar", "top_n", "max_images"):
            check(f"strategy.{key}", getattr(self, key))

    def decide(
        self,
        features: Callable[[torch.Tensor], torch.Tensor],
        datamodule,
        blocks: int,
        device: torch.device | str = "cpu",
    ) -> Decision:
        """Probe `datamodule`'s training split through `features` (a frozen backbone in eval mode) and
        apply the table; `blocks` bounds top_blocks' n."""
        labels = datamodule.splits["train"].labels
        per_class = len(labels) / datamodule.num_classes
        check_probe_classes(labels, datamodule.class_names)
        probe_features, probe_labels = self.probe_features(features, datamodule, device)
        similarity = linear_probe_score(probe_features.numpy(), probe_labels.numpy(), seed=datamodule.seed)
        strategy, options = decision_table(per_class, similarity, self.many_per_class, self.similar, self.top_n, blocks)
        counts = np.bincount(probe_labels.numpy(), minlength=datamodule.num_classes)
        report = {
            "auto/images_per_class": round(per_class, 1),
            "auto/probe_images": int(counts.sum()),
            "auto/probe_min_per_class": int(counts.min()),
            "auto/similarity": round(similarity, 4),
            "auto/many_per_class": self.many_per_class,
            "auto/similar": self.similar,
            "auto/choice": strategy,
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
            "many" if per_class >= self.many_per_class else "few",
            self.many_per_class,
            similarity,
            "similar" if similarity >= self.similar else "different",
            self.similar,
            strategy,
        )
        return Decision(strategy, options, report)

    def probe_features(self, features, datamodule, device) -> tuple[torch.Tensor, torch.Tensor]:
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
        return frozen_features(features, loader, device=device)


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
