"""Training-epoch data loading: the decode cache vs torchvision's ImageFolder + PIL, side by side.

    python benchmarks/decode_cache.py                   # 2,000 JPEGs at 500×375, 224 px crops (about 1 min on 2 cores)
    python benchmarks/decode_cache.py --images 400 --epochs 1

Writes a two-class folder of real-size JPEG photos (crops of scikit-image's sample
photographs, 500×375 like the cats-vs-dogs pictures, quality 90), then times a
training epoch of each loader over it, with the same augmentation (random resized
crop to 224, horizontal flip, ±10° rotation, normalisation), batch size, shuffling
and number of workers:

- baseline: `torchvision.datasets.ImageFolder` with the PIL-decoding transforms
  (`transforms.build_transforms`, what transferlab uses without the cache);
- ours: `ImageFolderDataModule(decode_cache="memory")`: its one decoding pass is
  timed apart, then epochs read uint8 pixels and augment them on tensors.

The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data as samples
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from transferlab.data import ImageFolderDataModule
from transferlab.data.base import default_num_workers
from transferlab.data.transforms import Augment, build_transforms
from transferlab.models.data_config import DataConfig

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "immunohistochemistry", "cat")


def make_photos(root: Path, count: int, seed: int = 0, width: int = 500, height: int = 375) -> None:
    """`count` JPEGs: random crops, flips and brightness of real photographs, two classes."""
    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(getattr(samples, name)()).convert("RGB") for name in PHOTOS]
    for label in ("even", "odd"):
        (root / label).mkdir(parents=True)
    for i in range(count):
        photo = photos[rng.integers(len(photos))]
        scale = rng.uniform(0.5, 1.0) * min(photo.width / width, photo.height / height)
        box_w, box_h = int(width * scale), int(height * scale)
        left, top = rng.integers(photo.width - box_w + 1), rng.integers(photo.height - box_h + 1)
        image = photo.resize((width, height), Image.BICUBIC, box=(left, top, left + box_w, top + box_h))
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        gain = rng.uniform(0.8, 1.2)
        image = image.point(lambda v: min(255, int(v * gain)))  # noqa: B023 - used at once, inside this iteration
        image.save(root / ("even" if i % 2 == 0 else "odd") / f"{i:05d}.jpg", quality=90)


# Milliseconds per image on an idle 2-core CPU with 1 worker (benchmarks/README.md; photo writing measured apart).
MS_PER_IMAGE = {"write": 4.2, "imagefolder_epoch": 8.75, "decode_pass": 3.95, "decode_cache_epoch": 2.7}


def plan(args) -> str:
    ms = MS_PER_IMAGE
    seconds = (
        5
        + args.images
        * (ms["write"] + ms["decode_pass"] + args.epochs * (ms["imagefolder_epoch"] + ms["decode_cache_epoch"]))
        / 1000
    )
    return (
        f"decode_cache: {args.images} JPEG photos (500x375) written to a temporary folder, random resized crops "
        f"to 224 px, batch {args.batch_size}, {args.workers} worker(s): {args.epochs} timed epoch(s) of "
        f"ImageFolder + PIL, then the decode cache's one decoding pass and {args.epochs} timed epoch(s) of it; "
        f"time: about {seconds / 60:.1f} min on an idle 2-core CPU"
    )


def epoch_seconds(loader: DataLoader, epochs: int) -> float:
    """Mean time of one pass over `loader` (the workers are started before the clock)."""
    times = []
    for _ in range(epochs):
        started = time.perf_counter()
        for _batch in loader:
            pass
        times.append(time.perf_counter() - started)
    return sum(times) / len(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2, help="epochs timed per loader (mean reported)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=default_num_workers())
    args = parser.parse_args()
    print(plan(args), flush=True)
    config = DataConfig(input_size=224)  # ImageNet mean/std, bilinear, crop_pct 0.875: 256 px short side
    augment = Augment(scale_min=0.7, hflip=0.5, rotation=10)

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "photos"
        make_photos(root / "train", args.images)
        make_photos(root / "val", 20, seed=1)  # the datamodule wants one; never loaded here
        # With a test/ folder the datamodule keeps all of train/ for training (without one it holds
        # 20 % of it out for validation), so both loaders read the same --images photos.
        make_photos(root / "test", 20, seed=2)
        torch.manual_seed(0)
        baseline_set = ImageFolder(str(root / "train"), transform=build_transforms(config, train=True, augment=augment))
        baseline = DataLoader(
            baseline_set,
            batch_size=args.batch_size,
            shuffle=True,
            num_workers=args.workers,
            persistent_workers=args.workers > 0,
        )
        baseline_s = epoch_seconds(baseline, args.epochs)
        del baseline

        datamodule = ImageFolderDataModule(
            root=str(root),
            data_config=config,
            augment=vars(augment),
            seed=0,
            batch_size=args.batch_size,
            num_workers=args.workers,
            decode_cache="memory",
        )
        datamodule.setup()  # the one-off scan for broken files happens here, outside both timings
        if len(datamodule.splits["train"].labels) != len(baseline_set):
            raise SystemExit(
                f"error: the decode cache would train on {len(datamodule.splits['train'].labels)} images "
                f"and ImageFolder on {len(baseline_set)}: the comparison needs the same images"
            )
        started = time.perf_counter()
        datamodule.decoded_images("train")
        decode_s = time.perf_counter() - started
        ours = datamodule.train_dataloader()
        cached_s = epoch_seconds(ours, args.epochs)

    figures = {
        "benchmark": "decode_cache",
        "images": args.images,
        "image_size": "500x375",
        "crop": 224,
        "workers": args.workers,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "imagefolder_pil_epoch_s": round(baseline_s, 2),
        "decode_cache_epoch_s": round(cached_s, 2),
        "decode_pass_s": round(decode_s, 2),
        "speedup": round(baseline_s / cached_s, 2),
        "imagefolder_img_per_s": round(len(baseline_set) / baseline_s, 1),
        "decode_cache_img_per_s": round(len(baseline_set) / cached_s, 1),
    }
    print(
        f"ImageFolder + PIL: {baseline_s:.1f} s/epoch; decode cache: {cached_s:.1f} s/epoch "
        f"({figures['speedup']}× faster) after one {decode_s:.1f} s decoding pass"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
