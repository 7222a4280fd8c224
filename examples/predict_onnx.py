"""Classify images with an exported model and onnxruntime alone: no torch, no transferlab.

    pip install onnxruntime pillow numpy
    python examples/predict_onnx.py model.onnx photo.jpg [more.jpg | a folder ...]

The .onnx file written by `python src/export.py format=onnx` carries its class names and its
preprocessing (metadata_props): resize the short side to resize_size, centre-crop input_size,
scale to [0, 1], subtract mean, divide by std, channels first.
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime
from PIL import Image


def preprocess(path: str, meta: dict) -> np.ndarray:
    size, short = int(meta["input_size"]), int(meta["resize_size"])
    resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}[meta["interpolation"]]
    image = Image.open(path).convert("RGB")
    width, height = image.size
    scale = short / min(width, height)  # the short side to `short`, the long one in proportion
    image = image.resize((max(short, int(width * scale)), max(short, int(height * scale))), resample)
    left, top = round((image.width - size) / 2), round((image.height - size) / 2)
    image = image.crop((left, top, left + size, top + size))
    pixels = np.asarray(image, dtype=np.float32) / 255
    pixels = (pixels - np.array(json.loads(meta["mean"]), np.float32)) / np.array(json.loads(meta["std"]), np.float32)
    return pixels.transpose(2, 0, 1)  # HWC → CHW


def files(arguments: list[str]) -> list[str]:
    """The images named, a folder's files in order."""
    found = []
    for argument in arguments:
        path = Path(argument)
        found += sorted(str(p) for p in path.rglob("*") if p.is_file()) if path.is_dir() else [argument]
    return found


def main(model_path: str, images: list[str], top_k: int = 3) -> None:
    session = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    names = json.loads(meta["class_names"])
    for path in files(images):
        try:
            pixels = preprocess(path, meta)
        except OSError as error:  # missing, unreadable or not an image: say so, go on with the rest
            print(f"{path}\tERROR {error}")
            continue
        logits = session.run(["logits"], {"images": pixels[None]})[0][0]
        row = np.exp(logits - logits.max())
        row /= row.sum()
        best = np.argsort(-row)[:top_k]
        print(path + "\t" + ", ".join(f"{names[i]} {row[i]:.3f}" for i in best))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
