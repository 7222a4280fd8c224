"""Which backbone for my data? Rank pretrained backbones by a linear probe on frozen features, in minutes.

    python src/screen.py data=digits 'models=[efficientnet_lite0,efficientnet_lite1,resnet50]'
    python src/screen.py data=image_folder data.root=/my/photos top_k=2 sample_size=1000

Takes train.py's overrides (data=, data.*, feature_cache.*, seed) and conf/screen.yaml's keys.
For each backbone, built pretrained through transferlab.run.build as a head_only run builds it:

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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from transferlab import console
from transferlab.callbacks.progress import log_lines_above_the_bar
from transferlab.errors import TransferlabError
from transferlab.models.backbones import create_backbone, list_backbones
from transferlab.options import Rule
from transferlab.run import build
from transferlab.run.checks import check_config
from transferlab.run.pipeline import pre_fit_device
from transferlab.screen.measure import measure, warm
from transferlab.screen.report import Entry, Screened, markdown, plot
from transferlab.strategies.auto import decision_table

log = logging.getLogger(__name__)

# conf/screen.yaml's own keys: never passed on to train.py.
SCREEN_RULES = {"sample_size": Rule(int, 1), "top_k": Rule(int, 1), "warm_cache": Rule(bool)}
# Model configs that name no backbone by themselves (they need model.name=).
MODEL_CONFIGS = {p.stem for p in (build.CONF / "model").glob("*.yaml")} - {"timm", "torchvision"}
STRATEGY_ORDER = ("head_only", "top_blocks", "full_finetune")


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
        log_lines_above_the_bar()  # log lines go above the bar, not into it
    with bar:
        yield bar


def rank(screened: list[Screened], thresholds: DictConfig, images_per_class: float) -> list[Screened]:
    """Pretrained backbones by probe (cheaper first on a tie), then the random references; each
    pretrained one with the strategy the decision table gives (strategy=auto's own rule)."""
    order = sorted(screened, key=lambda s: (s.weights != "pretrained", -s.probe, s.gflops or float("inf"), s.model))
    for position, s in enumerate(order, start=1):
        s.rank = position
        if s.weights != "pretrained":
            continue
        s.suggested, options = decision_table(
            images_per_class, s.probe, thresholds.many_per_class, thresholds.similar, thresholds.top_n, thresholds.top_n
        )
        if s.suggested == "full_finetune":
            s.suggested_detail = f"backbone lr × {options['backbone_lr_scale']}"
        elif s.suggested == "top_blocks":
            s.suggested_detail = f"n={options['n']}"
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
