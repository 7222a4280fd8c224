"""Export a trained checkpoint to ONNX or TorchScript, checked against the checkpoint.

    python src/export.py ckpt=outputs/runs/.../checkpoints/best.ckpt format=onnx
    python src/export.py ckpt=... format=torchscript out=model.pt

The exported model takes normalised images (N, 3, H, W) at the checkpoint's input
size (see its data_config) and returns class logits; after writing it, the script
runs both on the same batch and reports the largest difference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from transferlab.console import quiet_upstream
from transferlab.errors import TransferlabError, run_script
from transferlab.review.inference import data_config_of, load_classifier
from transferlab.run.checks import Rule, check_options

TOLERANCE = 1e-4


class Logits(torch.nn.Module):
    """The classifier as a plain module (backbone → head): what ONNX and TorchScript trace."""

    def __init__(self, classifier: torch.nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = classifier.backbone, classifier.head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


def export(checkpoint: str, fmt: str, out: str | None = None) -> tuple[Path, float]:
    classifier = load_classifier(checkpoint)
    size = data_config_of(classifier).input_size
    model = Logits(classifier).eval()
    example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(example).numpy()
    if fmt == "torchscript":
        target = Path(out or Path(checkpoint).with_suffix(".torchscript.pt"))
        torch.jit.save(torch.jit.trace(model, example), target)
        actual = torch.jit.load(target)(example).detach().numpy()
    elif fmt == "onnx":
        import onnxruntime

        target = Path(out or Path(checkpoint).with_suffix(".onnx"))
        torch.onnx.export(
            model,
            (example,),
            target,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
        )
        session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
        actual = session.run(["logits"], {"images": example.numpy()})[0]
    else:
        raise TransferlabError(f"format={fmt}: choose onnx or torchscript")
    difference = float(np.abs(actual - expected).max())
    if difference > TOLERANCE:
        raise TransferlabError(f"{target}: outputs differ from the checkpoint's by {difference:.2e} (> {TOLERANCE})")
    return target, difference


USAGE = "python src/export.py ckpt=<best.ckpt> format=onnx|torchscript [out=<file>]"
OPTIONS = {"ckpt": Rule(str), "format": Rule(str), "out": Rule(str)}


def main(arguments: list[str]) -> int:
    options = check_options(arguments, OPTIONS, USAGE, required=("ckpt", "format"))
    written, difference = export(options["ckpt"], options["format"], options.get("out"))
    print(f"wrote {written}; largest difference from the checkpoint on a test batch: {difference:.2e}")
    return 0


if __name__ == "__main__":
    quiet_upstream()
    run_script(main)
