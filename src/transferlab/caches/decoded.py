"""Decode once: every image decoded and resized a single time, then kept as uint8 pixels.

A JPEG photo costs milliseconds to decode and resize, every epoch. With
`data.decode_cache=memory|disk` each image is decoded once, resized so that its
short side is the evaluation resize (`transforms.resize_size`: 256 for 224-px
weights), and stored as H×W×3 uint8. Later epochs read those pixels and run the
augmentation on tensors (`transforms.DecodedTransform`): no JPEG is decoded again.

- `memory`: arrays in RAM (about 0.26 MB per image at 224 px); the DataLoader's
  forked workers share them.
- `disk`: one memory-mapped file per split under `directory`, keyed by the files'
  paths, sizes and modification times, the size they were resized to and the
  versions of the libraries that decode and resize them, so the next run (or every
  run of a sweep) skips the decoding too. For sets larger than RAM. Jobs of a sweep
  that start together decode a split once: the others wait for its file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from transferlab.console import Progress
from transferlab.errors import TransferlabError
from transferlab.files import library_versions, locked, partial_path
from transferlab.images import ImageSource, load_rgb, sources_digest
from transferlab.options import RULES, check

log = logging.getLogger(__name__)

MODES = RULES["data.decode_cache"].also
FORMAT_VERSION = 1  # bump when what is stored changes
DECODING_LIBRARIES = ("PIL", "torch", "torchvision")  # Pillow decodes, torchvision (on torch) resizes


class DecodedImages:
    """Decoded images by index: `images[i]` is an H×W×3 uint8 array."""

    def __init__(
        self,
        arrays: list[np.ndarray] | None = None,
        pixels: np.ndarray | None = None,
        offsets: np.ndarray | None = None,
        shapes: np.ndarray | None = None,
        path: Path | None = None,
    ) -> None:
        self.arrays, self.pixels, self.offsets, self.shapes, self.path = arrays, pixels, offsets, shapes, path

    def __getstate__(self) -> dict:
        # Loader workers started by spawn/forkserver get the file's name, not a copy of its pixels.
        return {**vars(self), "pixels": None} if self.path is not None else vars(self)

    def __setstate__(self, state: dict) -> None:
        vars(self).update(state)
        if self.path is not None:
            self.pixels = _open_pixels(self.path, int((self.shapes[:, 0] * self.shapes[:, 1] * 3).sum()))

    def __len__(self) -> int:
        return len(self.arrays) if self.arrays is not None else len(self.shapes)

    def __getitem__(self, index: int) -> np.ndarray:
        if self.arrays is not None:
            return self.arrays[index]
        start, (height, width) = self.offsets[index], self.shapes[index]
        # A copy: the memory-mapped file is read-only, and the copy is what reads the page cache.
        return np.array(self.pixels[start : start + height * width * 3]).reshape(height, width, 3)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays) if self.arrays is not None else int(self.pixels.nbytes)


def decode_resized(source: ImageSource, short_side: int, interpolation: str) -> torch.Tensor:
    """H×W×3 uint8: exactly the evaluation Resize of `build_transforms` (same op, same rounding)."""
    image = v2.functional.to_image(load_rgb(source))
    resized = v2.functional.resize(
        image, [short_side], interpolation=v2.InterpolationMode(interpolation), antialias=True
    )
    return resized.permute(1, 2, 0).contiguous()


class _Decoding(Dataset):
    def __init__(self, sources: Sequence[ImageSource], short_side: int, interpolation: str) -> None:
        self.sources, self.short_side, self.interpolation = sources, short_side, interpolation

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> torch.Tensor:
        return decode_resized(self.sources[index], self.short_side, self.interpolation)


def cache_key(sources: Sequence[ImageSource], short_side: int, interpolation: str) -> str:
    described = json.dumps(
        [FORMAT_VERSION, short_side, interpolation, sources_digest(sources), library_versions(*DECODING_LIBRARIES)],
        sort_keys=True,
    )
    return hashlib.sha256(described.encode()).hexdigest()[:24]


def decode_images(
    sources: Sequence[ImageSource],
    short_side: int,
    interpolation: str,
    mode: str,
    directory: str | Path | None = None,
    num_workers: int = 0,
    name: str = "images",
) -> DecodedImages:
    """Decode and resize every image of `sources` once (in `num_workers` processes)."""
    check("data.decode_cache", mode)
    if mode == "disk" and not directory:
        raise TransferlabError(
            "decode_cache=disk needs decode_cache_dir=PATH (the data configs set ${paths.data_dir}/decoded_cache)"
        )
    path = (
        Path(directory).expanduser() / f"{name}-{cache_key(sources, short_side, interpolation)}.u8"
        if mode == "disk"
        else None
    )
    if path is None:
        images = DecodedImages(
            arrays=[image.numpy() for image in _decoding(sources, short_side, interpolation, num_workers, name)]
        )
    else:
        with locked(path):  # jobs that want the same images: one decodes, the others wait and read its file
            cached = _load(path, len(sources))
            if cached is not None:
                log.info("decode cache: %d %s images from %s", len(sources), name, path)
                return cached
            images = _write(path, _decoding(sources, short_side, interpolation, num_workers, name), len(sources))
    log.info(
        "decode cache: %d %s images decoded at short side %d px (%.0f MB, %s)",
        len(sources),
        name,
        short_side,
        images.nbytes / 2**20,
        path or "in memory",
    )
    return images


def _decoding(
    sources: Sequence[ImageSource], short_side: int, interpolation: str, num_workers: int, name: str
) -> Iterable[torch.Tensor]:
    loader = DataLoader(_Decoding(sources, short_side, interpolation), batch_size=None, num_workers=num_workers)
    progress = Progress(f"decoding {name} images once", len(sources), "images", log)
    try:
        for image in loader:
            yield image
            progress.update()
    finally:
        progress.close()


def _write(path: Path, decoded: Iterable[torch.Tensor], count: int) -> DecodedImages:
    """Stream the pixels to `<key>.u8` and the shapes to `<key>.json`, each under a name of this process's
    own; the pixel file appears last, renamed into place, so no run ever opens a half-written cache."""
    index = path.with_suffix(".json")
    pixels_partial, index_partial = partial_path(path), partial_path(index)
    shapes = []
    try:
        with open(pixels_partial, "wb") as file:
            for image in decoded:
                file.write(image.numpy().tobytes())
                shapes.append(list(image.shape[:2]))
        index_partial.write_text(json.dumps({"version": FORMAT_VERSION, "shapes": shapes}))
        index_partial.replace(index)
        pixels_partial.replace(path)
    except BaseException as error:  # interrupted, disk full: leave nothing behind
        pixels_partial.unlink(missing_ok=True)
        index_partial.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.filename in (None, str(pixels_partial), str(index_partial)):
            raise TransferlabError(
                f"could not write the decode cache {path} ({error}): free space there, set data.decode_cache_dir "
                f"to another folder, or use data.decode_cache=memory"
            ) from error
        raise
    return _open(path, count)


def _load(path: Path, count: int) -> DecodedImages | None:
    """The cache at `path`, or None: there is none, or it is unreadable (reported; decoded again)."""
    if not path.is_file():
        return None
    try:
        return _open(path, count)
    except (OSError, ValueError, KeyError, TypeError, TransferlabError) as error:
        log.warning("decode cache %s is unreadable (%s): decoding the images again", path, error)
        return None


def _open(path: Path, count: int) -> DecodedImages:
    shapes = np.array(json.loads(path.with_suffix(".json").read_text())["shapes"], dtype=np.int64).reshape(-1, 2)
    if len(shapes) != count:
        raise ValueError(f"its index {path.with_suffix('.json')} lists {len(shapes)} images, not {count}")
    sizes = shapes[:, 0] * shapes[:, 1] * 3
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return DecodedImages(pixels=_open_pixels(path, int(sizes.sum())), offsets=offsets, shapes=shapes, path=path)


def _open_pixels(path: Path, expected_bytes: int) -> np.ndarray:
    pixels = np.memmap(path, dtype=np.uint8, mode="r") if expected_bytes else np.zeros(0, np.uint8)
    if len(pixels) != expected_bytes:
        raise TransferlabError(f"decode cache {path} does not match its index {path.with_suffix('.json')}: delete both")
    return pixels
