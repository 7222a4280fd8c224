"""Top-k predictions of a trained checkpoint for an image file or a folder of images.

    python src/predict.py ckpt=outputs/runs/.../checkpoints/best.ckpt inputs=photo.jpg
    python src/predict.py ckpt=... inputs=folder/ top_k=3 csv=predictions.csv

Uses the class names and the preprocessing saved with the checkpoint. A file that
cannot be read is reported on its own row; the others are still predicted.
"""

from __future__ import annotations

import csv
import sys

from omegaconf import OmegaConf

from transferlab.errors import TransferlabError, run_script
from transferlab.inference import image_files, load_classifier, predict


def main(arguments: list[str]) -> int:
    options = OmegaConf.from_cli(arguments)
    if "ckpt" not in options or "inputs" not in options:
        raise TransferlabError("usage: python src/predict.py ckpt=<best.ckpt> inputs=<image or folder> [top_k=3] [csv=<file>]")
    top_k = int(options.get("top_k", 3))
    rows = predict(load_classifier(options.ckpt), image_files(options.inputs), top_k=top_k)
    for row in rows:
        shown = row.get("error") or ", ".join(f"{name} {p:.3f}" for name, p in row["top"])
        print(f"{row['path']}\t{'ERROR ' if 'error' in row else ''}{shown}")
    if options.get("csv"):
        with open(options.csv, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", *(f"{kind}_{rank}" for rank in range(1, top_k + 1) for kind in ("class", "probability")), "error"])
            for row in rows:
                ranked = [value for name, p in row.get("top", []) for value in (name, f"{p:.6f}")]
                writer.writerow([row["path"], *ranked, *([""] * (2 * top_k - len(ranked))), row.get("error", "")])
    failed = sum("error" in row for row in rows)
    print(f"{len(rows) - failed} predicted, {failed} unreadable", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_script(main)
