"""Export a trained checkpoint to ONNX or TorchScript, checked against the checkpoint.

    python src/export.py ckpt=outputs/runs/.../checkpoints/best.ckpt format=onnx
    python src/export.py ckpt=... format=torchscript out=model.pt

Keys: conf/export.yaml. The exported model takes normalised images (N, 3, H, W) at the checkpoint's
input size and returns class logits; the file carries the class names and the preprocessing. After
writing it, both run on the same real images (the run's test images, or images=) and the largest
difference is reported (src/transferlab/review/export.py); examples/predict_onnx.py uses it alone.
"""

import hydra
from omegaconf import DictConfig

from transferlab import console
from transferlab.errors import one_line_errors, require_keys, run_app


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
@one_line_errors
def main(cfg: DictConfig) -> None:
    require_keys(cfg, "src/export.py")
    from transferlab.review.export import export  # torch: only once the command line is good

    images = cfg.images and str(cfg.images)
    written, difference, count = export(str(cfg.ckpt), str(cfg["format"]), cfg.out and str(cfg.out), images)
    print(f"wrote {written}; largest difference from the checkpoint on {count} images: {difference:.2e}")


if __name__ == "__main__":
    console.quiet_upstream()
    run_app(main)
