"""How well frozen features already separate the classes: the `auto` strategy's similarity measure.

A linear probe (multinomial logistic regression, cross-validated) on features from
one frozen forward pass. Chosen over LogME and similar scores because its value is
an accuracy a user can read and compare across datasets once chance is removed:
0 means the features carry no class information, 1 means a linear head already
separates the classes perfectly.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.preprocessing import StandardScaler
from sklearn.pipeline import make_pipeline
from torch.utils.data import DataLoader


@torch.no_grad()
def frozen_features(
    extract: Callable[[torch.Tensor], torch.Tensor], loader: DataLoader, max_images: int | None = None, device: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, labels) of the images `loader` yields, through `extract` (a backbone in eval mode)."""
    features, labels, seen = [], [], 0
    for images, targets in loader:
        features.append(extract(images.to(device)).float().cpu())
        labels.append(targets)
        seen += len(targets)
        if max_images is not None and seen >= max_images:
            break
    return torch.cat(features)[:max_images], torch.cat(labels)[:max_images]


def linear_probe_score(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """Cross-validated probe accuracy rescaled so that chance is 0 and perfect is 1."""
    classes, counts = np.unique(labels, return_counts=True)
    folds = int(min(3, counts.min()))
    if folds < 2:
        raise ValueError("the linear probe needs at least 2 images of every class")
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, C=0.5, random_state=seed))
    accuracy = cross_val_score(probe, features, labels, cv=folds).mean()
    chance = counts.max() / counts.sum()
    return float(max(0.0, (accuracy - chance) / (1 - chance)))
