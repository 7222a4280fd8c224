"""ImageClassifier: any backbone plus a separate head, trained by Lightning.

It knows nothing of freeze policies: it builds its optimizer from the parameter
groups it is given (`param_groups(module, base_lr)`, a freeze policy's), by
default the trainable parameters, one group per block, all at the base lr.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)
from torchmetrics.wrappers import ClasswiseWrapper

from transferlab import internals
from transferlab.caches.features import FeatureBatch
from transferlab.classifier.metrics import StepMean
from transferlab.classifier.schedules import build_scheduler
from transferlab.models.backbones import Backbone, create_backbone
from transferlab.models.weights import PACKAGED_LITE, check_packaged_arch, packaged_lite_arch


def architecture_only(model: dict) -> dict:
    """The model spec with its weight source removed: the checkpoint's state dict holds the weights."""
    return {**model, "pretrained": False, "weights": None}


class HeadBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d that takes a training batch of one image (a split of 64k + 1 images ends with one) by
    normalising it with the running statistics, where nn.BatchNorm1d raises; fastai drops such a batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


def make_head(
    num_features: int, num_classes: int, dropout: float, hidden: int | None = None, init: str = "torch"
) -> nn.Sequential:
    """The new classifier on the backbone's pooled features: Dropout → Linear; with `hidden`, fastai's
    `create_head` (BatchNorm → Dropout(p/2) → Linear → ReLU → BatchNorm → Dropout(p) → Linear, no biases
    before a BatchNorm, Kaiming-normal weights as fastai's `apply_init`). fastai's concat pooling, which
    comes before it, is the backbone's (head.pool=avgmax, models/pooling.py). `init="glorot"`: every
    Linear as a Keras Dense starts, Glorot-uniform weights and zero biases."""
    if hidden is None:
        head = nn.Sequential(nn.Dropout(dropout), nn.Linear(num_features, num_classes))
    else:
        head = fastai_head(num_features, num_classes, dropout, hidden)
    if init == "glorot":
        for layer in head:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)
    return head


def fastai_head(num_features: int, num_classes: int, dropout: float, hidden: int) -> nn.Sequential:
    head = nn.Sequential(
        HeadBatchNorm(num_features),
        nn.Dropout(dropout / 2),
        nn.Linear(num_features, hidden, bias=False),
        nn.ReLU(inplace=True),
        HeadBatchNorm(hidden),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes, bias=False),
    )
    for layer in head:
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_normal_(layer.weight)
    return head


def describe_head(head: nn.Sequential) -> str:
    """One line for the head's layers, e.g. "Dropout → Linear"."""
    return " → ".join(type(layer).__name__ for layer in head)


class ImageClassifier(L.LightningModule):
    def __init__(
        self,
        model: dict,
        num_classes: int,
        optimizer: dict,
        scheduler: dict | None = None,
        class_names: list[str] | None = None,
        data_config: dict | None = None,
        dropout: float = 0.2,
        head_hidden: int | None = None,
        head_init: str = "torch",
        channels_last: bool = True,
        backbone: Backbone | None = None,
        param_groups: Callable[[nn.Module, float], list[dict[str, Any]]] | None = None,
        class_weights: list[float] | None = None,
    ) -> None:
        """model: the backbone spec (name, pretrained, weights); optimizer/scheduler: Hydra
        `_partial_` configs. `backbone` is the already built backbone when training starts;
        without it (``load_from_checkpoint``) the architecture is rebuilt with no download.
        `class_weights`: the loss's weight of each class (loss.class_weight=balanced), None: equal.
        `head_hidden`: None for Dropout → Linear, a width for fastai's two-layer head (`make_head`);
        `head_init`: "torch" (nn.Linear's own, or fastai's for its head) or "glorot" (Keras' Dense)."""
        super().__init__()
        self.save_hyperparameters(ignore=["backbone", "param_groups"], logger=False)
        self.make_param_groups = param_groups or block_param_groups
        self.backbone = backbone if backbone is not None else create_backbone(**architecture_only(model))
        self.head = make_head(self.backbone.num_features, num_classes, dropout, head_hidden, head_init)
        # Inception v3's auxiliary classifier, when the model spec asks for one (aux_weight > 0).
        self.aux_head = nn.Linear(self.backbone.aux_features, num_classes) if self.backbone.aux_features else None
        if channels_last:
            # NHWC convolutions: 1.5× the images/s of NCHW for efficientnet_lite0 on a 2-core CPU
            # (benchmarks/channels_last.py), and the layout tensor cores want on a GPU.
            self.to(memory_format=torch.channels_last)

        # validate_args=False: the checks call torch.unique on the labels, a device sync every step.
        checked = {"validate_args": False}
        self.train_acc = MulticlassAccuracy(num_classes, average="micro", **checked)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro", **checked)
        self.test_acc = MulticlassAccuracy(num_classes, average="micro", **checked)
        self.train_loss, self.val_loss, self.test_loss = StepMean(), MeanMetric(), MeanMetric()
        # For imbalanced data: the mean of the per-class recalls, and macro F1 (selectable as `monitor`).
        self.val_balanced_acc = MulticlassAccuracy(num_classes, average="macro", **checked)
        self.test_balanced_acc = MulticlassAccuracy(num_classes, average="macro", **checked)
        self.val_macro_f1 = MulticlassF1Score(num_classes, average="macro", **checked)
        self.test_macro_f1 = MulticlassF1Score(num_classes, average="macro", **checked)
        # Not persistent: checkpoints of runs without weights load as they did.
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", weights, persistent=False)
        self.val_acc_best = MaxMetric()
        # Saved in checkpoints so a resumed run reports the same best accuracy.
        self.val_acc_best.persistent(True)
        # For the figures and the per-class report (callbacks.EvaluationFigures, metrics.json).
        self.val_confusion = MulticlassConfusionMatrix(num_classes, **checked)
        self.test_confusion = MulticlassConfusionMatrix(num_classes, **checked)
        # Per class, as `test/<metric>/<class name>` (a "/" in a name would nest a TensorBoard tag).
        names = [name.replace("/", "_") for name in class_names or [str(i) for i in range(num_classes)]]
        self.test_per_class = MetricCollection(
            {
                name: ClasswiseWrapper(
                    metric(num_classes, average=None, **checked), labels=names, prefix=f"test/{name}/"
                )
                for name, metric in (
                    ("precision", MulticlassPrecision),
                    ("recall", MulticlassRecall),
                    ("f1", MulticlassF1Score),
                )
            }
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._logits(images)[0]

    def features(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The backbone's pooled features (plus auxiliary ones for Inception v3 in train mode)."""
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.backbone(images)

    def _logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Class logits of images, and auxiliary logits when the backbone gives auxiliary features (train mode)."""
        features = self.features(images)
        if isinstance(features, tuple):
            features, aux = features
            return self.head(features), self.aux_head(aux)
        return self.head(features), None

    def _batch_logits(self, batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits of a batch of images, or of cached features (no auxiliary logits: the backbone is frozen)."""
        if isinstance(batch, FeatureBatch):
            return self.head(batch.features), None
        return self._logits(batch[0])

    def _step(
        self, batch, loss_metric: MeanMetric, acc_metric: MulticlassAccuracy
    ) -> tuple[torch.Tensor, torch.Tensor]:
        labels = batch[1]
        logits, aux_logits = self._batch_logits(batch)
        loss = F.cross_entropy(logits, labels, weight=self.class_weights)
        loss_metric(loss, weight=labels.numel())  # per image: a short last batch (or a rank's share) counts less
        if aux_logits is not None:  # Inception v3: the auxiliary loss helps training, not the metric
            loss = loss + self.backbone.aux_weight * F.cross_entropy(aux_logits, labels, weight=self.class_weights)
        acc_metric(logits, labels)
        return loss, logits

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, _ = self._step(batch, self.train_loss, self.train_acc)
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_confusion.reset()

    def validation_step(self, batch, batch_idx: int) -> None:
        _, logits = self._step(batch, self.val_loss, self.val_acc)
        self.val_confusion.update(logits, batch[1])
        self.val_balanced_acc.update(logits, batch[1])
        self.val_macro_f1.update(logits, batch[1])
        self.log("val/loss", self.val_loss, on_epoch=True, prog_bar=True)
        self.log("val/acc", self.val_acc, on_epoch=True, prog_bar=True)
        self.log("val/balanced_acc", self.val_balanced_acc, on_epoch=True)
        self.log("val/macro_f1", self.val_macro_f1, on_epoch=True)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True, prog_bar=True)

    def on_test_epoch_start(self) -> None:
        self.test_confusion.reset()
        self.test_per_class.reset()

    def test_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        _, logits = self._step(batch, self.test_loss, self.test_acc)
        self.test_confusion.update(logits, batch[1])
        self.test_per_class.update(logits, batch[1])
        self.test_balanced_acc.update(logits, batch[1])
        self.test_macro_f1.update(logits, batch[1])
        self.log("test/loss", self.test_loss, on_epoch=True)
        self.log("test/acc", self.test_acc, on_epoch=True)
        self.log("test/balanced_acc", self.test_balanced_acc, on_epoch=True)
        self.log("test/macro_f1", self.test_macro_f1, on_epoch=True)
        return {"probabilities": logits.softmax(dim=-1)}

    def on_test_epoch_end(self) -> None:
        """Per-class precision, recall and F1."""
        self.log_dict(self.test_per_class.compute())

    def on_train_epoch_start(self) -> None:
        # Like Keras' model.summary(); logged each epoch because a policy may unfreeze mid-run.
        trainable, total = count_parameters(self)
        self.log("model/params/trainable", float(trainable))
        self.log("model/params/frozen", float(total - trainable))

    def configure_optimizers(self):
        optimizer = instantiate(self.hparams.optimizer)(self.make_param_groups(self, self.hparams.optimizer["lr"]))
        if not self.hparams.scheduler:
            return optimizer
        scheduler, interval = build_scheduler(self.hparams.scheduler, optimizer, self.step_budget)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}

    def step_budget(self) -> tuple[float, int]:
        """(optimizer steps of the whole run, optimizer steps an epoch), for a per-step schedule."""
        total = self.trainer.estimated_stepping_batches  # loads the training data, unless max_steps alone decides
        if not math.isfinite(self.trainer.num_training_batches):
            internals.require(internals.FIT_LOOP_SETUP_DATA, self.trainer)()  # as estimated_stepping_batches does
        per_epoch = math.ceil(self.trainer.num_training_batches / self.trainer.accumulate_grad_batches)
        return total, per_epoch

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Reloading rebuilds the architecture only; the weights come from the state dict.
        checkpoint["hyper_parameters"]["model"] = architecture_only(self.hparams.model)
        if self.hparams.model["name"] in PACKAGED_LITE:
            checkpoint["packaged_arch"] = packaged_lite_arch(self.hparams.model["name"])

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_packaged_arch(checkpoint, "this checkpoint")


def block_param_groups(module: nn.Module, base_lr: float, lr_scales: list[float] | None = None) -> list[dict[str, Any]]:
    """Trainable parameters only: the head at `base_lr`, then each backbone block with trainable
    parameters at `base_lr` × its scale (stem first; 1 when no scales are given)."""
    heads = [module.head, *([module.aux_head] if module.aux_head is not None else [])]
    groups = [{"params": [p for h in heads for p in h.parameters() if p.requires_grad], "lr": base_lr}]
    scales = lr_scales or [1.0] * len(module.backbone.blocks)
    for block, scale in zip(module.backbone.blocks, scales):
        params = [p for p in block.parameters() if p.requires_grad]
        if params:
            groups.append({"params": params, "lr": base_lr * scale})
    return groups


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(module.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
