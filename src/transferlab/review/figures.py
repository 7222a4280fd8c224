"""Matplotlib figures for TensorBoard: image grids and confusion matrices.

Built as `matplotlib.figure.Figure` objects, not through pyplot: they are rendered into event files
and PNGs, never shown, so no backend is chosen and nothing global changes (`matplotlib.use` did).
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure


def image_grid(images: torch.Tensor, titles: list[str], cols: int = 3) -> Figure:
    """Images (N, 3, H, W in [0, 1]) with a title each, `cols` per row."""
    rows = max(1, -(-len(images) // cols))
    figure = Figure(figsize=(2.3 * cols, 2.5 * rows))
    axes = figure.subplots(rows, cols, squeeze=False)
    pictures = images.permute(0, 2, 3, 1).cpu().numpy()
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index < len(pictures):
            axis.imshow(pictures[index])
            axis.set_title(titles[index], fontsize=9)
    figure.tight_layout()
    return figure


def stratified_indices(labels: list[int], count: int) -> list[int]:
    """Up to `count` indices taking each class in turn (its first image, then its second, ...): a grid
    of the first images of a sorted folder would show one class only."""
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    picked: list[int] = []
    for rank in range(max((len(v) for v in by_class.values()), default=0)):
        for label in sorted(by_class):
            if rank < len(by_class[label]) and len(picked) < count:
                picked.append(by_class[label][rank])
    return picked


def confusion_figure(matrix: torch.Tensor, class_names: list[str], title: str) -> Figure:
    """Counts (left) and each true class's row as shares of its images (right): rows = true class,
    columns = predicted class. Readable up to 37 classes (Oxford pets): the figure grows with the
    classes, the numbers shrink with them, and shares print as whole percents."""
    counts = matrix.cpu().numpy().astype(np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=float), where=totals > 0)
    classes = len(class_names)
    side = max(4.0, 0.32 * classes + 2.5)
    figure = Figure(figsize=(2 * side, side))
    font = 8 if classes <= 12 else 6 if classes <= 24 else 4.5
    ticks = np.arange(classes)
    for axis, values, caption, text in zip(
        figure.subplots(1, 2),
        (counts, shares),
        ("images", "share of the true class"),
        (lambda v: f"{int(v)}", lambda v: f"{100 * v:.0f}"),
        strict=True,
    ):
        axis.imshow(values, cmap="Blues", vmin=0)
        axis.set_xticks(
            ticks,
            class_names,
            rotation=90 if classes > 12 else 45,
            ha="right" if classes <= 12 else "center",
            fontsize=font + 1,
        )
        axis.set_yticks(ticks, class_names, fontsize=font + 1)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        axis.set_title(f"{title}: {caption}" + (" (%)" if values is shares else ""))
        threshold = values.max() / 2 if values.size else 0
        for (row, col), value in np.ndenumerate(values):
            if value:  # zeros left blank: the mistakes stand out
                axis.text(col, row, text(value), ha="center", va="center", fontsize=font,
                          color="white" if value > threshold else "black")  # fmt: skip
    figure.tight_layout()
    return figure
