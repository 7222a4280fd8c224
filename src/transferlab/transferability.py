"""How well frozen features already separate the classes: the `auto` strategy's similarity measure.

A linear probe (multinomial logistic regression, cross-validated) on features from
one frozen forward pass. Chosen over LogME and similar scores because its value is
an accuracy a user can read and compare across datasets once chance is removed:
0 means the features carry no class information, 1 means a linear head already
separates the classes perfectly.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.preprocessing import StandardScaler
from sklearn.pipeline import make_pipeline
from torch import nn
from torch.utils.data import DataLoader


@torch.no_grad()
def frozen_features(backbone: nn.Module, loader: DataLoader, max_images: int) -> tuple[np.ndarray, np.ndarray]:
    was_training = backbone.training
    backbone.eval()
    features, labels, seen = [], [], 0
    device = next(backbone.parameters()).device
    for images, targets in loader:
        features.append(backbone(images.to(device)).float().cpu())
        labels.append(targets)
        seen += len(targets)
        if seen >= max_images:
            break
    backbone.train(was_training)
    return torch.cat(features)[:max_images].numpy(), torch.cat(labels)[:max_images].numpy()


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
