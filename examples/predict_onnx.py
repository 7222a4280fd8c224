"""Classify images with an exported model and onnxruntime alone: no torch, no transferlab.

    pip install onnxruntime pillow numpy
    python examples/predict_onnx.py model.onnx photo.jpg [more.jpg ...]

The .onnx file written by `python src/export.py format=onnx` carries its class names and its
preprocessing (metadata_props): resize the short side to resize_size, centre-crop input_size,
scale to [0, 1], subtract mean, divide by std, channels first.
"""

import json
import sys

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


def main(model_path: str, images: list[str], top_k: int = 3) -> None:
    session = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    names = json.loads(meta["class_names"])
    logits = session.run(["logits"], {"images": np.stack([preprocess(p, meta) for p in images])})[0]
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    for path, row in zip(images, probabilities):
        best = np.argsort(-row)[:top_k]
        print(path + "\t" + ", ".join(f"{names[i]} {row[i]:.3f}" for i in best))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
