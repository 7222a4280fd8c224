"""What a run shows in TensorBoard: sample grids, augmentation views, confusion matrices, worst predictions,
and the hparams session with the final metrics."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger, TensorBoardLogger

from transferlab.data.transforms import denormalize
from transferlab.distributed import ranks
from transferlab.review.figures import confusion_figure, image_grid, stratified_indices


def tensorboard(trainer: L.Trainer):
    """The TensorBoard writer on rank 0, or None."""
    logger = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
    return logger.experiment if logger is not None and trainer.is_global_zero else None


def log_training_views(trainer: L.Trainer, tag: str, keys: list[tuple[int, int]], title) -> None:
    """A labelled grid of augmented training images, each key (epoch, index) as that epoch sees it."""
    writer = tensorboard(trainer)
    if writer is None:
        return
    datamodule = trainer.datamodule
    dataset = datamodule.image_dataset("train", augment=True)
    samples = [dataset[key] for key in keys]
    titles = [title(key, datamodule.class_names[label]) for key, (_, label) in zip(keys, samples)]
    images = denormalize(torch.stack([image for image, _ in samples]), datamodule.data_config)
    writer.add_figure(tag, image_grid(images, titles), global_step=0)


def file_name(source: Any) -> str:
    """A test image's file name as a caption's first line (arrays, as digits are, have none)."""
    if isinstance(source, (str, Path)):
        name = Path(source).name
        return (name if len(name) <= 28 else name[:12] + "…" + name[-12:]) + "\n"
    return ""


def summary_text(metrics: dict[str, Any]) -> str:
    """The run's final metrics as a Markdown table (TensorBoard's TEXT tab): a single test/acc point
    is easy to miss among SCALARS, whose "ignore outliers" can hide it."""
    rows = [
        f"| {key} | {value:.4f} |" if isinstance(value, float) else f"| {key} | {value} |"
        for key, value in metrics.items()
    ]
    return "\n".join(["| metric | value |", "|---|---|", *rows])


def log_final_hparams(loggers: Sequence[Logger], hyperparameters: dict[str, Any], metrics: dict[str, float]) -> None:
    """The run's hparams session with its final metrics, then every logger flushed and finalized.

    Lightning has already finalized the loggers after testing: TensorBoard's writer reopens a
    new event file for these events, and only a background thread, which the process does not
    wait for at exit, writes them. Unflushed, the run's last events were lost and its row in
    the HPARAMS tab with them."""
    for logger in loggers:
        # TensorBoard also logs the metrics as scalars: the HPARAMS tab reads their values there.
        logger.log_hyperparams(hyperparameters, metrics)
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_text("summary", summary_text({**hyperparameters, **metrics}), 0)
        logger.finalize("success")  # TensorBoard: flush and close the event file


class SampleGrid(Callback):
    """Logs a grid of labelled training images as the model sees them after augmentation
    in the first epoch (the 3×3 grid the notes draw by hand)."""

    def __init__(self, count: int = 9) -> None:
        self.count = count

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        indices = stratified_indices(trainer.datamodule.splits["train"].labels, self.count)
        log_training_views(trainer, "train/samples", [(0, index) for index in indices], lambda key, name: name)


class EvaluationFigures(Callback):
    """What the notes check by eye: one image in nine augmentations, confusion matrices
    (val every `every_n_epochs` epochs and after the last, test), and the test images the model
    got most confidently wrong. Drawing a figure costs about 0.1 s: every epoch, that was most of
    an epoch on cached features."""

    def __init__(self, worst: int = 9, every_n_epochs: int = 10) -> None:
        self.worst, self.every_n_epochs = worst, every_n_epochs
        self.mistakes: list[tuple[float, int, int, int]] = []  # confidence, test index, true, predicted
        self.latest_val: tuple[int, torch.Tensor] | None = None  # (epoch, confusion matrix) not drawn yet

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Keys (epoch, 0): the augmentations image 0 really gets in epochs 0..8.
        log_training_views(
            trainer,
            "train/augmentation",
            [(epoch, 0) for epoch in range(9)],
            lambda key, name: f"{name} · epoch {key[0]}",
        )

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        matrix = pl_module.val_confusion.compute()  # on every rank: under DDP it gathers from all
        self.latest_val = (trainer.current_epoch, matrix.cpu())
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.draw_latest_val(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.draw_latest_val(trainer)  # the last epoch's, whenever training stopped

    def draw_latest_val(self, trainer: L.Trainer) -> None:
        writer = tensorboard(trainer)
        if writer is None or self.latest_val is None:
            return
        epoch, matrix = self.latest_val
        figure = confusion_figure(matrix, trainer.datamodule.class_names, f"val, epoch {epoch}")
        writer.add_figure("val/confusion_matrix", figure, global_step=epoch)
        self.latest_val = None

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.mistakes = []

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        loader = trainer.test_dataloaders  # unshuffled: the sampler knows each item's test index
        indices = loader.sampler.dataset_indices(batch_idx, loader.batch_size, len(batch[1]))
        confidence, predicted = outputs["probabilities"].max(dim=-1)
        for i in torch.nonzero(predicted != batch[1]).flatten().tolist():
            self.mistakes.append((float(confidence[i]), indices[i], int(batch[1][i]), int(predicted[i])))
        self.mistakes = sorted(self.mistakes, key=lambda m: -m[0])[: self.worst]

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        matrix = pl_module.test_confusion.compute()  # on every rank: under DDP it gathers from all
        if ranks.distributed():
            every_rank: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(every_rank, self.mistakes)
            self.mistakes = sorted((m for ms in every_rank for m in ms), key=lambda m: (-m[0], m[1]))[: self.worst]
        writer = tensorboard(trainer)
        if writer is None:
            return
        datamodule = trainer.datamodule
        names = datamodule.class_names
        writer.add_figure("test/confusion_matrix", confusion_figure(matrix, names, "test"), 0)
        if self.mistakes:
            dataset = datamodule.image_dataset("test", augment=False)
            images = denormalize(torch.stack([dataset[m[1]][0] for m in self.mistakes]), datamodule.data_config)
            sources = datamodule.splits["test"].images
            titles = [
                f"{file_name(sources[i])}true {names[t]}\npred {names[p]} ({c:.0%})" for c, i, t, p in self.mistakes
            ]
            writer.add_figure("test/worst_predictions", image_grid(images, titles), 0)
