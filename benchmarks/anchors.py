"""A recipe preset beside the tool it copies, on the same images and the same pretrained weights, in one run.

    pip install fastai                                # the anchor (not a transferlab dependency)
    python benchmarks/anchors.py --epochs 3           # fastai's fine_tune(3) beside recipe=fastai_fine_tune strategy.epochs=3
    python benchmarks/anchors.py --folder /path/to/photos --image-size 224

The images: a folder with train/ and val/ class folders (--folder), or by default the offline photos set
(`data=photos`, seed 42) written out as one: its training crops as train/, its test crops as val/. Both
tools train on all of train/ for the same epochs and keep the last weights (fastai's way; here
data.val_fraction=0), and both are scored on val/, which neither uses to choose anything.

The weights: EfficientNet-Lite0's packaged ImageNet weights in timm's tf_efficientnet_lite0, loaded into
fastai's own `vision_learner` body (its TimmBody, its head, its layer groups) as into transferlab's.
fastai's side is as its documentation runs it: `vision_learner(dls, arch).fine_tune(epochs)`, its
defaults (base_lr 2e-3, Adam with true weight decay 0.01, one-cycle, BatchNorm trained while frozen);
the same crops, flips and rotations; the same normalisation. Its training metrics are switched on so
that the frozen epoch's training accuracy can be set beside ours.

Each side reports, per epoch, training loss and accuracy, then accuracy on val/ and wall time (the
model built and the weights loaded, to the last epoch's end). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
from omegaconf import open_dict
from PIL import Image

from transferlab.models import create_backbone
from transferlab.run import build
from transferlab.run.pipeline import train

MODEL = "efficientnet_lite0"


class EpochRecorder(L.Callback):
    """transferlab's per-epoch training loss and accuracy (what fastai's recorder keeps)."""

    epochs: list[dict] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        EpochRecorder.epochs.append(
            {"train_loss": round(float(metrics["train/loss"]), 4), "train_acc": round(float(metrics["train/acc"]), 4)}
        )


def write_photos(where: Path) -> Path:
    """The offline photos set (seed 42) as train/ (its training crops) and val/ (its test crops)."""
    cfg = build.compose(["data=photos", "strategy=head_only"])
    data = build.experiment(cfg).datamodule
    for folder, split in (("train", "train"), ("val", "test")):
        for index, (image, label) in enumerate(zip(data.splits[split].images, data.splits[split].labels)):
            path = where / folder / data.class_names[label] / f"{index:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.asarray(image)).save(path)
    return where


def ours(folder: Path, epochs: int, image_size: int, batch_size: int, seed: int, where: Path, extra: list[str]) -> dict:
    overrides = [
        f"seed={seed}",
        "recipe=fastai_fine_tune",
        f"model={MODEL}",
        "data=image_folder",
        f"data.root={folder}",
        "data.val_fraction=0",
        f"data.image_size={image_size}",
        "data.crop_pct=1.0",
        f"data.batch_size={batch_size}",
        f"strategy.epochs={epochs}",
        "logger=none",
        *extra,
    ]
    cfg = build.run_config([*overrides, f"hydra.run.dir={where}"], where)
    with open_dict(cfg):
        cfg.callbacks.epoch_recorder = {"_target_": "__main__.EpochRecorder"}
    EpochRecorder.epochs = []
    started = time.perf_counter()
    metrics = train(cfg)
    return {
        "epochs": EpochRecorder.epochs,
        "val_acc": round(metrics["test/acc"], 4),  # val/ is this run's test split (data.val_fraction=0)
        "s": round(time.perf_counter() - started, 1),
        "overrides": overrides,
    }


def fastai(folder: Path, epochs: int, image_size: int, batch_size: int, seed: int) -> dict:
    from fastai.vision.all import (
        Callback,
        CrossEntropyLossFlat,
        ImageDataLoaders,
        Normalize,
        RandomResizedCrop,
        accuracy,
        aug_transforms,
        set_seed,
        vision_learner,
    )

    backbone = create_backbone(MODEL, pretrained=True)
    stats = (list(backbone.data_config.mean), list(backbone.data_config.std))
    set_seed(seed)
    started = time.perf_counter()
    dls = ImageDataLoaders.from_folder(
        folder,
        train="train",
        valid="val",
        bs=batch_size,
        seed=seed,
        item_tfms=RandomResizedCrop(image_size, min_scale=0.35),
        # Flips and rotations up to 10°, as the recipe's; no zoom, warp or lighting (transferlab has none).
        batch_tfms=[*aug_transforms(max_zoom=1.0, max_lighting=0.0, max_warp=0.0), Normalize.from_stats(*stats)],
    )
    learn = vision_learner(
        dls, "tf_efficientnet_lite0", pretrained=False, loss_func=CrossEntropyLossFlat(), metrics=accuracy
    )
    learn.model[0].model.load_state_dict(backbone.features.state_dict())  # the same ImageNet weights
    learn.recorder.train_metrics = True
    values: list[list[float]] = []

    class KeepEpochs(Callback):  # fastai's recorder starts afresh with each of fine_tune's two fits
        order = 60  # after the recorder's own after_epoch

        def after_epoch(self) -> None:
            values.append([float(v) for v in self.recorder.log[1:5]])

    with learn.no_bar(), learn.no_logging():
        # Each epoch: [train_loss, train_accuracy, valid_loss, valid_accuracy] (the recorder's log after "epoch").
        learn.fine_tune(epochs, cbs=[KeepEpochs()])
    return {
        "epochs": [{"train_loss": round(r[0], 4), "train_acc": round(r[1], 4)} for r in values],
        "val_acc": round(values[-1][3], 4),
        "s": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3, help="fine_tune(N): N unfrozen epochs after 1 frozen one")
    parser.add_argument("--folder", type=Path, help="train/ and val/ class folders (default: the photos set)")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=3, help="runs of each side, seeds 42, 43, ...")
    parser.add_argument("--ours", nargs="*", default=[], help="extra overrides for transferlab's side")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results: dict[str, list[dict]] = {"fastai": [], "transferlab": []}
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.folder or write_photos(Path(scratch) / "photos")
        print(f"anchors: fastai fine_tune({args.epochs}) beside recipe=fastai_fine_tune on {folder}", flush=True)
        for seed in range(42, 42 + args.seeds):  # alternating, so that a busier minute hurts both sides alike
            results["fastai"].append(fastai(folder, args.epochs, args.image_size, args.batch_size, seed))
            print(f"fastai       seed {seed}: {results['fastai'][-1]}", flush=True)
            run_dir = Path(scratch) / f"run{seed}"
            mine = ours(folder, args.epochs, args.image_size, args.batch_size, seed, run_dir, args.ours)
            results["transferlab"].append(mine)
            print(f"transferlab  seed {seed}: {mine}", flush=True)
    summary = {side: summarise(runs) for side, runs in results.items()}
    for side, figures in summary.items():
        print(f"{side:<12} {figures}")
    print(json.dumps({"epochs": args.epochs, "summary": summary, "runs": results}))


def summarise(runs: list[dict]) -> dict:
    """Means over the seeds: training accuracy of each epoch (the first is the frozen one), accuracy on val/
    (± its standard deviation), seconds."""
    mean = lambda values: round(float(np.mean(values)), 4)  # noqa: E731
    return {
        "train_acc": [mean(epoch) for epoch in zip(*[[e["train_acc"] for e in r["epochs"]] for r in runs])],
        "val_acc": mean([r["val_acc"] for r in runs]),
        "val_acc_sd": round(float(np.std([r["val_acc"] for r in runs], ddof=1)), 4) if len(runs) > 1 else 0.0,
        "s": mean([r["s"] for r in runs]),
    }


if __name__ == "__main__":
    main()
