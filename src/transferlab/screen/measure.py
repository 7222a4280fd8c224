"""One backbone of the screen: built as a head_only run builds it, one frozen pass over a sample of the
training split (through the feature cache), the linear probe, images/s and GFLOPs."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig
from rich.progress import Progress
from torch.utils.data import DataLoader

from transferlab.caches.features import split_features
from transferlab.data.splits import subset
from transferlab.errors import PretrainedWeightsUnavailable, TransferlabError
from transferlab.run import build
from transferlab.run.pipeline import pre_fit_device
from transferlab.screen.report import Entry, NotScreened, Screened
from transferlab.strategies.policies import HeadOnly
from transferlab.strategies.probe import probe_fold_scores, probe_sample

log = logging.getLogger(__name__)


@contextmanager
def counted(module, advance: Callable[[int], None]) -> Iterator[list[tuple[int, float]]]:
    """(images, seconds) of each forward pass of the backbone (the feature cache calls `module.features`);
    an instance attribute shadows the method until the block ends."""
    forward, calls = module.features, []

    def timed(images: torch.Tensor) -> torch.Tensor:
        started = time.perf_counter()
        features = forward(images)
        if features.is_cuda:
            torch.cuda.synchronize(features.device)
        calls.append((len(images), time.perf_counter() - started))
        advance(len(images))
        return features

    module.features = timed
    try:
        yield calls
    finally:
        del module.features


def images_per_second(calls: list[tuple[int, float]]) -> float:
    """Throughput without the first batch when there are others: it pays one-off costs (allocation,
    kernel selection) that made efficientnet_lite0 read 23 images/s instead of 100 on 48 images."""
    timed = calls[1:] or calls
    return sum(n for n, _ in timed) / sum(s for _, s in timed)


def head_only_backbone(cfg: DictConfig):
    """(spec, backbone) as a head_only run builds them, seeded alike (a random backbone gets that run's weights)."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    return build.backbone(cfg, HeadOnly())


def module_and_data(cfg: DictConfig, spec: dict, backbone):
    """The classifier and datamodule of that run, on the device its feature pass runs on."""
    data = build.datamodule(cfg, backbone)
    module = build.classifier(cfg, spec, backbone, data.num_classes, data.class_names, data.data_config.to_dict())
    module.to(pre_fit_device(cfg))
    return module, data


def cache_dir(cfg: DictConfig) -> Path | None:
    enabled = cfg.get("feature_cache") and cfg.feature_cache.enabled and cfg.feature_cache.dir
    return Path(str(cfg.feature_cache.dir)).expanduser() if enabled else None


def measure(e: Entry, cfg: DictConfig, bar: Progress, data_facts: dict) -> Screened | NotScreened:
    task = bar.add_task(f"{e.text}: building", total=None)
    try:
        spec, backbone = head_only_backbone(cfg)
    except PretrainedWeightsUnavailable as error:
        lines = str(error).splitlines()
        bar.update(task, description=f"{e.text}: weights unavailable", total=1, completed=1)
        log.warning("%s: not screened: %s", e.text, lines[0])
        return NotScreened(e.text, lines[0], [line.strip() for line in lines[1:]])
    try:  # a backbone's own minimum input size skips that backbone only
        build.check_input_size(cfg.data.get("image_size") or backbone.data_config.input_size, backbone)
    except TransferlabError as error:
        bar.update(task, description=f"{e.text}: input too small", total=1, completed=1)
        log.warning("%s: not screened: %s", e.text, error)
        return NotScreened(e.text, str(error))
    module, data = module_and_data(cfg, spec, backbone)
    if not data_facts:  # the first backbone measured: the data's lines once, not once a backbone
        data.log_splits()
    train = data.splits["train"]
    indices = probe_sample(train.labels, cfg.sample_size, data.seed)
    split = "train" if len(indices) == len(train.labels) else "probe"
    if split == "probe":  # a split of its own, so the sample's features are cached under its own key
        data.splits["probe"] = subset(train.images, train.labels, indices)
    labels = np.asarray(data.splits[split].labels)
    check_classes(labels, data.class_names)
    bar.update(task, description=f"{e.text}: frozen pass", total=len(labels))
    started = time.perf_counter()
    with counted(module, lambda n: bar.advance(task, n)) as calls:
        features = split_features(module, data, split, False, 1, cache_dir(cfg), bar=False)[0]  # the screen's bar
    computed, pass_seconds = bool(calls), time.perf_counter() - started
    images_per_s = images_per_second(calls) if computed else throughput(module, data, split)
    started = time.perf_counter()
    folds = probe_fold_scores(features.numpy(), labels, data.seed)
    fit_seconds = time.perf_counter() - started  # auto's probe: more than the pass itself for 1280 features
    backbone = module.backbone
    data_facts.update(
        train_images=len(train.labels),
        classes=data.num_classes,
        images_per_class=round(len(train.labels) / data.num_classes, 1),
        probe_images=len(labels),
        seed=data.seed,
    )
    result = Screened(
        model=e.text,
        weights="pretrained" if spec["pretrained"] else "random",
        probe=round(max(0.0, float(folds.mean())), 4),
        probe_spread=round(float(folds.std(ddof=1)), 4),
        fold_scores=[round(float(f), 4) for f in folds],
        probe_images=len(labels),
        images_per_s=round(images_per_s, 1),
        pass_seconds=round(pass_seconds, 2) if computed else None,
        probe_fit_seconds=round(fit_seconds, 2),
        params=sum(p.numel() for p in backbone.parameters()),
        gflops=gflops(module, data.data_config.input_size),
        input_size=data.data_config.input_size,
        native_input_size=backbone.data_config.input_size,
        features=backbone.num_features,
    )
    bar.update(task, description=f"{e.text}: probe {result.probe:.3f}", completed=len(labels))
    log.info(
        "%s: probe %.3f ± %.3f on %d images, %.0f images/s%s",
        e.text,
        result.probe,
        result.probe_spread,
        len(labels),
        images_per_s,
        "" if computed else " (features cached)",
    )
    return result


def check_classes(labels: np.ndarray, class_names: list[str]) -> None:
    counts = np.bincount(labels, minlength=len(class_names))
    if len(class_names) < 2 or counts.min() < 2:
        raise TransferlabError(
            f"the linear probe needs 2 classes with 2 training images each; the sample has {dict(zip(class_names, counts.tolist()))}"
        )


@torch.no_grad()
def throughput(module, data, split: str) -> float:
    """Images/s of one batch after a warm-up one: the pass itself was read from the feature cache."""
    dataset = data.image_dataset(split, augment=False)
    images, _ = next(iter(DataLoader(dataset, batch_size=min(data.batch_size, len(dataset)))))
    images = images.to(module.device)
    module.backbone.eval()
    module.features(images)
    started = time.perf_counter()
    features = module.features(images)
    if features.is_cuda:
        torch.cuda.synchronize(features.device)
    return len(images) / (time.perf_counter() - started)


@torch.no_grad()
def gflops(module, size: int) -> float | None:
    """Forward GFLOPs of one image at the screened input size (torch's own counter; a multiply-add is 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    try:
        with counter:
            module.backbone.eval()(torch.zeros(1, 3, size, size, device=module.device))
    except Exception as error:  # noqa: BLE001 - an operator the counter cannot trace costs the column, not the screen
        log.warning("%s: GFLOPs not counted (%s)", module.backbone.name, error)
        return None
    return round(counter.get_total_flops() / 1e9, 3)


def warm(e: Entry, cfg: DictConfig, bar: Progress) -> None:
    """The features a head_only run of this backbone reads (run/pipeline.py's FeatureCache.attach call)."""
    cache = build.feature_cache(cfg)
    if not cache.enabled or cache.directory is None:
        log.info("warm_cache: the feature cache is off or in memory only (feature_cache.dir): nothing to warm")
        return
    task = bar.add_task(f"{e.text}: head_only features", total=None)
    module, data = module_and_data(cfg, *head_only_backbone(cfg))
    views = cache.views if data.augment.enabled else 1
    total = views * len(data.splits["train"].labels) + len(data.splits["val"].labels) + len(data.splits["test"].labels)
    bar.update(task, total=total)
    with counted(module, lambda n: bar.advance(task, n)) as calls:
        cache.attach(module, data, HeadOnly().frozen_backbone_epochs)
    bar.update(task, completed=total)
    log.info("%s: head_only features in %s (%d images computed)", e.text, cache.directory, sum(n for n, _ in calls))
