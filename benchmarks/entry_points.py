"""How long the user waits: `--help`, `--cfg job`, a mistyped key, a bad value and the default run of
src/train.py, as processes started the way a user starts them, best of `--repeats`.

    python benchmarks/entry_points.py                            # this checkout (about 2 min on 2 cores)
    python benchmarks/entry_points.py --against ../older-checkout  # side by side, alternated: ratios
    python benchmarks/entry_points.py --skip-run                 # the answers only (about 20 s)

The first line says what will run; the last line is one JSON object with the figures (seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "help": ["--help"],
    "cfg_job": ["--cfg", "job"],
    "typo": ["optimizer.lrr=1"],
    "bad_value": ["optimizer.lr=-1"],
    "default_run": [],
}


def seconds(checkout: Path, arguments: list[str], outputs: Path) -> float:
    """Wall time of `python src/train.py ARGS` run from `checkout`, its own src/ first on the path."""
    environment = {**os.environ, "PYTHONPATH": str(checkout / "src"), "TRANSFERLAB_OUTPUTS": str(outputs)}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, str(checkout / "src" / "train.py"), *arguments],
        cwd=checkout,
        env=environment,
        capture_output=True,
        check=False,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", type=Path, help="another checkout, timed alternately with this one")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-run", action="store_true", help="leave out the default run (about 25 s each)")
    args = parser.parse_args()
    checkouts = {"this": ROOT, **({"against": args.against.resolve()} if args.against else {})}
    commands = {k: v for k, v in COMMANDS.items() if not (args.skip_run and k == "default_run")}
    print(
        f"entry_points: {', '.join(commands)} of src/train.py in {', '.join(map(str, checkouts.values()))}, "
        f"best of {args.repeats}, alternated; time: about "
        f"{args.repeats * len(checkouts) * (len(commands) * 2 + (0 if args.skip_run else 25)):.0f} s on 2 cores",
        flush=True,
    )
    best: dict[str, dict[str, float]] = {name: {} for name in checkouts}
    with tempfile.TemporaryDirectory() as outputs:
        for _ in range(args.repeats):
            for command, arguments in commands.items():
                for name, checkout in checkouts.items():
                    taken = seconds(checkout, arguments, Path(outputs))
                    best[name][command] = min(best[name].get(command, float("inf")), taken)
    for command in commands:
        line = "  ".join(f"{name} {best[name][command]:6.2f} s" for name in checkouts)
        ratio = f"  ({best['against'][command] / best['this'][command]:.2f}× faster)" if args.against else ""
        print(f"{command:12s} {line}{ratio}")
    result = {"benchmark": "entry_points", **{name: {k: round(v, 2) for k, v in b.items()} for name, b in best.items()}}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
