"""A run's test predictions as a file (`test_predictions.csv`: index, file, label, prediction,
confidence), written by callbacks/predictions.py and read by the report's paired test."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from transferlab.files import atomic

FILE = "test_predictions.csv"
COLUMNS = ("index", "file", "label", "prediction", "confidence")


def write(path: Path, rows: list[tuple[int, int, int, float]], class_names: list[str], images: list) -> None:
    """The CSV, written under a name of its own and renamed into place: never half a file."""
    text = io.StringIO()
    table = csv.writer(text)
    table.writerow(COLUMNS)
    for index, label, guess, sure in rows:
        source = images[index]
        name = str(source) if isinstance(source, (str, Path)) else ""  # arrays (digits, CIFAR) have no file
        table.writerow((index, name, class_names[label], class_names[guess], f"{sure:.4f}"))
    with atomic(path) as partial:
        partial.write_text(text.getvalue())


def read(path: Path) -> dict[int, tuple[str, bool]]:
    """Test index → (file, whether the prediction was right)."""
    with path.open(newline="") as handle:
        return {int(r["index"]): (r["file"], r["label"] == r["prediction"]) for r in csv.DictReader(handle)}
