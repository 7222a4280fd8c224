"""A trained checkpoint as ONNX or TorchScript (src/export.py): self-contained, and checked on images.

The exported model takes normalised images (N, 3, H, W) at the checkpoint's input size and returns
class logits. The file carries what a deployment needs besides the weights (`metadata`): the class
names, the preprocessing (resize, centre crop, mean, std, interpolation) and where it came from
(model, strategy, checkpoint), as ONNX metadata_props or a TorchScript extra file, so that
examples/predict_onnx.py classifies a photo with onnxruntime, Pillow and NumPy alone.

After writing it, `export` runs the file and the checkpoint on the same real images (the run's test
images, or `images=`) and refuses a file whose logits differ by more than `TOLERANCE`.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch

from transferlab.data.transforms import build_transforms, resize_size
from transferlab.errors import TransferlabError
from transferlab.images import load_rgb
from transferlab.review.inference import data_config_of, image_files, load_classifier
from transferlab.review.predictions import FILE as TEST_PREDICTIONS

TOLERANCE = 1e-4
CHECK_IMAGES = 16  # real images the export is checked on
# format= → the suffix of the file written beside the checkpoint when out= is not given.
FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
EXTRA_FILE = "transferlab.json"  # TorchScript: the metadata, as an extra file in the archive


class Logits(torch.nn.Module):
    """The classifier as a plain module (backbone → head): what ONNX and TorchScript trace."""

    def __init__(self, classifier: torch.nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = classifier.backbone, classifier.head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


def metadata(classifier, checkpoint: Path) -> dict[str, str]:
    """What the file needs to be used alone, as strings (ONNX metadata_props are string pairs)."""
    config = data_config_of(classifier)
    names = classifier.hparams.class_names or [str(i) for i in range(classifier.hparams.num_classes)]
    run = checkpoint.resolve().parent.parent  # <run>/checkpoints/best.ckpt
    metrics = read_json(run / "metrics.json")
    return {
        "class_names": json.dumps(names),
        "input_size": str(config.input_size),
        "resize_size": str(resize_size(config)),  # the short side before the centre crop
        "interpolation": config.interpolation,
        "mean": json.dumps(list(config.mean)),
        "std": json.dumps(list(config.std)),
        "input": "images: float32 (N, 3, input_size, input_size), RGB in [0, 1] minus mean, over std",
        "output": "logits: float32 (N, classes); softmax gives probabilities",
        "model": classifier.hparams.model["name"],
        "strategy": str(metrics.get("strategy", "unknown")),
        "checkpoint": str(checkpoint.resolve()),
    }


def read_json(path: Path) -> dict:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def check_images(checkpoint: Path, images: str | Path | None) -> list[Path]:
    """Real images to compare the export with the checkpoint on: `images` (a file or folder), else the
    test images the run recorded in test_predictions.csv."""
    if images:
        files = image_files(images)
        if not files:
            raise TransferlabError(f"images={images}: no image files there")
        return files[:CHECK_IMAGES]
    recorded = checkpoint.resolve().parent.parent / TEST_PREDICTIONS
    if recorded.is_file():
        with recorded.open(newline="") as handle:
            files = [Path(row["file"]) for row in csv.DictReader(handle) if row["file"]]
        files = [f for f in files if f.is_file()]
        if files:
            return files[:: max(1, len(files) // CHECK_IMAGES)][:CHECK_IMAGES]  # spread over the classes
    raise TransferlabError(
        f"ckpt={checkpoint}: no test image files recorded beside it to check the export on; "
        "give images=PATH (a folder or an image)"
    )


def export(
    checkpoint: str | Path, fmt: str, out: str | Path | None = None, images: str | Path | None = None
) -> tuple[Path, float, int]:
    """Write `checkpoint` as `fmt` (onnx or torchscript) to `out` (default: beside the checkpoint);
    returns the file, the largest difference from the checkpoint's logits and the images compared."""
    if fmt not in FORMATS:  # before the checkpoint is loaded: a typo costs nothing
        raise TransferlabError(f"format={fmt}: choose {' or '.join(FORMATS)}")
    checkpoint = Path(checkpoint)
    classifier = load_classifier(checkpoint)
    transform = build_transforms(data_config_of(classifier), train=False)
    batch = torch.stack([transform(load_rgb(path)) for path in check_images(checkpoint, images)])
    model = Logits(classifier).eval()
    with torch.no_grad():
        expected = model(batch).numpy()
    target = Path(out or checkpoint.with_suffix(FORMATS[fmt]))
    described = metadata(classifier, checkpoint)
    if fmt == "torchscript":
        traced = torch.jit.trace(model, batch[:2])
        torch.jit.save(traced, target, _extra_files={EXTRA_FILE: json.dumps(described)})
        actual = torch.jit.load(target)(batch).detach().numpy()
    else:
        actual = export_onnx(model, batch, target, described)
    difference = float(np.abs(actual - expected).max())
    if difference > TOLERANCE or not np.array_equal(actual.argmax(1), expected.argmax(1)):
        target.unlink(missing_ok=True)  # a file that disagrees with its checkpoint is never left to be used
        raise TransferlabError(f"{target}: outputs differ from the checkpoint's by {difference:.2e} (> {TOLERANCE})")
    return target, difference, len(batch)


def export_onnx(model: torch.nn.Module, batch: torch.Tensor, target: Path, described: dict[str, str]) -> np.ndarray:
    """Write the ONNX file with its metadata; its logits on `batch` from an onnxruntime session."""
    try:
        import onnx
        import onnxruntime  # optional dependencies
    except ImportError:
        raise TransferlabError('format=onnx needs onnx and onnxruntime: pip install -e ".[export]"') from None
    torch.onnx.export(
        model,
        (batch[:2],),
        target,
        input_names=["images"],
        output_names=["logits"],
        dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )
    graph = onnx.load(str(target))
    for key, value in described.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(target))
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"images": batch.numpy()})[0]
