"""Use a trained checkpoint: load it with its preprocessing, predict files (src/predict.py), write the CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from transferlab.classifier.module import ImageClassifier
from transferlab.data.folder import IMAGE_SUFFIXES
from transferlab.data.scan import problem_with
from transferlab.data.transforms import build_transforms
from transferlab.errors import TransferlabError
from transferlab.images import load_rgb
from transferlab.models.data_config import DataConfig
from transferlab.models.weights import read_checkpoint


def load_classifier(checkpoint: str | Path) -> ImageClassifier:
    read_checkpoint(checkpoint, "ckpt")  # missing, cut short or foreign (and no code in it): one clear error
    return ImageClassifier.load_from_checkpoint(checkpoint, map_location="cpu").eval()


def data_config_of(model: ImageClassifier) -> DataConfig:
    saved = model.hparams.data_config
    if not saved:
        raise TransferlabError("this checkpoint does not record its preprocessing (data_config)")
    return DataConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})


def image_files(inputs: str | Path) -> list[Path]:
    path = Path(inputs)
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    raise TransferlabError(f"inputs={path}: no such file or folder")


@torch.no_grad()
def predict(model: ImageClassifier, files: list[Path], top_k: int = 3, batch_size: int = 32) -> list[dict]:
    """One row per file: the top-k classes with probabilities, or the reason it could not be read."""
    transform = build_transforms(data_config_of(model), train=False)
    names = model.hparams.class_names or [str(i) for i in range(model.hparams.num_classes)]
    k = min(top_k, len(names))
    rows: list[dict] = []
    readable: list[tuple[dict, torch.Tensor]] = []
    for path in files:
        row = {"path": str(path)}
        rows.append(row)
        problem = problem_with(path)
        if problem:
            row["error"] = problem
        else:
            readable.append((row, transform(load_rgb(path))))
    for start in range(0, len(readable), batch_size):
        chunk = readable[start : start + batch_size]
        probabilities = model(torch.stack([image for _, image in chunk])).softmax(dim=-1)
        values, indices = probabilities.topk(k, dim=-1)
        for (row, _), top_values, top_indices in zip(chunk, values.tolist(), indices.tolist()):
            row["top"] = [(names[i], p) for i, p in zip(top_indices, top_values)]
    return rows


def predict_checkpoint(
    checkpoint: str | Path, inputs: str | Path, top_k: int = 3, csv_path: str | Path | None = None
) -> list[dict]:
    """`predict` for a checkpoint file and an image or a folder of images, `top_k` checked before anything
    is loaded; the rows are also written to `csv_path` when one is given."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise TransferlabError(f"top_k={top_k!r}: expected an integer ≥ 1")
    rows = predict(load_classifier(checkpoint), image_files(inputs), top_k=top_k)
    if csv_path:
        write_csv(rows, top_k, csv_path)
    return rows


def row_line(row: dict) -> str:
    """A row as printed: the path, then the top classes with their probabilities, or ERROR and the reason."""
    shown = row.get("error") or ", ".join(f"{name} {p:.3f}" for name, p in row["top"])
    return f"{row['path']}\t{'ERROR ' if 'error' in row else ''}{shown}"


def write_csv(rows: list[dict], top_k: int, path: str | Path) -> None:
    """One line per file: path, class_1, probability_1, … class_k, probability_k, error."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        ranks = range(1, top_k + 1)
        writer.writerow(["path", *(f"{kind}_{rank}" for rank in ranks for kind in ("class", "probability")), "error"])
        for row in rows:
            ranked = [value for name, p in row.get("top", []) for value in (name, f"{p:.6f}")]
            writer.writerow([row["path"], *ranked, *([""] * (2 * top_k - len(ranked))), row.get("error", "")])
