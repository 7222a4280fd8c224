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


def confusion_figure(matrix: torch.Tensor, class_names: list[str], title: str) -> Figure:
    """Counts, rows = true class, columns = predicted class."""
    counts = matrix.cpu().numpy()
    size = max(4.0, 0.45 * len(class_names) + 2)
    figure = Figure(figsize=(size, size))
    axis = figure.subplots()
    axis.imshow(counts, cmap="Blues")
    ticks = np.arange(len(class_names))
    axis.set_xticks(ticks, class_names, rotation=45, ha="right", fontsize=8)
    axis.set_yticks(ticks, class_names, fontsize=8)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    if len(class_names) <= 20:
        threshold = counts.max() / 2 if counts.size else 0
        for (row, col), value in np.ndenumerate(counts):
            axis.text(
                col,
                row,
                int(value),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if value > threshold else "black",
            )
    figure.tight_layout()
    return figure
