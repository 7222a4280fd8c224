"""Are the strategies' default recipes near their tuned best? A grid per strategy, side by side.

    python benchmarks/recipes.py                                    # digits, every strategy (about 1 h on 2 cores)
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

from transferlab import build
from transferlab.run import train

STRATEGIES = ("head_only", "two_phase", "top_blocks", "full_finetune", "discriminative", "gradual", "scratch")
# Rough seconds per epoch on digits at 96 px on an idle 2-core CPU: cached head epochs, then images through the backbone.
SECONDS_PER_EPOCH = {"head_only": 0.2, "default": 12.0}


def run(overrides: list[str], where: Path) -> dict:
    """One training run, as `src/train.py` with these overrides would do it, in this process."""
    cfg = build.run_config([*overrides, f"hydra.run.dir={where}"], where)
    started = time.perf_counter()
    metrics = train(cfg)
    return {
        "val": round(metrics["val/acc_best"], 4),
        "test": round(metrics["test/acc"], 4),
        "epochs": metrics["epochs"],
        "s": round(time.perf_counter() - started, 1),
    }


def linear_probe(data_overrides: list[str]) -> dict:
    """Logistic regression on standardised frozen features (evaluation transform), C chosen on val."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from transferlab.feature_cache import split_features

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


def plan(args, strategies: list[str]) -> str:
    runs = len(strategies) * (1 + len(args.lrs) * len(args.epochs))
    seconds = sum(
        SECONDS_PER_EPOCH.get(s, SECONDS_PER_EPOCH["default"]) * (10 + len(args.lrs) * sum(args.epochs))
        for s in strategies
    )
    return (
        f"recipes: {args.data}, strategies {', '.join(strategies)}: each at its defaults, then lr "
        f"{args.lrs} × max_epochs {args.epochs} ({runs} runs){' + the linear probe' if 'head_only' in strategies else ''}; "
        f"time: about {max(1, round(seconds / 60))} min on an idle 2-core CPU (up to 3 times that on a busy one)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="digits")
    parser.add_argument("--data-root", default=None, help="data.root, for data=image_folder")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--lrs", default="0.001,0.003,0.01,0.03", type=lambda t: [float(v) for v in t.split(",")])
    parser.add_argument("--epochs", default="10,30", type=lambda t: [int(v) for v in t.split(",")])
    parser.add_argument("--extra", default="", help="overrides for every run, space-separated")
    args = parser.parse_args()
    strategies = args.strategies.split(",")
    print(plan(args, strategies), flush=True)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    data = [f"data={args.data}", *([f"data.root={args.data_root}"] if args.data_root else [])]
    common = [*data, "~callbacks.model_summary", "trainer.enable_progress_bar=false", *args.extra.split()]
    figures: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for strategy in strategies:
            where = Path(scratch) / strategy
            default = run([*common, f"strategy={strategy}"], where / "default")
            grid = {}
            for lr in args.lrs:
                for epochs in args.epochs:
                    key = f"lr={lr:g},max_epochs={epochs}"
                    grid[key] = run(
                        [*common, f"strategy={strategy}", f"optimizer.lr={lr}", f"trainer.max_epochs={epochs}"],
                        where / f"lr{lr:g}-e{epochs}",
                    )
            best_key = max(grid, key=lambda k: (grid[k]["val"], -grid[k]["s"]))  # chosen on val, never on test
            cfg = build.compose([*common, f"strategy={strategy}"])
            figures[strategy] = {
                "default": {"lr": cfg.optimizer.lr, "max_epochs": cfg.trainer.max_epochs, **default},
                "best": {"grid": best_key, **grid[best_key]},
                "gap_points": round(100 * (grid[best_key]["test"] - default["test"]), 1),
                "grid": grid,
            }
            if strategy == "head_only":
                figures[strategy]["linear_probe"] = linear_probe(common)
            print(
                f"{strategy:<15} default (lr {cfg.optimizer.lr:g}, ≤{cfg.trainer.max_epochs} epochs): test "
                f"{default['test']:.4f} in {default['s']} s | grid best on val ({best_key}): test "
                f"{grid[best_key]['test']:.4f}{'' if strategy != 'head_only' else ' | linear probe: ' + str(figures[strategy]['linear_probe'])}",
                flush=True,
            )
    print(json.dumps({"data": args.data, "strategies": figures}))


if __name__ == "__main__":
    main()
