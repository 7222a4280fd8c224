"""Use a trained checkpoint: load it with its preprocessing, predict files, export it."""

from __future__ import annotations

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
