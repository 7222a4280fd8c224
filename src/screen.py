"""Which backbone for my data? Rank pretrained backbones by a linear probe on frozen features, in minutes.

    python src/screen.py data=digits 'models=[efficientnet_lite0,efficientnet_lite1,resnet50]'
    python src/screen.py data=image_folder data.root=/my/photos top_k=2 sample_size=1000

Takes train.py's overrides (data=, data.*, feature_cache.*, seed) and conf/screen.yaml's keys.
For each backbone, built pretrained through transferlab.build as a head_only run builds it:

* probe: strategy=auto's similarity measure, on the same images: a seeded, stratified sample of the
  training split (`sample_size`, default strategy.max_images; all of it when smaller) through the
  evaluation transform, one frozen forward pass, then the chance-corrected cross-validated accuracy
  of a linear probe (0: chance, 1: perfect) and its spread over the folds. Augmented features are
  not used for it: on digits they lowered the probe of efficientnet_lite0 from 0.872 to 0.806, and
  the decision table's `similar` threshold was set on clean ones.
* images/s of the frozen forward pass, GFLOPs per image, parameters, input size.

The probe's features go through the feature cache (feature_cache.dir), keyed as a training run
keys them: the whole training split without augmentation is the file a train.py run with
data.augment.enabled=false reads, and a repeated screen reads every file back. A head_only run
with augmentation trains on augmented views the probe never computes, so `warm_cache` computes
those (and val, test) for the top_k backbones only, after ranking: the printed sweep's head_only
runs then start training at once, and backbones that are not suggested cost no extra pass.

Backbones with random weights (small_cnn, model.pretrained=false) are references, ranked after the
pretrained ones and never suggested: the decision table is about transferring pretrained features.
Writes screen.md, screen.json and screen.png in outputs/screens/<date>/<time>/ and prints the
train.py sweep for the top_k backbones × the strategies the notes' decision table suggests.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import hydra
import lightning as L
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch.utils.data import DataLoader

from transferlab import build, console, resolvers
from transferlab.backbones import create_backbone, list_backbones
from transferlab.checks import Rule, check_config
from transferlab.data.base import subset
from transferlab.errors import PretrainedWeightsUnavailable, TransferlabError
from transferlab.feature_cache import split_features
from transferlab.freeze import HeadOnly
from transferlab.run import pre_fit_device
from transferlab.screen_report import Entry, NotScreened, Screened, markdown, plot
from transferlab.transferability import probe_fold_scores, probe_sample

log = logging.getLogger("transferlab")
console.quiet_upstream()
resolvers.register()

# conf/screen.yaml's own keys: never passed on to train.py.
SCREEN_RULES = {"sample_size": Rule(int, 1), "top_k": Rule(int, 1), "warm_cache": Rule(bool)}
# Model configs that name no backbone by themselves (they need model.name=).
MODEL_CONFIGS = {p.stem for p in (build.CONF / "model").glob("*.yaml")} - {"timm", "torchvision"}
STRATEGY_ORDER = ("head_only", "top_blocks", "full_finetune")


@hydra.main(version_base="1.3", config_path="../conf", config_name="screen")
def main(cfg: DictConfig) -> None:
    try:
        screen(cfg, Path(cfg.paths.output_dir), list(HydraConfig.get().overrides.task))
    except TransferlabError as error:
        log.error("%s", error)
        sys.exit(1)


def screen(cfg: DictConfig, output_dir: Path, task_overrides: list[str]) -> dict:
    """Measure every backbone of `cfg.models`, rank them, write the report; returns screen.json's content."""
    entries = [entry(text) for text in model_list(cfg)]
    shared = [o for o in task_overrides if build.override_key(o) not in ("models", "model")]
    configs = {e: composed([*shared, *e.overrides]) for e in entries}  # every value checked before any work
    screened, skipped, data = [], [], {}
    with progress_bar() as bar:
        for e, entry_cfg in configs.items():
            result = measure(e, entry_cfg, bar, data)
            (screened if isinstance(result, Screened) else skipped).append(result)
    ranked = rank(screened, cfg.strategy, data.get("images_per_class", 0.0))
    top = [s for s in ranked if s.weights == "pretrained"][: cfg.top_k]
    chosen = [next(e for e in entries if e.text == t.model) for t in top]
    commands = next_commands(task_overrides, top, chosen)
    report = {
        "data": HydraConfig.get().runtime.choices["data"],
        **data,
        "device": str(pre_fit_device(cfg)),
        "thresholds": {k: cfg.strategy[k] for k in ("many_per_class", "similar", "top_n")},
        "backbones": [asdict(s) for s in ranked],
        "not_screened": [asdict(s) for s in skipped],
        "commands": commands,
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "screen.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    (output_dir / "screen.md").write_text(markdown(report))
    plot(ranked, output_dir / "screen.png")
    log.info("screen: %s", output_dir / "screen.md")
    if not ranked:
        raise TransferlabError(f"no backbone could be screened: see {output_dir / 'screen.md'}")
    if cfg.warm_cache and top:
        with progress_bar() as bar:
            for e in chosen:
                warm(e, configs[e], bar)
    print("\n".join(["next:", *commands]) if commands else "next: no pretrained backbone was screened")
    return report


def model_list(cfg: DictConfig) -> list[str]:
    """`models` as a list of entries, after checking conf/screen.yaml's keys and train.py's."""
    for name, rule in SCREEN_RULES.items():
        if not rule.allows(cfg.get(name)):
            raise TransferlabError(f"{name}={cfg.get(name)}: expected {rule.describe()}")
    if "similar" not in (cfg.get("strategy") or {}):
        raise TransferlabError(
            "the screen takes the decision table's thresholds from strategy=auto (strategy.similar=…): "
            "leave strategy= out"
        )
    models = cfg.get("models")
    models = [models] if isinstance(models, str) else models
    if not isinstance(models, (ListConfig, list)) or not models:
        raise TransferlabError(
            f"models={models}: expected a list of model names, e.g. 'models=[efficientnet_lite0,resnet50]'"
        )
    texts = [str(m).strip() for m in models]
    if not all(texts) or len(set(texts)) < len(texts):
        raise TransferlabError(f"models={texts}: expected distinct, non-empty model names")
    return texts


def entry(text: str) -> Entry:
    name, *extra = text.split()
    if name in MODEL_CONFIGS:
        return Entry(text, name, (f"model={name}", *extra), sweepable=not extra)
    known = name in list_backbones()
    if not known:
        import timm

        known = timm.is_model(name.removeprefix("timm/"))
    if not known:
        create_backbone(name, pretrained=False)  # raises the one-line error that lists the valid names
    group = "torchvision" if name in list_backbones() else "timm"
    return Entry(text, name, (f"model={group}", f"model.name={name}", *extra), sweepable=False)


def composed(overrides: list[str]) -> DictConfig:
    """conf/screen.yaml with these overrides, checked as train.py checks its config."""
    try:
        cfg = hydra.compose("screen", overrides=overrides)
    except HydraException as error:
        raise TransferlabError(str(error).splitlines()[0]) from None
    check_config(cfg)
    return cfg


@contextmanager
def progress_bar() -> Iterator[Progress]:
    """A bar per backbone in a terminal; in a file or CI log nothing (the log lines say the same)."""
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not console.stdout_is_terminal(),
    )
    if not bar.disable:
        console._log_lines_above_the_bar()  # log lines go above the bar, not into it
    with bar:
        yield bar


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
        features = split_features(module, data, split, augment=False, views=1, directory=cache_dir(cfg))[0]
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


def rank(screened: list[Screened], thresholds: DictConfig, images_per_class: float) -> list[Screened]:
    """Pretrained backbones by probe (cheaper first on a tie), then the random references; each
    pretrained one with the decision table's strategy (freeze.Auto.decide's rule)."""
    order = sorted(screened, key=lambda s: (s.weights != "pretrained", -s.probe, s.gflops or float("inf"), s.model))
    for position, s in enumerate(order, start=1):
        s.rank = position
        if s.weights != "pretrained":
            continue
        many, similar = images_per_class >= thresholds.many_per_class, s.probe >= thresholds.similar
        if many:
            s.suggested, s.suggested_detail = "full_finetune", f"backbone lr × {0.1 if similar else 1.0}"
        elif similar:
            s.suggested = "head_only"
        else:
            s.suggested, s.suggested_detail = "top_blocks", f"n={thresholds.top_n}"
    return order


def next_commands(task_overrides: list[str], top: list[Screened], chosen: list[Entry]) -> list[str]:
    """The sweep over the top backbones × head_only (the cheap baseline, whose features the screen may have
    cached) and the strategies the decision table suggests for them, with the screen's data and cache options."""
    strategies = [s for s in STRATEGY_ORDER if s == "head_only" or s in {t.suggested for t in top}]
    overrides = [
        o for o in task_overrides if build.override_key(o) not in ("models", "model", "strategy", *SCREEN_RULES)
    ]
    if not any(build.override_key(o) == "data" for o in overrides):
        overrides.insert(0, f"data={HydraConfig.get().runtime.choices['data']}")
    return sweep_commands(overrides, chosen, strategies) if chosen else []


def sweep_commands(overrides: list[str], chosen: list[Entry], strategies: list[str]) -> list[str]:
    """The train.py sweep: model config names in one model=a,b,c; others (own overrides, no config) alone."""
    head = ["python", "src/train.py", "-m", *overrides]
    strategy = f"strategy={','.join(strategies)}"
    plain = [e.name for e in chosen if e.sweepable]
    lines = [[*head, f"model={','.join(plain)}", strategy]] if plain else []
    lines += [[*head, *e.overrides, strategy] for e in chosen if not e.sweepable]
    return [shlex.join(line) for line in lines]


def warm(e: Entry, cfg: DictConfig, bar: Progress) -> None:
    """The features a head_only run of this backbone reads (run.fit_and_test's FeatureCache.attach call)."""
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


if __name__ == "__main__":
    main()
