"""Top-k predictions of a trained checkpoint for an image file or a folder of images.

    python src/predict.py ckpt=outputs/runs/.../checkpoints/best.ckpt inputs=photo.jpg
    python src/predict.py ckpt=... inputs=folder/ top_k=3 csv=predictions.csv

Uses the class names and the preprocessing saved with the checkpoint. A file that
cannot be read is reported on its own row; the others are still predicted.
"""

from __future__ import annotations

import csv
import sys

from transferlab.console import quiet_upstream
from transferlab.errors import run_script
from transferlab.review.inference import image_files, load_classifier, predict
from transferlab.run.checks import Rule, check_options

USAGE = "python src/predict.py ckpt=<best.ckpt> inputs=<image or folder> [top_k=3] [csv=<file>]"
OPTIONS = {"ckpt": Rule(str), "inputs": Rule(str), "top_k": Rule(int, 1), "csv": Rule(str)}


def main(arguments: list[str]) -> int:
    options = check_options(arguments, OPTIONS, USAGE, required=("ckpt", "inputs"))
    top_k = options.get("top_k", 3)
    rows = predict(load_classifier(options["ckpt"]), image_files(options["inputs"]), top_k=top_k)
    for row in rows:
        shown = row.get("error") or ", ".join(f"{name} {p:.3f}" for name, p in row["top"])
        print(f"{row['path']}\t{'ERROR ' if 'error' in row else ''}{shown}")
    if options.get("csv"):
        with open(options["csv"], "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(
                [
                    "path",
                    *(f"{kind}_{rank}" for rank in range(1, top_k + 1) for kind in ("class", "probability")),
                    "error",
                ]
            )
            for row in rows:
                ranked = [value for name, p in row.get("top", []) for value in (name, f"{p:.6f}")]
                writer.writerow([row["path"], *ranked, *([""] * (2 * top_k - len(ranked))), row.get("error", "")])
    failed = sum("error" in row for row in rows)
    print(f"{len(rows) - failed} predicted, {failed} unreadable", file=sys.stderr)
    return 0


if __name__ == "__main__":
    quiet_upstream()
    run_script(main)
