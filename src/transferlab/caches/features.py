"""A frozen backbone costs one forward pass per dataset view, not one per epoch.

When a strategy keeps the whole backbone frozen for the whole run (`head_only`) or
for its first epochs (`two_phase`, `gradual`), its features are computed once and
the head trains on them while the backbone stays frozen; the datamodule switches
back to images when the backbone starts training. Training images get
`views` augmented versions: view v of image i is exactly the image the uncached
run sees in epoch v (augmentation is keyed by (epoch, index)), and epoch e trains
on view e mod `views`. So with `views` ≥ the number of epochs, or without
augmentation, the cached run trains on the very same inputs as the uncached one.

Features are kept in memory and, when a directory is given, on disk under a key
(`cache_key`: the backbone's weights, the preprocessing, the augmentation, the
split's files, the seed, the library versions, ...), so the next run of a sweep
that shares them skips the pass.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, Dataset

from transferlab import internals
from transferlab.caches.decoded import DECODING_LIBRARIES
from transferlab.console import Progress
from transferlab.files import atomic, library_versions, locked
from transferlab.images import sources_digest
from transferlab.options import SCHEMA_VERSION

log = logging.getLogger(__name__)


class FeatureBatch(NamedTuple):
    """Pooled features a frozen backbone already computed (this cache) and their labels: the
    classifier's second kind of input, which goes straight to the head. Image batches are plain
    (images, labels) pairs. A NamedTuple survives the loader's collation and Lightning's device
    transfer as this type, so the step can tell the two apart by type, not by shape."""

    features: torch.Tensor
    labels: torch.Tensor


@torch.no_grad()
def frozen_features(
    extract: Callable[[torch.Tensor], torch.Tensor],
    loader: DataLoader,
    device: str = "cpu",
    what: str = "",
    bar: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, labels) of the images `loader` yields, through `extract` (a backbone in eval mode);
    `what` names the pass in its progress (a bar unless `bar=False`, a line every tenth of a long one)."""
    features, labels = [], []
    progress = Progress(what or "frozen features", len(loader.sampler), "images", log, bar=bar)
    try:
        for images, targets in loader:
            features.append(extract(images.to(device)).float().cpu())
            labels.append(targets)
            progress.update(len(targets))
    finally:
        progress.close()
    return torch.cat(features), torch.cat(labels)


class FeatureViews(Dataset):
    """Cached features: `views[v, i]` for key (epoch, i) with v = epoch mod views; plain key i → view 0.
    Items are `FeatureBatch`es, so the loader's batches are too: the classifier sends them to its head."""

    def __init__(self, views: torch.Tensor, labels: list[int]) -> None:
        self.views, self.labels = views, labels
        self.label_tensor = torch.as_tensor(labels, dtype=torch.long)  # for whole-batch gathers

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: int | tuple[int, int]) -> FeatureBatch:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        return FeatureBatch(self.views[epoch % len(self.views), index], self.labels[index])

    def __getitems__(self, keys: list[int | tuple[int, int]]) -> FeatureBatch:
        """A whole batch by one tensor index (the loader's fetcher prefers this to one item at a time):
        a batch of cached features costs a gather, not a Python loop and a collation."""
        epochs = {key[0] for key in keys if isinstance(key, tuple)}
        if len(epochs) > 1:
            raise ValueError(f"one batch mixes the keys of epochs {sorted(epochs)}")
        view = next(iter(epochs), 0) % len(self.views)
        indices = torch.tensor([key[1] if isinstance(key, tuple) else key for key in keys])
        return FeatureBatch(self.views[view, indices], self.label_tensor[indices])

    @staticmethod
    def collate(batch: FeatureBatch) -> FeatureBatch:
        """`__getitems__` already gives the batch: nothing left to collate."""
        return batch


class CachedFeatures:
    """What a datamodule serves instead of images: each split's features, for every epoch
    (`until_epoch` None) or for the epochs before `until_epoch` only."""

    def __init__(self, splits: dict[str, FeatureViews], until_epoch: int | None) -> None:
        self.splits, self.until_epoch = splits, until_epoch

    def dataset(self, split: str, epoch: int) -> FeatureViews | None:
        """The split's features in `epoch`, or None: that epoch trains (or that split runs) on images."""
        if self.until_epoch is not None and epoch >= self.until_epoch:
            return None
        return self.splits.get(split)


def cache_key(module, datamodule, split: str, augment: bool, views: int) -> str:
    """Everything the features depend on: the backbone (name, weights and where it runs: CPU and GPU
    kernels round differently), the preprocessing, the augmentation and whether it runs on decoded
    images (`data.decode_cache`: another transform, other draws; memory and disk hold the same
    pixels), the split's files and labels, the seed, and the versions of the libraries that decode,
    transform and run the images (an upgrade may change the features). Every field of every part, and
    options.SCHEMA_VERSION: an option added later changes the key by itself, with nothing to list here."""
    digest = hashlib.sha256()
    for name, tensor in module.backbone.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    described = {
        "schema": SCHEMA_VERSION,
        "backbone": module.backbone.name,
        "pool": module.backbone.pool,
        "device": torch.device(module.device).type,
        "data_config": datamodule.data_config.to_dict(),
        "augment": dict(vars(datamodule.augment)) if augment else None,
        "decoded": bool(datamodule.decode_cache),
        "views": views,
        "seed": datamodule.seed,
        "labels": datamodule.splits[split].labels,
        "images": sources_digest(datamodule.splits[split].images),
        "libraries": library_versions(*DECODING_LIBRARIES, "timm"),  # timm builds most backbones
    }
    digest.update(json.dumps(described, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:24]


@torch.no_grad()
def split_features(
    module, datamodule, split: str, augment: bool, views: int, directory: Path | None, bar: bool = True
) -> torch.Tensor:
    """(views, N, num_features) features of one split, from disk if this exact view was computed before.
    Jobs of a sweep that want the same features at once: one computes them, the others wait and read its file."""
    if directory is None:
        return _computed(module, datamodule, split, augment, views, bar)
    path = directory / f"{split}-{cache_key(module, datamodule, split, augment, views)}.pt"
    with locked(path):
        features = _read(path, views, len(datamodule.splits[split].labels))
        if features is None:
            features = _computed(module, datamodule, split, augment, views, bar)
            _publish(features, path)
        else:
            log.info("feature cache: %s features from %s", split, path)
    return features


def _computed(module, datamodule, split: str, augment: bool, views: int, bar: bool = True) -> torch.Tensor:
    dataset = datamodule.image_dataset(split, augment=augment)
    module.backbone.eval()
    computed = []
    for view in range(views):
        # Keys (view, i), in order: the augmentation image i gets in epoch `view` of an uncached run.
        keys = [(view, i) for i in range(len(dataset))] if augment else list(range(len(dataset)))
        loader = DataLoader(dataset, batch_size=datamodule.batch_size, sampler=keys, num_workers=datamodule.num_workers)
        what = f"feature pass {split}" + (f", view {view + 1}/{views}" if views > 1 else "")
        computed.append(frozen_features(module.features, loader, module.device, what, bar)[0])
    return torch.stack(computed)


def _read(path: Path, views: int, count: int) -> torch.Tensor | None:
    """The features saved at `path`, or None: there are none, or the file is damaged (reported; computed again)."""
    if not path.is_file():
        return None
    try:
        features = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(features, torch.Tensor) or features.dim() != 3 or tuple(features.shape[:2]) != (views, count):
            raise ValueError(f"it holds no ({views}, {count}, features) tensor")
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        log.warning("feature cache %s is unreadable (%s): computing the features again", path, reason)
        return None
    return features


def _publish(features: torch.Tensor, path: Path) -> None:
    """Save under a name of this process's own, then rename into place: a reader only ever opens a complete
    file. A folder that cannot take the file costs the next run the forward pass, not this run."""
    try:
        with atomic(path) as partial:
            torch.save(features, partial)
    except (OSError, RuntimeError) as error:  # torch.save reports a full disk as RuntimeError
        log.warning("feature cache: could not write %s (%s); the next run computes these features again", path, error)


def features_pay_off(frozen_epochs: int | None, views: int) -> bool:
    """Cached features cost one frozen pass per view: they pay off when the backbone stays frozen
    for more epochs than that (head_only: the whole run). two_phase's default 2 head epochs with
    2 augmented views would do as many passes plus a loader switch: no faster (digits: 138 s vs 131 s,
    measured on the earlier EfficientNet-Lite network)."""
    return frozen_epochs is None or frozen_epochs > views


class FeatureCache:
    """The feature cache as one component (`feature_cache:` in the config): whether cached features pay
    off for a run, computing (or reading) them, and the switch back to images when the backbone starts
    training. `attach` is all a run calls; the datamodule only serves what it is given."""

    def __init__(self, enabled: bool = True, views: int = 2, dir: str | None = None) -> None:
        self.enabled, self.views = enabled, views
        self.directory = Path(dir).expanduser() if dir else None

    def attach(self, module, datamodule, frozen_epochs: int | None, resume_from: Path | None = None) -> list[Callback]:
        """Give `datamodule` cached features for the epochs the backbone stays frozen (`frozen_epochs`,
        None: the whole run) when that pays off; returns the callbacks the run then needs."""
        views = self.views if datamodule.augment.enabled else 1
        if not self.enabled or not features_pay_off(frozen_epochs, views) or resumes_after(resume_from, frozen_epochs):
            return []
        cache_features(module, datamodule, views=self.views, directory=self.directory, until_epoch=frozen_epochs)
        # Partly frozen runs (two_phase): new loaders, over images, when the backbone starts training.
        return [] if frozen_epochs is None else [BackToImages(frozen_epochs)]


def resumes_after(checkpoint: Path | None, frozen_epochs: int | None) -> bool:
    """Whether a resumed run starts after the backbone's frozen epochs (cached features unused)."""
    if checkpoint is None or frozen_epochs is None:
        return False
    from transferlab.models.weights import read_checkpoint

    saved_epoch = read_checkpoint(checkpoint, "resume")["epoch"]
    return saved_epoch + 1 >= frozen_epochs  # `epoch` is the last finished one


def cache_features(
    module, datamodule, views: int, directory: Path | str | None, until_epoch: int | None = None
) -> None:
    """Give `datamodule` feature loaders instead of image loaders for every split, for the whole
    run or (`until_epoch`) for the first epochs only: then the test split runs on images."""
    augmenting = datamodule.augment.enabled
    folder = Path(directory).expanduser() if directory else None
    splits = {}
    for split in ("train", "val") if until_epoch is not None else ("train", "val", "test"):
        if split not in datamodule.splits:
            continue  # no validation split (data.val_fraction=0)
        augment = split == "train" and augmenting
        features = split_features(module, datamodule, split, augment, views if augment else 1, folder)
        splits[split] = FeatureViews(features, datamodule.splits[split].labels)
    datamodule.cached_features = CachedFeatures(splits, until_epoch)
    log.info(
        "feature cache: the head trains on frozen %s features (%d augmented view(s) of the training set)%s",
        module.backbone.name,
        views if augmenting else 1,
        f" for {until_epoch} epoch(s)" if until_epoch else "",
    )


class BackToImages(Callback):
    """Switches the loaders from cached features back to images at `until_epoch`, when the backbone
    starts training (two_phase, gradual). Lightning is asked to rebuild the loaders every epoch until
    both the training and the validation loader have switched, then never again: counted from the
    current epoch, so a run resumed inside the frozen epochs switches at the same epoch as one that
    never stopped (a fixed `reload_dataloaders_every_n_epochs=until_epoch` counts from the resumed
    epoch and would keep serving features to a training backbone)."""

    def __init__(self, until_epoch: int) -> None:
        self.until_epoch = until_epoch

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            internals.assign(internals.RELOAD_DATALOADERS, trainer, 1)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning has just rebuilt the validation loader for this epoch (after the training one).
        if not trainer.sanity_checking and trainer.current_epoch >= self.until_epoch:
            internals.assign(internals.RELOAD_DATALOADERS, trainer, 0)
