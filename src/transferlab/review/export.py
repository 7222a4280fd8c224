"""A trained checkpoint as ONNX or TorchScript (src/export.py), checked against the checkpoint.

The exported model takes normalised images (N, 3, H, W) at the checkpoint's input size (its
data_config) and returns class logits; after writing it, `export` runs both on the same batch and
refuses a file whose outputs differ by more than `TOLERANCE`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from transferlab.errors import TransferlabError
from transferlab.review.inference import data_config_of, load_classifier

TOLERANCE = 1e-4
# format= → the suffix of the file written beside the checkpoint when out= is not given.
FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}


class Logits(torch.nn.Module):
    """The classifier as a plain module (backbone → head): what ONNX and TorchScript trace."""

    def __init__(self, classifier: torch.nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = classifier.backbone, classifier.head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


def export(checkpoint: str | Path, fmt: str, out: str | Path | None = None) -> tuple[Path, float]:
    """Write `checkpoint` as `fmt` (onnx or torchscript) to `out` (default: beside the checkpoint);
    returns the file and the largest difference from the checkpoint's logits on a test batch."""
    if fmt not in FORMATS:  # before the checkpoint is loaded: a typo costs nothing
        raise TransferlabError(f"format={fmt}: choose {' or '.join(FORMATS)}")
    classifier = load_classifier(checkpoint)
    size = data_config_of(classifier).input_size
    model = Logits(classifier).eval()
    example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(example).numpy()
    target = Path(out or Path(checkpoint).with_suffix(FORMATS[fmt]))
    if fmt == "torchscript":
        torch.jit.save(torch.jit.trace(model, example), target)
        actual = torch.jit.load(target)(example).detach().numpy()
    else:
        try:
            import onnxruntime  # an optional dependency
        except ImportError:
            raise TransferlabError('format=onnx needs onnxruntime: pip install -e ".[export]"') from None

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
    difference = float(np.abs(actual - expected).max())
    if difference > TOLERANCE:
        raise TransferlabError(f"{target}: outputs differ from the checkpoint's by {difference:.2e} (> {TOLERANCE})")
    return target, difference
