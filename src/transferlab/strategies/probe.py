"""How well frozen features already separate the classes: the `auto` strategy's similarity measure.

A linear probe (multinomial logistic regression, cross-validated) on features from
one frozen forward pass. Chosen over LogME and similar scores because its value is
an accuracy a user can read and compare across datasets once chance is removed:
0 means the features carry no class information, 1 means a linear head already
separates the classes perfectly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

# The fewest images of a class the probe uses (all of a smaller class): its cross-validation
# needs 2 per class per fold, and a handful keeps one class from being judged on one image.
PROBE_MIN_PER_CLASS = 5


def probe_sample(
    labels: Sequence[int], max_images: int, seed: int, min_per_class: int = PROBE_MIN_PER_CLASS
) -> np.ndarray:
    """Sorted indices of a seeded, stratified sample of `labels` for the probe: all of them when
    there are at most `max_images`; else `max_images` spread over the classes in proportion, and at
    least `min_per_class` of every class (all of a smaller one), so the probe never sees a few
    classes only, as the first `max_images` of a class-ordered split would show it."""
    labels = np.asarray(labels)
    if len(labels) <= max_images:
        return np.arange(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    quotas = np.minimum(counts, np.maximum(min_per_class, proportional(counts, max_images)))
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(labels == c), size=q, replace=False) for c, q in zip(classes, quotas)]
    return np.sort(np.concatenate(chosen))


def proportional(counts: np.ndarray, total: int) -> np.ndarray:
    """`total` split over `counts` in proportion, whole numbers (largest remainders round up)."""
    exact = counts * total / counts.sum()
    shares = np.floor(exact).astype(int)
    # Ties go to the earlier class (a stable sort), so the shares are the same on every run.
    shares[np.argsort(-(exact - shares), kind="stable")[: total - shares.sum()]] += 1
    return shares


def linear_probe_score(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """Cross-validated probe accuracy rescaled so that chance is 0 and perfect is 1."""
    return float(max(0.0, probe_fold_scores(features, labels, seed).mean()))


def probe_fold_scores(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """The chance-corrected accuracy of each fold (up to 3, stratified) of the probe: standardised
    features, L2 logistic regression. Their mean, floored at 0, is `linear_probe_score`."""
    classes, counts = np.unique(labels, return_counts=True)
    folds = int(min(3, counts.min()))
    if folds < 2:
        raise ValueError("the linear probe needs at least 2 images of every class")
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, C=0.5, random_state=seed))
    accuracy = cross_val_score(probe, features, labels, cv=folds)
    chance = counts.max() / counts.sum()
    return (accuracy - chance) / (1 - chance)
