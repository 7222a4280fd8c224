"""The datamodule every dataset shares: seeded stratified splits, loaders, transforms from the weights."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import lightning as L
import torch
from torch.utils.data import DataLoader

from transferlab import internals
from transferlab.caches.decoded import DecodedImages, decode_images
from transferlab.data.loading import EpochSampler, LabelledImages, ResumableLoader
from transferlab.data.splits import Split, holdout, percent, split_lines
from transferlab.data.transforms import Augment, DecodedTransform, build_transforms, resize_size
from transferlab.errors import TransferlabError
from transferlab.models.data_config import DataConfig
from transferlab.options import check

if TYPE_CHECKING:  # the cache builds on the datamodule, not the other way round
    from transferlab.caches.features import CachedFeatures

log = logging.getLogger(__name__)


class ImageClassificationDataModule(L.LightningDataModule):
    """Subclasses implement `find_splits()`: either all three splits, or one pool
    (`{"all": Split}`) that is split here, stratified and seeded, by `split_fractions`."""

    def __init__(
        self,
        data_config: DataConfig | None = None,
        image_size: int | None = None,
        crop_pct: float | None = None,
        batch_size: int = 32,
        num_workers: int | None = None,
        augment: dict | Augment | None = None,
        split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
        seed: int = 42,
        pin_memory: bool | None = None,
        decode_cache: str | None = None,
        decode_cache_dir: str | None = None,
        subset: dict[str, int | None] | None = None,
        sampler: str | None = None,
    ) -> None:
        super().__init__()
        if data_config is None:
            raise TransferlabError("a datamodule needs the backbone's data_config (run/build.py passes it)")
        # The dataset may ask for a smaller input than the weights' (e.g. 8×8 digits need no 224 px).
        self.data_config = data_config.replace(input_size=image_size, crop_pct=crop_pct)
        self.batch_size = batch_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.augment = augment if isinstance(augment, Augment) else Augment(**(augment or {}))
        self.split_fractions = tuple(split_fractions)
        self.seed = seed
        # Images kept of each split (a seeded, stratified sample; None: all), e.g. a low-data study.
        self.subset = {name: size for name, size in (subset or {}).items() if size is not None}
        # Page-locked batches copy to a GPU asynchronously; pointless (and slower) without one.
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.decode_cache, self.decode_cache_dir = check("data.decode_cache", decode_cache), decode_cache_dir
        # balanced: training draws every class equally often (with replacement), an epoch as many images.
        self.sampler = check("data.sampler", sampler)
        self.decoded: dict[int, DecodedImages] = {}  # by id of the split: val may double as test
        self.class_names: list[str] = []
        self.splits: dict[str, Split] = {}
        # Frozen features that stand in for images (feature_cache.FeatureCache sets them; None: images).
        self.cached_features: CachedFeatures | None = None

    # -- what a dataset provides
    def find_splits(self) -> tuple[list[str], dict[str, Split]]:
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.class_names, found = self.find_splits()
        self.splits = found if "all" not in found else self._split_pool(found["all"])
        self.splits.update({name: self._subsampled(name, size) for name, size in self.subset.items()})
        for name, split in self.splits.items():
            if not split.labels:
                raise TransferlabError(f"the {name} split of {type(self).__name__} is empty")

    def describe(self) -> str:
        """What the data is, for the first line of a run: `digits`, `the folder ~/photos`."""
        return type(self).__name__.removesuffix("DataModule")

    def log_splits(self) -> None:
        """The start lines of a run (run.pipeline, the screen): once, not at every build of the data."""
        lines, warnings = split_lines(self.class_names, self.splits)
        log.info("%s: %d classes\n%s", self.describe(), self.num_classes, "\n".join(lines))
        for warning in warnings:
            log.warning("%s", warning)

    @property
    def has_validation(self) -> bool:
        """Whether a validation split chooses the best epoch and stops early (not with data.val_fraction=0)."""
        self.setup()
        return "val" in self.splits

    def split_sizes(self) -> dict[str, int]:
        """Images in each split, for metrics.json: {"data/train_size": …, "data/val_size": …, "data/test_size": …}."""
        self.setup()  # returns at once when the splits are known
        return {
            f"data/{name}_size": len(self.splits[name].labels) if name in self.splits else 0
            for name in ("train", "val", "test")
        }

    def _split_pool(self, pool: Split) -> dict[str, Split]:
        train_f, val_f, test_f = self.split_fractions
        if min(self.split_fractions) <= 0 or sum(self.split_fractions) > 1 + 1e-9:
            raise TransferlabError(
                f"split_fractions={list(self.split_fractions)}: need three positive fractions summing to ≤ 1"
            )
        used = pool
        if sum(self.split_fractions) < 1 - 1e-9:  # e.g. the notes' 40/10/10 of cats_vs_dogs
            _, used = holdout(pool.images, pool.labels, sum(self.split_fractions), self.seed)
        rest, test = holdout(used.images, used.labels, test_f / sum(self.split_fractions), self.seed)
        train, val = holdout(rest.images, rest.labels, val_f / (train_f + val_f), self.seed)
        shares = "/".join(percent(f) for f in self.split_fractions)
        origin = f"{len(pool.labels):,} images{f' of {pool.source}' if pool.source else ''}"
        for share, split in zip(self.split_fractions, (train, val, test), strict=True):
            split.source = (
                f"{percent(share)} % of the {origin} (data.split_fractions {shares}, stratified, seed {self.seed})"
            )
        return {"train": train, "val": val, "test": test}

    def _subsampled(self, name: str, size: int) -> Split:
        if name not in self.splits:
            raise TransferlabError(f"data.subset.{name}: no such split; the splits are {', '.join(self.splits)}")
        split = self.splits[name]
        classes = len(set(split.labels))
        if size > len(split.labels):
            raise TransferlabError(
                f"data.subset.{name}={size} is more than the {len(split.labels)} images of the {name} split: "
                "lower it, or set it to null for all of them"
            )
        if size < classes:
            raise TransferlabError(
                f"data.subset.{name}={size} is fewer than the split's {classes} classes: a stratified subset "
                "needs at least one image of each"
            )
        if size == len(split.labels):
            return split
        sample = holdout(split.images, split.labels, size, self.seed)[1]
        sample.source = (
            f"data.subset.{name}={size:,} of {len(split.labels):,} (stratified, seed {self.seed}), "
            f"which are {split.source or 'the split'}"
        )
        return sample

    # -- loaders
    def image_dataset(self, split: str, augment: bool) -> LabelledImages:
        """A split's images and labels; `augment`: the training transforms, keyed by (epoch, index)."""
        if self.decode_cache:
            transform = DecodedTransform(self.data_config, train=augment, augment=self.augment if augment else None)
            return LabelledImages(self.splits[split], transform, self.seed, decoded=self.decoded_images(split))
        transform = build_transforms(self.data_config, train=augment, augment=self.augment if augment else None)
        return LabelledImages(self.splits[split], transform, self.seed)

    def decoded_images(self, split: str) -> DecodedImages:
        """The split's images decoded and resized once (`decode_cache`), then reused every epoch."""
        images = self.splits[split].images
        if id(self.splits[split]) not in self.decoded:
            self.decoded[id(self.splits[split])] = decode_images(
                images,
                resize_size(self.data_config),
                self.data_config.interpolation,
                self.decode_cache,
                self.decode_cache_dir,
                self.num_workers,
                name=f"{type(self).__name__}-{split}",
            )
        return self.decoded[id(self.splits[split])]

    def loader(self, split: str, augment: bool) -> DataLoader:
        """A split's loader (`augment` also shuffles: the training loader). Over cached frozen
        features instead of images in the epochs `cached_features` covers."""
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        cached = self.cached_features.dataset(split, epoch) if self.cached_features is not None else None
        dataset = cached if cached is not None else self.image_dataset(split, augment)
        workers = 0 if cached is not None else self.num_workers  # features are already in memory
        weights = self.balanced_weights(split) if augment and self.sampler == "balanced" else None
        sampler = EpochSampler(len(dataset), self.seed, shuffle=augment, keyed_by_epoch=augment, weights=weights)
        self.check_shares(split, len(dataset), sampler.world_size)
        resumable = {"trained_batches": self.trained_batches} if augment else {}
        return (ResumableLoader if augment else DataLoader)(
            dataset,
            batch_size=self.batch_size // sampler.world_size,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=self.pin_memory,
            collate_fn=cached.collate if cached is not None else None,  # features come batched
            **resumable,
        )

    def trained_batches(self) -> int:
        """Batches of the current epoch the trainer has trained on (a mid-epoch checkpoint's position):
        `processed`, since a stop raised in on_train_batch_end comes after the step and before Lightning
        counts the batch completed (a resumed Lightning completes it, and so skips it too)."""
        trainer = self.trainer
        return (
            internals.require(internals.EPOCH_BATCH_PROGRESS, trainer).current.processed if trainer is not None else 0
        )

    def balanced_weights(self, split: str) -> torch.Tensor:
        """1 / (images of its class) for every image: each class is drawn as often as any other."""
        labels = torch.as_tensor(self.splits[split].labels)
        return 1.0 / torch.bincount(labels, minlength=self.num_classes).double()[labels]

    def check_shares(self, split: str, size: int, world: int) -> None:
        """`batch_size` is the global batch: under DDP each of the processes takes an equal share, so a
        run on N processes trains on the batches of a one-process run. Every process needs at least
        one image of each split (a process without evaluation batches would leave the others waiting)."""
        if self.batch_size % world:
            raise TransferlabError(
                f"data.batch_size={self.batch_size} is the global batch, shared by {world} processes: "
                f"choose a multiple of {world}"
            )
        if size < world:
            raise TransferlabError(
                f"the {split} split has {size} images for {world} processes: every process needs "
                f"at least one (use fewer devices or more data)"
            )

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", augment=True)

    def val_dataloader(self) -> DataLoader | list:
        return self.loader("val", augment=False) if "val" in self.splits else []  # none: data.val_fraction=0

    def test_dataloader(self) -> DataLoader:
        return self.loader("test", augment=False)


def default_num_workers() -> int:
    """Leave one core to the training process; none at all on a 2-core machine is slower."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(8, max(cores - 1, 0))
