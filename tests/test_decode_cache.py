"""The decode cache: images decoded once, the same pixels and augmentation family as the file path."""

from __future__ import annotations

import json
import os
import pickle
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2 as v2
import torchvision.transforms.v2.functional as TF
from PIL import Image

from transferlab.caches import decoded
from transferlab.data import ImageFolderDataModule, transforms
from transferlab.data.transforms import (
    Augment,
    CropFlipRotate,
    DecodedTransform,
    affine_grid,
    build_transforms,
    sample_augmentation,
)
from transferlab.errors import TransferlabError
from transferlab.models.data_config import DataConfig
from transferlab.run.pipeline import train

from conftest import TINY, compose_config, run_while_one_waits

CONFIG = DataConfig(input_size=64, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """Photo-like JPEGs of uneven sizes (landscape and portrait), two classes, train/val."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("val", 4)):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
            for i in range(count):
                height, width = (150, 200) if i % 2 else (210, 140)
                smooth = np.stack(np.meshgrid(np.linspace(0, 255, width), np.linspace(0, 255, height)), -1)
                pixels = np.concatenate([smooth, rng.uniform(0, 255, (height, width, 1))], -1)
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / label / f"{i}.jpg", quality=92)
    return root


def datamodule(root, **options) -> ImageFolderDataModule:
    module = ImageFolderDataModule(root=str(root), data_config=CONFIG, num_workers=0, seed=3, **options)
    module.setup()
    return module


def cache_files(folder) -> list[str]:
    """What a cache folder holds, less the lock files that stay beside what they guarded (empty, never read)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def test_decoded_evaluation_images_are_the_file_path_images(photo_folder):
    from_files = datamodule(photo_folder).image_dataset("val", augment=False)
    from_cache = datamodule(photo_folder, decode_cache="memory").image_dataset("val", augment=False)
    assert from_cache.decoded is not None and from_files.decoded is None
    for index in range(len(from_files)):
        (expected, label), (image, cached_label) = from_files[index], from_cache[index]
        assert image.shape == (3, 64, 64) and label == cached_label
        assert torch.allclose(image, expected, atol=1e-5), index


def test_decoded_images_keep_their_aspect_ratio_at_the_evaluation_resize(photo_folder):
    images = datamodule(photo_folder, decode_cache="memory").decoded_images("train")
    shapes = {images[i].shape for i in range(len(images))}
    # short side round(64 / 0.875) = 73; 150×200 → 73×97, 210×140 → 109×73
    assert shapes == {(73, 97, 3), (109, 73, 3)}
    assert all(images[i].dtype == np.uint8 for i in range(len(images)))


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("angle", [0.0, 12.0, -25.0])
def test_one_affine_warp_equals_crop_resize_flip_rotate(flip, angle):
    """The fused warp against torchvision's three ops on the same draw (and against the wrong
    rotation sense, to show the comparison can fail)."""
    rows, cols = torch.meshgrid(torch.arange(120.0), torch.arange(170.0), indexing="ij")
    source = torch.stack([rows * 2, cols * 1.5, 128 + 60 * torch.sin(rows / 9 + cols / 13)]).round().to(torch.uint8)
    params = CropFlipRotate(top=15, left=30, height=96, width=110, flip=flip, angle=angle)
    ours = F.grid_sample(source[None].float(), affine_grid(params, 120, 170, 80), align_corners=False)[0]

    def torchvision_ops(rotation: float) -> torch.Tensor:
        image = TF.resized_crop(source, 15, 30, 96, 110, [80, 80], antialias=False)
        image = TF.horizontal_flip(image) if flip else image
        return TF.rotate(image, rotation, interpolation=TF.InterpolationMode.BILINEAR).float()

    assert (ours - torchvision_ops(angle)).abs().mean() < 1.5  # two resamplings vs one
    if angle:
        assert (ours - torchvision_ops(-angle)).abs().mean() > 10


@pytest.mark.parametrize("angle", [12.0, -36.0])
def test_a_reflected_rotation_mirrors_the_crop_into_the_corners_as_padding_then_rotating_does(angle):
    """rotation_fill=reflect (Keras' RandomRotation default) in the fused warp, against torchvision
    padding the crop symmetrically, rotating and cropping the centre back (what build_transforms
    does), and against black corners, to show the comparison can fail."""
    rows, cols = torch.meshgrid(torch.arange(120.0), torch.arange(170.0), indexing="ij")
    source = torch.stack([rows * 2, cols * 1.5, 128 + 60 * torch.sin(rows / 9 + cols / 13)]).round().to(torch.uint8)
    params = CropFlipRotate(top=15, left=30, height=96, width=110, flip=True, angle=angle)
    grid = affine_grid(params, 120, 170, 80, reflect=True)
    ours = F.grid_sample(source[None].float(), grid, padding_mode="reflection", align_corners=False)[0]
    image = TF.horizontal_flip(TF.resized_crop(source, 15, 30, 96, 110, [80, 80], antialias=False))
    padded = TF.pad(image, [20], padding_mode="symmetric")
    rotated = TF.rotate(padded, angle, interpolation=TF.InterpolationMode.BILINEAR)
    reference = TF.center_crop(rotated, [80, 80]).float()
    assert (ours - reference).abs().mean() < 1.5  # two resamplings vs one
    black = TF.rotate(image, angle, interpolation=TF.InterpolationMode.BILINEAR).float()
    assert (ours - black).abs().mean() > 5


@pytest.mark.parametrize("fill", ["black", "reflect"])
def test_both_augmentation_paths_rotate_and_fill_the_corners_alike(fill, monkeypatch):
    """A textured image rotated by 30° through torchvision's transforms (build_transforms: for reflect,
    symmetric padding, rotation, the centre cropped back) and through the fused warp of the decode cache:
    the same pixels up to resampling, and far from the other fill."""
    config = DataConfig(input_size=48, mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bilinear", crop_pct=1.0)
    rows, cols = np.meshgrid(np.arange(48.0), np.arange(48.0), indexing="ij")
    texture = np.stack([rows * 5, cols * 5, 128 + 100 * np.sin(rows / 5 + cols / 7)], axis=-1).astype(np.uint8)
    # Both paths draw the same: the whole image, no flip, 30°.
    monkeypatch.setattr(v2.RandomRotation, "make_params", lambda self, flat_inputs: {"angle": 30.0})
    draw = CropFlipRotate(0, 0, 48, 48, False, 30.0)
    monkeypatch.setattr(transforms, "sample_augmentation", lambda height, width, augment, rng: draw)

    def fused(fill: str) -> torch.Tensor:
        augment = Augment(scale_min=1.0, hflip=0.0, rotation=40, rotation_fill=fill)
        return DecodedTransform(config, True, augment)(texture, random.Random(0))

    torch.manual_seed(0)
    augment = Augment(scale_min=1.0, hflip=0.0, rotation=40, rotation_fill=fill)
    from_files = build_transforms(config, True, augment)(Image.fromarray(texture))
    other = "black" if fill == "reflect" else "reflect"
    assert (from_files - fused(fill)).abs().mean() < 0.03  # normalised units: 2 is black to white
    assert (from_files - fused(other)).abs().mean() > 0.1


def test_augmentation_draws_cover_the_configured_ranges():
    augment = Augment(scale_min=0.5, hflip=0.5, rotation=10)
    draws = [sample_augmentation(200, 300, augment, random.Random(seed)) for seed in range(2000)]
    areas = np.array([d.height * d.width / (200 * 300) for d in draws])
    ratios = np.array([d.width / d.height for d in draws])
    angles = np.array([d.angle for d in draws])
    assert 0.49 <= areas.min() < 0.55 and areas.max() <= 1.0
    assert ratios.min() >= 0.74 and ratios.max() <= 1.34
    assert all(0 <= d.top <= 200 - d.height and 0 <= d.left <= 300 - d.width for d in draws)
    assert 0.45 < np.mean([d.flip for d in draws]) < 0.55
    assert -10 <= angles.min() < -9 and 9 < angles.max() <= 10
    assert sample_augmentation(200, 300, augment, random.Random(7)) == draws[7]


def test_decoded_augmentation_is_a_function_of_seed_epoch_and_index(photo_folder):
    dataset = datamodule(photo_folder, decode_cache="memory").image_dataset("train", augment=True)
    torch.manual_seed(0)
    random.seed(0)
    first = dataset[(2, 5)][0]
    torch.manual_seed(1)
    random.seed(1)
    assert torch.equal(first, dataset[(2, 5)][0])
    assert not torch.equal(first, dataset[(3, 5)][0])
    assert first.shape == (3, 64, 64)


def test_the_disk_cache_is_written_once_and_reused(photo_folder, tmp_path, monkeypatch):
    cache_dir = tmp_path / "decoded"
    first = datamodule(photo_folder, decode_cache="disk", decode_cache_dir=str(cache_dir))
    written = first.decoded_images("train")
    files = cache_files(cache_dir)
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".u8"), files
    index = json.loads((cache_dir / files[0]).read_text())
    count = len(first.splits["train"].labels)  # train/ less the validation images held out of it
    assert len(index["shapes"]) == count and (cache_dir / files[1]).stat().st_size == sum(
        h * w * 3 for h, w in index["shapes"]
    )

    calls = []
    monkeypatch.setattr(decoded, "decode_resized", lambda *a: calls.append(a) or pytest.fail("decoded again"))
    again = datamodule(photo_folder, decode_cache="disk", decode_cache_dir=str(cache_dir)).decoded_images("train")
    assert not calls and all(np.array_equal(written[i], again[i]) for i in range(count))
    # What a spawned loader worker receives: the file's name, not its pixels.
    pickled = pickle.dumps(again)
    assert len(pickled) < again.nbytes / 10 and np.array_equal(pickle.loads(pickled)[3], written[3])
    monkeypatch.undo()

    # A changed file is a new key: decoded again, next to the old cache.
    changed = sorted((photo_folder / "train" / "a").iterdir())[0]
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    datamodule(photo_folder, decode_cache="disk", decode_cache_dir=str(cache_dir)).decoded_images("train")
    assert len(list(cache_dir.glob("*.u8"))) == 2 and not list(cache_dir.glob("*.partial"))


def test_an_interrupted_disk_cache_leaves_nothing_a_later_run_trusts(photo_folder, tmp_path, monkeypatch):
    cache_dir = tmp_path / "decoded"
    calls = []

    def failing(source, short_side, interpolation):
        calls.append(source)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return original(source, short_side, interpolation)

    original = decoded.decode_resized
    monkeypatch.setattr(decoded, "decode_resized", failing)
    with pytest.raises(KeyboardInterrupt):
        datamodule(photo_folder, decode_cache="disk", decode_cache_dir=str(cache_dir)).decoded_images("train")
    assert not cache_files(cache_dir), "no partial file, no index"
    monkeypatch.undo()
    module = datamodule(photo_folder, decode_cache="disk", decode_cache_dir=str(cache_dir))
    assert len(module.decoded_images("train")) == len(module.splits["train"].labels)


def test_bad_decode_cache_settings_name_the_choices(photo_folder):
    with pytest.raises(TransferlabError, match=r"data.decode_cache='ram': expected one of memory, disk \(or null\)"):
        ImageFolderDataModule(root=str(photo_folder), data_config=CONFIG, decode_cache="ram")
    with pytest.raises(TransferlabError, match="decode_cache=disk needs decode_cache_dir"):
        datamodule(photo_folder, decode_cache="disk").decoded_images("train")


def test_a_run_with_the_decode_cache_learns(colour_folder, tmp_path):
    overrides = [
        *TINY,
        f"data.root={colour_folder}",
        "model=small_cnn",
        "strategy=scratch",
        "trainer.max_epochs=4",
        "optimizer.lr=0.01",
        "data.decode_cache=disk",
        f"data.decode_cache_dir={tmp_path / 'decoded'}",
    ]
    metrics = train(compose_config(overrides, tmp_path / "run"))
    assert metrics["test/acc"] > 0.8  # three colours: chance is 1/3
    assert len(list((tmp_path / "decoded").glob("*.u8"))) == 3, "train, val and test decoded once each"


def test_the_cache_tool_reports_and_clears_the_caches(tmp_path, offline_env):
    import subprocess
    import sys

    from conftest import ROOT

    for name, size in (("feature_cache/train-1.pt", 1000), ("decoded_cache/a.u8", 3000), ("decoded_cache/a.json", 10)):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x" * size)

    def cache(*options: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(ROOT / "src" / "cache.py"), f"data_dir={tmp_path}", *options],
            env=offline_env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    listed = cache()
    assert (
        listed.returncode == 0
        and "feature_cache\t1 files" in listed.stdout
        and "decoded_cache\t2 files" in listed.stdout
    )
    cleared = cache("clear=decoded_cache")
    assert (
        "(deleted)" in cleared.stdout
        and not (tmp_path / "decoded_cache").exists()
        and (tmp_path / "feature_cache").exists()
    )
    wrong = cache("clear=everything")
    assert wrong.returncode == 1 and "use clear=true or one of feature_cache, decoded_cache, scan_cache" in wrong.stderr


def test_the_key_changes_with_the_decoding_libraries(photo_folder, monkeypatch):
    import PIL
    import torchvision

    sources = sorted((photo_folder / "train" / "a").iterdir())
    key = decoded.cache_key(sources, 73, "bilinear")
    for library in (PIL, torch, torchvision):
        with monkeypatch.context() as patched:
            patched.setattr(library, "__version__", "0.0.1-upgraded")
            assert decoded.cache_key(sources, 73, "bilinear") != key, library.__name__
    assert decoded.cache_key(sources, 73, "bilinear") == key


@pytest.mark.parametrize("damage", ["truncated pixels", "garbled index", "index of another split"])
def test_a_damaged_disk_cache_is_reported_and_decoded_again(damage, photo_folder, tmp_path, caplog):
    cache_dir = tmp_path / "decoded"
    written = datamodule(photo_folder, decode_cache="disk", decode_cache_dir=str(cache_dir)).decoded_images("train")
    [pixels] = cache_dir.glob("*.u8")
    index = pixels.with_suffix(".json")
    # A new file in the old one's place: truncating the inode that `written` maps would kill the process.
    damaged = {
        "truncated pixels": (pixels, pixels.read_bytes()[:1000]),
        "garbled index": (index, b'{"version": 1, "sha'),
        "index of another split": (
            index,
            json.dumps({"version": 1, "shapes": json.loads(index.read_text())["shapes"][:3]}).encode(),
        ),
    }[damage]
    damaged[0].unlink()
    damaged[0].write_bytes(damaged[1])
    again = datamodule(photo_folder, decode_cache="disk", decode_cache_dir=str(cache_dir)).decoded_images("train")
    assert f"decode cache {pixels} is unreadable" in caplog.text and "decoding the images again" in caplog.text
    assert len(again) == len(written) and all(np.array_equal(written[i], again[i]) for i in range(len(written)))
    assert not list(cache_dir.glob("*.partial"))


def test_two_jobs_that_want_the_same_split_decode_it_once(photo_folder, tmp_path, monkeypatch, caplog):
    """The second job waits for the first one's lock, then maps its file instead of decoding (threads hold
    separate locks, as processes do)."""
    import threading

    caplog.set_level("INFO", logger="transferlab.files")
    release, calls = threading.Event(), []
    original = decoded.decode_resized

    def held(*args):
        calls.append(args[0])
        release.wait()
        return original(*args)

    monkeypatch.setattr(decoded, "decode_resized", held)
    cache_dir, results = tmp_path / "decoded", []

    def job() -> None:
        results.append(
            datamodule(photo_folder, decode_cache="disk", decode_cache_dir=str(cache_dir)).decoded_images("train")
        )

    jobs = [threading.Thread(target=job, daemon=True) for _ in range(2)]
    run_while_one_waits(
        jobs, caplog, f"waiting for another process that is writing {cache_dir}", lambda: len(calls), release
    )
    assert len(results) == 2 and len(calls) == len(results[0]) == len(results[1]), "each image decoded once"
    assert all(np.array_equal(results[0][i], results[1][i]) for i in range(len(calls)))
    assert len(list(cache_dir.glob("*.u8"))) == 1 and not list(cache_dir.glob("*.partial"))
