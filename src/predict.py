"""Top-k predictions of a trained checkpoint for an image file or a folder of images.

    python src/predict.py ckpt=outputs/runs/.../checkpoints/best.ckpt inputs=photo.jpg
    python src/predict.py ckpt=... inputs=folder/ top_k=3 csv=predictions.csv

Keys: conf/predict.yaml. Uses the class names and the preprocessing saved with the checkpoint; a file
that cannot be read is reported on its own row, the others are still predicted (review/inference.py).
"""

import sys

import hydra
from omegaconf import DictConfig

from transferlab import console
from transferlab.errors import one_line_errors, require_keys, run_app


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
@one_line_errors
def main(cfg: DictConfig) -> None:
    require_keys(cfg, "src/predict.py")
    from transferlab.review.inference import predict_checkpoint, row_line  # torch: only once the command line is good

    rows = predict_checkpoint(str(cfg.ckpt), str(cfg.inputs), cfg.top_k, cfg.csv and str(cfg.csv))
    for row in rows:
        print(row_line(row))
    failed = sum("error" in row for row in rows)
    print(f"{len(rows) - failed} predicted, {failed} unreadable", file=sys.stderr)


if __name__ == "__main__":
    console.quiet_upstream()
    run_app(main)
