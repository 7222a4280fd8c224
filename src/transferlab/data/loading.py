"""Loading a split: the images of a split as a seeded dataset (augmentation keyed by epoch and index),
the per-epoch sampler that survives a resume and shares a split between DDP ranks, and the loader
that saves its place in the epoch."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from transferlab.data.splits import Split
from transferlab.images import load_rgb
from transferlab.stable_hash import seed_of


class LabelledImages(Dataset):
    """Images with labels; a key `(epoch, index)` makes the random augmentation of that
    sample in that epoch a function of (seed, epoch, index) alone, so a resumed run, any
    number of workers and persistent workers all see exactly the same augmented images."""

    def __init__(
        self, split: Split, transform: Callable, seed: int, decoded: Sequence[np.ndarray] | None = None
    ) -> None:
        self.split = split
        self.transform = transform
        self.seed = seed
        self.decoded = decoded  # the split's images already decoded (caches/decoded.py), else read files

    def __len__(self) -> int:
        return len(self.split.labels)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, index = key if isinstance(key, tuple) else (None, key)
        if epoch is None:
            return self.transform(self.image(index)), self.split.labels[index]
        seed = seed_of(self.seed, epoch, index)
        if self.decoded is not None:  # the tensor transforms draw from a generator of their own
            return self.transform(self.image(index), random.Random(seed)), self.split.labels[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(self.image(index)), self.split.labels[index]

    def image(self, index: int) -> np.ndarray | Image.Image:
        return self.decoded[index] if self.decoded is not None else load_rgb(self.split.images[index])


class EpochSampler(Sampler):
    """Seeded per-epoch shuffling that survives a resume (Lightning calls `set_epoch`).

    Under DDP each rank takes every world_size-th index, so the trainer runs with
    `use_distributed_sampler=False`. Training shares are padded to equal length (as
    DistributedSampler does: every rank must take the same number of steps); evaluation
    shares are not, so that val/test metrics count every image exactly once.
    """

    def __init__(
        self, size: int, seed: int, shuffle: bool, keyed_by_epoch: bool, weights: torch.Tensor | None = None
    ) -> None:
        self.size, self.seed, self.shuffle, self.keyed_by_epoch = size, seed, shuffle, keyed_by_epoch
        # Per-index drawing weights (data.sampler=balanced): each epoch draws `size` indices with
        # replacement, seeded by epoch, instead of a permutation.
        self.weights = weights
        self.resume_at: tuple[int, int] | None = None  # (epoch, this rank's indices already trained on)
        self.epoch = 0
        distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if distributed else 0
        self.world_size = dist.get_world_size() if distributed else 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def dataset_indices(self, batch_idx: int, batch_size: int, count: int) -> list[int]:
        """The dataset index of each of the `count` items of this rank's batch `batch_idx`, for an
        unshuffled (evaluation) loader: each rank takes every world_size-th image."""
        first = batch_idx * batch_size
        return [(first + i) * self.world_size + self.rank for i in range(count)]

    def __len__(self) -> int:
        if self.shuffle:  # training: padded
            return math.ceil(self.size / self.world_size)
        return len(range(self.rank, self.size, self.world_size))

    def __iter__(self) -> Iterator[int | tuple[int, int]]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            if self.weights is not None:
                order = torch.multinomial(self.weights, self.size, replacement=True, generator=generator).tolist()
            else:
                order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        if self.shuffle:
            order = order + order[: len(self) * self.world_size - self.size]
        mine = order[self.rank :: self.world_size]
        if self.resume_at is not None and self.resume_at[0] == self.epoch:  # a mid-epoch checkpoint's epoch
            mine = mine[self.resume_at[1] :]
        self.resume_at = None
        for index in mine:
            yield (self.epoch, index) if self.keyed_by_epoch else index


class ResumableLoader(DataLoader):
    """The training loader, with the state Lightning keeps in a mid-epoch checkpoint (a run stopped by a
    signal: callbacks/stops.py): the epoch and how many of its batches were trained. Restored, the epoch
    continues with the batches it had not reached, in the same order, so the resumed run trains what an
    uninterrupted one would. `trained_batches` reads the trainer's count: the loader itself runs ahead
    (prefetching), the count of trained batches does not."""

    def __init__(self, *args: Any, trained_batches: Callable[[], int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trained_batches = trained_batches

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": int(self.trained_batches())}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.resume_at = (int(state["epoch"]), int(state["batches"]) * int(self.batch_size))
