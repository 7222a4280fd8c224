"""head_only with and without the feature cache, side by side in one process.

    python benchmarks/feature_cache.py                 # 1,000 images, 224 px, 10 epochs (about 4 min on an idle 2-core CPU)
    python benchmarks/feature_cache.py --images 300 --size 160 --epochs 10

Generates a two-class image folder of real JPEGs, then times three things on the
same data with efficientnet_lite0's packaged ImageNet weights: the uncached run
(the backbone runs every epoch), the cached run (one frozen pass, then the head
trains on features), and the floor: one frozen forward pass over the training
and validation images. All on the CPU, the floor as well as the runs (a GPU is not
used). The first line printed says what will run and about how long; the floor,
timed first, gives the estimate for the rest. The last line is one JSON object
with the figures.
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
import torch
from PIL import Image
from torch.utils.data import DataLoader

from transferlab.caches.features import cache_features, frozen_features
from transferlab.callbacks.seeding import SeedEachBatch
from transferlab.classifier.module import ImageClassifier
from transferlab.data import ImageFolderDataModule
from transferlab.models.backbones import create_backbone
from transferlab.strategies.policies import HeadOnly

# Seconds for 1,000 images at 224 px on an idle 2-core CPU (benchmarks/README.md): one frozen pass (the floor),
# an uncached epoch, the cached run.
SECONDS_PER_1000_AT_224 = {"floor": 18.6, "uncached_epoch": 18.1, "cached": 23.8}


def plan(args) -> str:
    scale = args.images / 1000 * (args.size / 224) ** 2
    s = SECONDS_PER_1000_AT_224
    seconds = 10 + scale * (s["floor"] + args.epochs * s["uncached_epoch"] + s["cached"])
    quicker = "; a quicker look: --images 300 --size 160" if seconds > 120 else ""
    return (
        f"feature_cache: efficientnet_lite0 head_only on the CPU ({torch.get_num_threads()} threads), {args.images} "
        f"JPEGs at {args.size} px, {args.epochs} epochs: one frozen pass (the floor), then the uncached run, then "
        f"the cached run; time: about {max(1, round(seconds / 60))} min on an idle 2-core CPU (up to 3 times "
        f"that on a busy one{quicker})"
    )


def make_images(root: Path, count: int, size: int) -> None:
    rng = np.random.default_rng(0)
    for split, share in (("train", 0.8), ("val", 0.2)):
        for label, name in enumerate(("warm", "cool")):
            (root / split / name).mkdir(parents=True)
            for i in range(int(count * share / 2)):
                pixels = rng.integers(0, 120, (size * 3 // 2, size * 3 // 2, 3))
                pixels[..., 0 if label == 0 else 2] += 120
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / name / f"{i}.jpg", quality=90)


def run(root: Path, size: int, epochs: int, cached: bool) -> tuple[float, float]:
    L.seed_everything(0, verbose=False)
    backbone = create_backbone("efficientnet_lite0")
    datamodule = ImageFolderDataModule(
        root=str(root), data_config=backbone.data_config, image_size=size, augment={"enabled": False}, seed=0
    )
    datamodule.setup()
    optimizer = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 3e-3}
    module = ImageClassifier({"name": "efficientnet_lite0"}, datamodule.num_classes, optimizer, backbone=backbone)
    started = time.perf_counter()
    if cached:
        cache_features(module, datamodule, views=1, directory=None)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        callbacks=[HeadOnly(), SeedEachBatch(0)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule)
    return time.perf_counter() - started, float(trainer.callback_metrics["val/acc"])


def floor(root: Path, size: int) -> float:
    backbone = create_backbone("efficientnet_lite0")
    datamodule = ImageFolderDataModule(root=str(root), data_config=backbone.data_config, image_size=size, seed=0)
    datamodule.setup()
    module = ImageClassifier(
        {"name": "efficientnet_lite0"}, datamodule.num_classes, {"lr": 1.0}, backbone=backbone
    ).eval()
    started = time.perf_counter()
    for split in ("train", "val"):
        loader = DataLoader(
            datamodule.image_dataset(split, augment=False), batch_size=32, num_workers=datamodule.num_workers
        )
        frozen_features(module.features, loader)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    print(plan(args), flush=True)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        make_images(root, args.images, args.size)
        one_pass = floor(root, args.size)
        rest = one_pass * (args.epochs + 1.3)  # an uncached epoch costs about one frozen pass; the cached run 1.3
        print(f"one frozen pass {one_pass:.1f} s: the two runs take about {rest / 60:.1f} min more", flush=True)
        uncached, uncached_acc = run(root, args.size, args.epochs, cached=False)
        cached, cached_acc = run(root, args.size, args.epochs, cached=True)
    figures = {
        "benchmark": "feature_cache",
        "images": args.images,
        "size": args.size,
        "epochs": args.epochs,
        "threads": torch.get_num_threads(),
        "uncached_s": round(uncached, 1),
        "cached_s": round(cached, 1),
        "floor_s": round(one_pass, 1),
        "speedup": round(uncached / cached, 2),
        "floor_ratio": round(cached / one_pass, 2),
        "val_acc_uncached": round(uncached_acc, 4),
        "val_acc_cached": round(cached_acc, 4),
    }
    print(
        f"uncached {uncached:.1f} s, cached {cached:.1f} s ({figures['speedup']}× faster), "
        f"one frozen pass {one_pass:.1f} s (cached/floor {figures['floor_ratio']})"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
