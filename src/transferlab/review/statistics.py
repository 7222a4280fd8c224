"""How sure a sweep's comparison is: intervals for a test accuracy and a paired test of two runs.

- `wilson`: the 95 % Wilson score interval of one run's accuracy on n test images (Wilson 1927); unlike
  the normal approximation it stays inside [0, 1] and is honest near 100 %.
- `seed_interval`: mean ± standard deviation over a recipe's seeds, and the 95 % Student-t interval of
  the mean.
- `mcnemar`: the exact McNemar test of two runs on the same test images: only the images exactly one
  of them gets right count, which is what a difference of two accuracies on shared images rests on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats


def wilson(correct: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of `correct` out of `total` (scipy's, without continuity correction)."""
    if total <= 0:
        raise ValueError("wilson: no test images")
    interval = stats.binomtest(int(correct), int(total)).proportion_ci(confidence_level=confidence, method="wilson")
    return max(0.0, float(interval.low)), min(1.0, float(interval.high))


@dataclass(frozen=True)
class SeedSummary:
    mean: float
    std: float  # sample standard deviation (n - 1)
    low: float
    high: float


def seed_interval(values: Sequence[float]) -> SeedSummary:
    """Mean, standard deviation and the 95 % t interval of the mean of two or more seeds' values."""
    if len(values) < 2:
        raise ValueError("seed_interval: needs two or more seeds")
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)
    return SeedSummary(mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class Paired:
    only_first: int  # images only the first run gets right
    only_second: int
    p_value: float

    def words(self, first: str, second: str) -> str:
        counts = f"{first} alone right on {self.only_first} test images, {second} alone on {self.only_second}"
        if self.p_value < 0.05:
            better = first if self.only_first > self.only_second else second
            verdict = f"a real difference, in favour of {better} (exact McNemar p < 0.05)"
        else:
            verdict = "which chance alone could give (exact McNemar p ≥ 0.05): the test set cannot tell them apart"
        return f"{counts}; p = {self.p_value:.3g}, {verdict}"


def mcnemar(first_right: Sequence[bool], second_right: Sequence[bool]) -> Paired:
    """The exact (binomial) McNemar test on two runs' per-image right/wrong over the same images."""
    if len(first_right) != len(second_right):
        raise ValueError("mcnemar: the runs were tested on different numbers of images")
    only_first = sum(a and not b for a, b in zip(first_right, second_right, strict=True))
    only_second = sum(b and not a for a, b in zip(first_right, second_right, strict=True))
    discordant = only_first + only_second
    p_value = 1.0 if discordant == 0 else stats.binomtest(min(only_first, only_second), discordant, 0.5).pvalue
    return Paired(only_first, only_second, float(min(1.0, p_value)))
