"""A recipe preset beside the tool it copies, on the same images and the same pretrained weights, in one run.

    pip install fastai                                       # fastai's anchor (not a transferlab dependency)
    python benchmarks/anchors.py --epochs 3                  # fastai's fine_tune(3) beside recipe=fastai_fine_tune strategy.epochs=3
    python benchmarks/anchors.py --anchor pytorch_tutorial   # the PyTorch tutorial's loop beside recipe=pytorch_tutorial
    pip install keras                                        # the Keras guide's anchor (Keras 3, run on its torch backend)
    python benchmarks/anchors.py --anchor keras_guide        # the Keras guide's two fits beside recipe=keras_guide
    python benchmarks/anchors.py --folder /path/to/photos --image-size 224

The images: the offline photos set (`data=photos`, seed 42) written out as image folders, or your own
(--folder: train/, val/ and, for the tutorial, test/ class folders). The weights: EfficientNet-Lite0's
packaged ImageNet weights in timm's tf_efficientnet_lite0, loaded into the anchor's model as into
transferlab's. Each side reports, per epoch, training loss and accuracy, then its accuracy on images it
never used to choose anything, and its wall time (the model built, to the last epoch's end; transferlab's
also scans, tests and writes its files). Sides alternate seed by seed, so a busier minute hurts both alike.
The last line is one JSON object.

fastai (`--anchor fastai`): as its documentation runs it, `vision_learner(dls, arch).fine_tune(epochs)`
with its defaults (base_lr 2e-3, Adam with true weight decay 0.01, one-cycle, BatchNorm trained while
frozen, its head and layer groups); the photos' training crops are train/, their test crops val/. Both
sides train on all of train/ and keep the last weights (here data.val_fraction=0), scored on val/.
Crops (scale 0.35-1), flips and rotations up to 10° on both sides, the same normalisation.

The PyTorch tutorial (`--anchor pytorch_tutorial`): its `train_model` loop written out as the tutorial
has it (SGD lr 1e-3 momentum 0.9, StepLR 7 / 0.1, batch 4, RandomResizedCrop + flip, a new Linear on the
network, the epoch of best val accuracy kept), with the photos' train/, val/ and test/ splits as folders.
The tutorial selects and reports on val/; both sides here select on val/ and are scored on test/.

The Keras guide (`--anchor keras_guide`, keras.io/guides/transfer_learning): Keras 3 itself, on its torch
backend so that the same weights serve: the base model (the timm network, its global average pool
included) in a TorchModuleWrapper called with training=False, so its BatchNorm stays in inference mode;
RandomFlip("horizontal") and RandomRotation(0.1) then Rescaling(1/127.5, offset=-1) (EfficientNet-Lite's
normalisation is Xception's, mean and std 0.5) in front, Dropout(0.2) and Dense behind; compile and fit with
Adam (1e-3) for 2 epochs on the frozen base, then base_model.trainable = True, compile with Adam(1e-5) and
fit 1 epoch more; the last weights kept. The guide's cats vs dogs has two classes and a Dense(1) with binary
cross-entropy; here Dense(classes) with sparse categorical cross-entropy, its form for more. Batches of 64,
shuffled each epoch (tfds gives the guide's records in mixed order). Layout and scoring as fastai's.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from omegaconf import open_dict
from PIL import Image

from transferlab.models import create_backbone
from transferlab.run import build
from transferlab.run.pipeline import train

MODEL = "efficientnet_lite0"
# The photos set's splits as each anchor's folders: {folder: split}.
LAYOUTS = {
    "fastai": {"train": "train", "val": "test"},
    "pytorch_tutorial": {"train": "train", "val": "val", "test": "test"},
    "keras_guide": {"train": "train", "val": "test"},
}


class EpochRecorder(L.Callback):
    """transferlab's per-epoch training loss and accuracy (what the anchors keep)."""

    epochs: list[dict] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        EpochRecorder.epochs.append(
            {"train_loss": round(float(metrics["train/loss"]), 4), "train_acc": round(float(metrics["train/acc"]), 4)}
        )


def write_photos(where: Path, layout: dict[str, str]) -> Path:
    """The offline photos set (seed 42) as class folders, its splits named as `layout` says."""
    cfg = build.compose(["data=photos", "strategy=head_only"])
    data = build.experiment(cfg).datamodule
    for folder, split in layout.items():
        for index, (image, label) in enumerate(zip(data.splits[split].images, data.splits[split].labels)):
            path = where / folder / data.class_names[label] / f"{index:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.asarray(image)).save(path)
    return where


def ours(recipe_overrides: list[str], seed: int, where: Path) -> dict:
    overrides = [f"seed={seed}", f"model={MODEL}", "data=image_folder", "logger=none", *recipe_overrides]
    cfg = build.run_config([*overrides, f"hydra.run.dir={where}"], where)
    with open_dict(cfg):
        cfg.callbacks.epoch_recorder = {"_target_": "__main__.EpochRecorder"}
    EpochRecorder.epochs = []
    started = time.perf_counter()
    metrics = train(cfg)
    return {
        "epochs": EpochRecorder.epochs,
        "acc": round(metrics["test/acc"], 4),  # its test split: val/ for fastai's layout, test/ for the tutorial's
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
        "acc": round(values[-1][3], 4),
        "s": round(time.perf_counter() - started, 1),
    }


def pytorch_tutorial(folder: Path, epochs: int, image_size: int, seed: int) -> dict:
    """The tutorial's data, model, optimizer and `train_model` loop, scored on test/ at the end."""
    import timm
    from torchvision import datasets, transforms

    backbone = create_backbone(MODEL, pretrained=True)
    config = backbone.data_config
    normalise = transforms.Normalize(config.mean, config.std)
    resize = round(image_size / config.crop_pct)  # the tutorial's Resize(256) → CenterCrop(224), at this size
    torch.manual_seed(seed)
    started = time.perf_counter()
    data = {
        "train": datasets.ImageFolder(
            folder / "train",
            transforms.Compose(
                [
                    transforms.RandomResizedCrop(image_size),
                    transforms.RandomHorizontalFlip(),
                    transforms.ToTensor(),
                    normalise,
                ]
            ),
        ),
        **{
            split: datasets.ImageFolder(
                folder / split,
                transforms.Compose(
                    [transforms.Resize(resize), transforms.CenterCrop(image_size), transforms.ToTensor(), normalise]
                ),
            )
            for split in ("val", "test")
        },
    }
    loaders = {
        split: torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=split == "train", num_workers=2)
        for split, dataset in data.items()
    }
    model = timm.create_model("tf_efficientnet_lite0", num_classes=0)
    model.load_state_dict(backbone.features.state_dict())  # the same ImageNet weights
    # The tutorial's `model_ft.fc = nn.Linear(num_ftrs, 2)`: a new Linear with PyTorch's initialisation.
    model.classifier = torch.nn.Linear(model.num_features, len(data["train"].classes))
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
    best_weights, best_acc, history = copy.deepcopy(model.state_dict()), 0.0, []

    def run_epoch(split: str) -> tuple[float, float]:
        model.train(split == "train")
        loss_sum, correct = 0.0, 0
        for inputs, labels in loaders[split]:
            optimizer.zero_grad()
            with torch.set_grad_enabled(split == "train"):
                outputs = model(inputs)
                loss = criterion(outputs, labels)
                if split == "train":
                    loss.backward()
                    optimizer.step()
            loss_sum += loss.item() * inputs.size(0)
            correct += int((outputs.argmax(1) == labels).sum())
        if split == "train":
            scheduler.step()
        return loss_sum / len(data[split]), correct / len(data[split])

    for _ in range(epochs):
        train_loss, train_acc = run_epoch("train")
        _, val_acc = run_epoch("val")
        history.append({"train_loss": round(train_loss, 4), "train_acc": round(train_acc, 4)})
        if val_acc > best_acc:
            best_acc, best_weights = val_acc, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_weights)
    _, test_acc = run_epoch("test")
    return {"epochs": history, "acc": round(test_acc, 4), "s": round(time.perf_counter() - started, 1)}


def keras_guide(
    folder: Path, image_size: int, batch_size: int, seed: int, unfrozen_bn: str = "train", dense_init: str = "glorot"
) -> dict:
    """The guide's model, compile and two fits, in Keras 3 on its torch backend, scored on val/.

    unfrozen_bn: "train" is what Keras 3 does once the base is unfrozen, "inference" what the guide says.
    dense_init: "glorot" is Dense's default, "torch" nn.Linear's (uniform ±1/sqrt(fan_in)); for ablations."""
    import os

    os.environ["KERAS_BACKEND"] = "torch"  # read when keras is first imported
    import keras
    import timm
    from torchvision import datasets

    if keras.backend.backend() != "torch":
        raise SystemExit(f"keras_guide: Keras was imported with the {keras.backend.backend()} backend")
    backbone = create_backbone(MODEL, pretrained=True)
    keras.utils.set_random_seed(seed)
    started = time.perf_counter()

    def pixels(image: Image.Image) -> torch.Tensor:  # the guide's Resizing(size, size): 0-255, channels last
        resized = image.convert("RGB").resize((image_size, image_size), Image.BILINEAR)
        return torch.tensor(np.asarray(resized), dtype=torch.float32)

    train_set, val_set = (datasets.ImageFolder(folder / split, pixels) for split in ("train", "val"))
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=batch_size, shuffle=True)
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=batch_size)

    # Its global average pool ends it; no dropout of timm's own (the guide's Dropout(0.2) follows).
    network = timm.create_model("tf_efficientnet_lite0", num_classes=0, drop_rate=0.0)
    network.load_state_dict(backbone.features.state_dict())  # the same ImageNet weights
    for layer in network.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.momentum = 0.01  # Keras' BatchNormalization(momentum=0.99): 1 % of each batch's statistics

    class ChannelsFirst(torch.nn.Module):  # Keras' images are channels last, timm's channels first
        def __init__(self, module: torch.nn.Module) -> None:
            super().__init__()
            self.module = module

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.module(x.permute(0, 3, 1, 2))

    class KerasBase(keras.layers.TorchModuleWrapper):
        """Keras' own BatchNormalization rule: batch statistics only when training and trainable.

        Keras 3's functional model passes fit's training=True to every layer, over the guide's
        training=False (keras-team/keras#20285), so Xception's BatchNormalization runs in inference
        mode while frozen and in training mode once unfrozen. A bare TorchModuleWrapper would train
        its BatchNorm in both phases."""

        def call(self, *args, training=None, **kwargs):
            batch_statistics = bool(training) and self.trainable and unfrozen_bn == "train"
            return super().call(*args, training=batch_statistics, **kwargs)

    base_model = KerasBase(ChannelsFirst(network), output_shape=(None, network.num_features))
    base_model.trainable = False
    inputs = keras.Input(shape=(image_size, image_size, 3))
    x = keras.layers.RandomFlip("horizontal")(inputs)
    x = keras.layers.RandomRotation(0.1)(x)
    x = keras.layers.Rescaling(scale=1 / 127.5, offset=-1)(x)
    x = base_model(x, training=False)  # BatchNorm in inference mode, frozen or not
    x = keras.layers.Dropout(0.2)(x)
    bound = 1 / math.sqrt(network.num_features)  # nn.Linear's: weights and bias uniform in ±1/sqrt(fan_in)
    torch_like = keras.initializers.RandomUniform(-bound, bound)
    init = {"kernel_initializer": torch_like, "bias_initializer": torch_like} if dense_init == "torch" else {}
    outputs = keras.layers.Dense(len(train_set.classes), **init)(x)
    model = keras.Model(inputs, outputs)

    def fit(lr: float, epochs: int) -> list[dict]:
        model.compile(
            optimizer=keras.optimizers.Adam(lr),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="acc")],
        )
        history = model.fit(train_loader, epochs=epochs, verbose=0).history
        return [
            {"train_loss": round(loss, 4), "train_acc": round(acc, 4)}
            for loss, acc in zip(history["loss"], history["acc"])
        ]

    frozen = [v.numpy().copy() for v in base_model.weights[:3]]
    history = fit(1e-3, 2)  # the head alone
    if not all(np.array_equal(a, v.numpy()) for a, v in zip(frozen, base_model.weights[:3])):
        raise SystemExit("keras_guide: the base trained while frozen")
    base_model.trainable = True
    history += fit(1e-5, 1)  # everything, at a hundredth of the rate
    _, acc = model.evaluate(val_loader, verbose=0)
    return {"epochs": history, "acc": round(float(acc), 4), "s": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--anchor", choices=sorted(LAYOUTS), default="fastai")
    parser.add_argument("--epochs", type=int, help="fastai: fine_tune(N) (default 3); the tutorial: 25")
    parser.add_argument("--folder", type=Path, help="class folders laid out as the anchor's (default: the photos set)")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=64, help="fastai's (the tutorial's is 4)")
    parser.add_argument("--seeds", type=int, default=3, help="runs of each side, seeds 42, 43, ...")
    parser.add_argument("--ours", nargs="*", default=[], help="extra overrides for transferlab's side")
    parser.add_argument(
        "--keras-unfrozen-bn",
        choices=["train", "inference"],
        default="train",
        help="keras_guide: BatchNorm once unfrozen, as Keras 3 runs it (train) or as the guide says (inference)",
    )
    parser.add_argument(
        "--keras-dense-init", choices=["glorot", "torch"], default="glorot", help="keras_guide: Dense's"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results: dict[str, list[dict]] = {args.anchor: [], "transferlab": []}
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.folder or write_photos(Path(scratch) / "photos", LAYOUTS[args.anchor])
        common = [f"data.root={folder}", f"data.image_size={args.image_size}", *args.ours]
        if args.anchor == "fastai":
            epochs = args.epochs or 3
            recipe = ["recipe=fastai_fine_tune", f"strategy.epochs={epochs}", "data.val_fraction=0"]
            recipe += ["data.crop_pct=1.0", f"data.batch_size={args.batch_size}"]
        elif args.anchor == "keras_guide":
            epochs = 3  # the guide's: 2 on the frozen base, 1 fine-tuning
            recipe = [
                "recipe=keras_guide",
                "data.val_fraction=0",
                "data.crop_pct=1.0",
                f"data.batch_size={args.batch_size}",
            ]
        else:
            epochs = args.epochs or 25
            recipe = ["recipe=pytorch_tutorial", f"trainer.max_epochs={epochs}"]
        print(f"anchors: {args.anchor} beside {recipe[0]} on {folder}, {args.seeds} seeds", flush=True)
        for seed in range(42, 42 + args.seeds):
            if args.anchor == "fastai":
                reference = fastai(folder, epochs, args.image_size, args.batch_size, seed)
            elif args.anchor == "keras_guide":
                reference = keras_guide(
                    folder, args.image_size, args.batch_size, seed, args.keras_unfrozen_bn, args.keras_dense_init
                )
            else:
                reference = pytorch_tutorial(folder, epochs, args.image_size, seed)
            results[args.anchor].append(reference)
            print(f"{args.anchor:<16} seed {seed}: {reference}", flush=True)
            results["transferlab"].append(ours([*recipe, *common], seed, Path(scratch) / f"run{seed}"))
            print(f"{'transferlab':<16} seed {seed}: {results['transferlab'][-1]}", flush=True)
    summary = {side: summarise(runs) for side, runs in results.items()}
    for side, figures in summary.items():
        print(f"{side:<16} {figures}")
    print(json.dumps({"anchor": args.anchor, "epochs": epochs, "summary": summary, "runs": results}))


def summarise(runs: list[dict]) -> dict:
    """Means over the seeds: training accuracy of each epoch, accuracy on the held-out images (± its
    standard deviation), seconds."""
    mean = lambda values: round(float(np.mean(values)), 4)  # noqa: E731
    return {
        "train_acc": [mean(epoch) for epoch in zip(*[[e["train_acc"] for e in r["epochs"]] for r in runs])],
        "acc": mean([r["acc"] for r in runs]),
        "acc_sd": round(float(np.std([r["acc"] for r in runs], ddof=1)), 4) if len(runs) > 1 else 0.0,
        "s": mean([r["s"] for r in runs]),
    }


if __name__ == "__main__":
    main()
