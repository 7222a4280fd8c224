"""Shared fixtures: a learnable image folder of real JPEG files, and composed Hydra configs."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig
from PIL import Image

from transferlab.run import build, resolvers

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
CLASSES = ("red", "green", "blue")

torch.set_num_threads(2)
resolvers.register()


def write_colour_images(folder: Path, per_class: int, seed: int, size: int = 40) -> None:
    """Noisy images whose dominant colour is the class: learnable in a few steps by any model."""
    rng = np.random.default_rng(seed)
    for index, name in enumerate(CLASSES):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 110, size=(size, size, 3))
            pixels[..., index] += 140
            Image.fromarray(pixels.astype(np.uint8)).save(folder / name / f"{name}_{i:03d}.jpg", quality=90)


@pytest.fixture(autouse=True, scope="session")
def data_dir_outside_the_checkout(tmp_path_factory):
    """Feature and decode caches that runs keep under paths.data_dir go to a temporary folder."""
    os.environ["TRANSFERLAB_DATA"] = str(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def colour_folder(tmp_path_factory) -> Path:
    """root/{train,val,test}/{red,green,blue}/*.jpg"""
    root = tmp_path_factory.mktemp("colours")
    for split, count, seed in (("train", 16, 0), ("val", 6, 1), ("test", 6, 2)):
        write_colour_images(root / split, count, seed)
    return root


def compose_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """The config `src/train.py` would run, with Hydra's runtime output dir set as in a real run."""
    return build.run_config(overrides, output_dir)


# Small and fast: a 2-core CPU trains these in seconds.
TINY = [
    "data=image_folder",
    "data.image_size=32",
    "data.batch_size=16",
    "data.num_workers=0",
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "~callbacks.model_summary",
]
# A run that signals and sweeps can stop mid-epoch: small_cnn from scratch in batches of 4 on the
# `stop_photos` folder (36 images in train/, 29 after the val split: eight steps an epoch).
SMALL_RUN = [
    "data=image_folder",
    "model=small_cnn",
    "strategy=scratch",
    "data.image_size=32",
    "data.batch_size=4",
    "data.num_workers=0",
    "trainer.enable_progress_bar=false",
    "callbacks.last_checkpoint.every_s=0",
]


@pytest.fixture(scope="session")
def stop_photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stop_photos")
    write_colour_images(root / "train", 12, 0)
    write_colour_images(root / "val", 4, 1)
    return root


# TINY with the data loaders' default worker processes (data.num_workers=null: CPU cores - 1), as users
# run them: what the launcher tests need, since a launcher's job process is where the workers start.
TINY_WITH_WORKERS = [option for option in TINY if not option.startswith("data.num_workers=")]


@pytest.fixture
def tiny_overrides(colour_folder) -> list[str]:
    return [*TINY, f"data.root={colour_folder}"]


@pytest.fixture
def offline_env(tmp_path) -> dict[str, str]:
    """Environment for subprocess runs: no network (a closed local proxy), an empty torch cache."""
    env = dict(os.environ)
    env.update(
        TORCH_HOME=str(tmp_path / "torch_home"),
        https_proxy="http://127.0.0.1:9",
        http_proxy="http://127.0.0.1:9",
        HF_HUB_OFFLINE="1",
        PYTHONWARNINGS="ignore",
    )
    return env


def run_while_one_waits(
    jobs: list[threading.Thread], log, waiting: str, started: Callable[[], int], release: threading.Event
) -> None:
    """Start `jobs` at once, with their work held, until one of them logs `waiting` for the other
    (the lock works: `started()`, the jobs that began the work, stays below 2); then let the work go."""
    try:
        for job in jobs:
            job.start()
        end = time.monotonic() + 120
        while waiting not in log.text:
            assert started() < 2 and time.monotonic() < end, "both jobs do the work"
            time.sleep(0.05)
    finally:
        release.set()
    for job in jobs:
        job.join()
