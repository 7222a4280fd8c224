"""Are the strategies' default recipes near their tuned best? A grid per strategy, side by side.

    python benchmarks/recipes.py                                    # digits, every strategy (about 1 h on 2 cores)
    python benchmarks/recipes.py --data photos                      # fashion_1k, photos: the other offline sets
    python benchmarks/recipes.py --strategies head_only --lrs 0.003,0.01,0.03 --epochs 10,30
    python benchmarks/recipes.py --data image_folder --data-root /path/to/photos

For each strategy: one run at its defaults (what `python src/train.py strategy=<s>` does),
then one run per (learning rate × epoch budget) of the grid; the grid's best is chosen on
the validation split (never the test split) and reported with its test accuracy. For
head_only it also fits the linear-probe reference: an L2 logistic regression on standardised
frozen features of the same network (C chosen on the validation split), the protocol of
linear-probe papers. The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from transferlab.run import build
from transferlab.run.pipeline import train

STRATEGIES = (
    "head_only",
    "two_phase",
    "top_blocks",
    "full_finetune",
    "discriminative",
    "gradual",
    "fastai_fine_tune",
    "scratch",
    "auto",
)
# lr × max_epochs per strategy: cached head epochs are cheap, so head_only also tries longer budgets;
# auto is only run at its defaults (it picks one of the others).
GRIDS = {
    "head_only": ([0.003, 0.01, 0.03, 0.1], [30, 60]),
    "discriminative": ([0.001, 0.003, 0.005, 0.01], [10]),  # 5e-3, its default, between the sets' choices
    "auto": ([], []),
    "default": ([0.001, 0.003, 0.01], [10]),
}
# Rough seconds per epoch at 96 px on an idle 2-core CPU, 1,000 training images: cached head epochs,
# then images through the backbone.
SECONDS_PER_EPOCH = {"head_only": 0.2, "default": 12.0}


def run(overrides: list[str], where: Path, seeds: int = 1, first_seed: int = 42) -> dict:
    """Training runs, as `src/train.py` with these overrides would do them, in this process. With several
    seeds (first_seed, first_seed + 1, ...; the seed also draws data subsets and splits): one run each,
    their mean accuracies and test spread. With one, the config's own seed (an override's, if any)."""
    runs = []
    for seed in range(first_seed, first_seed + seeds):
        chosen, run_dir = ([f"seed={seed}"], where / f"seed{seed}") if seeds > 1 else ([], where)
        cfg = build.run_config([*overrides, *chosen, f"hydra.run.dir={run_dir}"], run_dir)
        started = time.perf_counter()
        metrics = train(cfg)
        runs.append(
            {
                "val": round(metrics["val/acc_best"], 4),
                "test": round(metrics["test/acc"], 4),
                "epochs": metrics["epochs"],
                "s": round(time.perf_counter() - started, 1),
                **({"choice": metrics["auto/choice"]} if "auto/choice" in metrics else {}),
            }
        )
    if seeds == 1:
        return runs[0]
    tests = [r["test"] for r in runs]
    return {
        "val": round(float(np.mean([r["val"] for r in runs])), 4),
        "test": round(float(np.mean(tests)), 4),
        "test_sd": round(float(np.std(tests, ddof=1)), 4),
        "epochs": [r["epochs"] for r in runs],
        "s": round(sum(r["s"] for r in runs), 1),
        "runs": runs,
    }


def epochs_override(cfg, epochs: int) -> str:
    """A budget of `epochs` in all; fastai_fine_tune counts them as fine_tune(N), after its frozen ones."""
    if "epochs" in cfg.strategy and "freeze_epochs" in cfg.strategy:
        return f"strategy.epochs={epochs - cfg.strategy.freeze_epochs}"
    return f"trainer.max_epochs={epochs}"


def shown(result: dict) -> str:
    """Test accuracy, with its spread over seeds when there are several."""
    return f"{result['test']:.4f}" + (f" ± {result['test_sd']:.4f}" if "test_sd" in result else "")


def linear_probe(data_overrides: list[str]) -> dict:
    """Logistic regression on standardised frozen features (evaluation transform), C chosen on val."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from transferlab.caches.features import split_features

    cfg = build.compose([*data_overrides, "strategy=head_only"])
    experiment = build.experiment(cfg)
    features = {
        split: split_features(experiment.module, experiment.datamodule, split, augment=False, views=1, directory=None)[
            0
        ].numpy()
        for split in ("train", "val", "test")
    }
    labels = {split: np.array(experiment.datamodule.splits[split].labels) for split in features}
    scaler = StandardScaler().fit(features["train"])
    scaled = {split: scaler.transform(values) for split, values in features.items()}
    best = None
    for c in (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0):
        model = LogisticRegression(C=c, max_iter=3000).fit(scaled["train"], labels["train"])
        val = model.score(scaled["val"], labels["val"])
        if best is None or val > best["val"]:
            best = {"C": c, "val": round(val, 4), "test": round(model.score(scaled["test"], labels["test"]), 4)}
    return best


def grid_of(args, strategy: str) -> tuple[list[float], list[int]]:
    lrs, epochs = GRIDS.get(strategy, GRIDS["default"])
    return (args.lrs or lrs, args.epochs or epochs) if lrs else ([], [])


def plan(args, strategies: list[str]) -> str:
    grids = {s: grid_of(args, s) for s in strategies}
    runs = args.seeds * sum(1 + len(lrs) * len(epochs) for lrs, epochs in grids.values())
    seconds = args.seeds * sum(
        SECONDS_PER_EPOCH.get(s, SECONDS_PER_EPOCH["default"]) * (10 + len(lrs) * sum(epochs))
        for s, (lrs, epochs) in grids.items()
    )
    seeds = f", {args.seeds} seeds a point" if args.seeds > 1 else ""
    return (
        f"recipes: {args.data}, strategies {', '.join(strategies)}: each at its defaults, then its lr × max_epochs "
        f"grid ({runs} runs at most{seeds}){' + the linear probe' if 'head_only' in strategies else ''}; "
        f"time: about {max(1, round(seconds / 60))} min on an idle 2-core CPU (up to 3 times that on a busy one)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # The study's offline sets: digits, fashion_1k (Fashion-MNIST, 100 images a class: Debian's package
    # dataset-fashion-mnist or a download) and photos (crops of scikit-image's photographs).
    parser.add_argument("--data", default="digits", help="a data config: digits, fashion_1k, photos, ...")
    parser.add_argument("--data-root", default=None, help="data.root, for data=image_folder")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--lrs", default=None, type=lambda t: [float(v) for v in t.split(",")], help="every grid's")
    parser.add_argument("--epochs", default=None, type=lambda t: [int(v) for v in t.split(",")], help="every grid's")
    parser.add_argument("--extra", default="", help="overrides for every run, space-separated")
    parser.add_argument("--seeds", default=1, type=int, help="runs per grid point: means and spread")
    parser.add_argument("--first-seed", default=42, type=int, help="with --seeds N: seeds first, first + 1, ...")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error(f"--seeds {args.seeds}: at least 1")
    strategies = args.strategies.split(",")
    print(plan(args, strategies), flush=True)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    data = [
        f"data={args.data}",
        *([f"data.root={args.data_root}"] if args.data_root else []),
    ]
    common = [
        *data,
        "~callbacks.model_summary",
        "+trainer.enable_model_summary=false",
        "trainer.enable_progress_bar=false",
        *args.extra.split(),
    ]
    figures: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for strategy in strategies:
            where = Path(scratch) / strategy
            cfg = build.compose([*common, f"strategy={strategy}"])
            default = run([*common, f"strategy={strategy}"], where / "default", args.seeds, args.first_seed)
            if strategy == "auto":
                choice = default.pop("choice", None) or "/".join(r["choice"] for r in default["runs"])
                figures[strategy] = {"default": {"choice": choice, **default}}
                print(f"{strategy:<16} chose {choice}: test {shown(default)}")
                continue
            lrs, budgets = grid_of(args, strategy)
            grid = {}
            for lr in lrs:
                for epochs in budgets:
                    key = f"lr={lr:g},max_epochs={epochs}"
                    if (lr, epochs) == (cfg.optimizer.lr, cfg.trainer.max_epochs):
                        grid[key] = default  # the default is a point of the grid: the same run
                        continue
                    grid[key] = run(
                        [*common, f"strategy={strategy}", f"optimizer.lr={lr}", epochs_override(cfg, epochs)],
                        where / f"lr{lr:g}-e{epochs}",
                        args.seeds,
                        args.first_seed,
                    )
            best_key = max(grid, key=lambda k: (grid[k]["val"], -grid[k]["s"]))  # chosen on val, never on test
            figures[strategy] = {
                "default": {"lr": cfg.optimizer.lr, "max_epochs": cfg.trainer.max_epochs, **default},
                "best": {"grid": best_key, **grid[best_key]},
                "gap_points": round(100 * (grid[best_key]["test"] - default["test"]), 1),
                "grid": grid,
            }
            if strategy == "head_only":
                figures[strategy]["linear_probe"] = linear_probe(common)
            print(
                f"{strategy:<16} default (lr {cfg.optimizer.lr:g}, ≤{cfg.trainer.max_epochs} epochs): test "
                f"{shown(default)} in {default['s']} s | grid best on val ({best_key}): test "
                f"{shown(grid[best_key])}{'' if strategy != 'head_only' else ' | linear probe: ' + str(figures[strategy]['linear_probe'])}",
                flush=True,
            )
    print(json.dumps({"data": args.data, "strategies": figures}))


if __name__ == "__main__":
    main()
