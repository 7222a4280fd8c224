"""The notes' datasets in their real on-disk formats, served from 127.0.0.1: download, verify,
extract, scan bad files, and train on each through src/train.py."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from transferlab.data import CatsVsDogsDataModule, CIFAR10DataModule, FashionMNISTDataModule, HymenopteraDataModule
from transferlab.data.download import DownloadError, Remote, download, extract
from transferlab.errors import TransferlabError
from transferlab.models.data_config import DataConfig

from conftest import ROOT, run_while_one_waits
from http_server import FileServer

CONFIG = DataConfig(input_size=32)


def jpeg(colour: int, mode: str = "RGB", fmt: str = "JPEG", seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 100, (24, 24, 3))
    pixels[..., colour] += 150
    image = Image.fromarray(pixels.astype(np.uint8)).convert(mode)
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def zip_of(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()


def hymenoptera_zip() -> bytes:
    files = {}
    for split, count in (("train", 6), ("val", 3)):
        for colour, name in enumerate(("ants", "bees")):
            for i in range(count):
                files[f"hymenoptera_data/{split}/{name}/{i}.jpg"] = jpeg(colour * 2, seed=i)
    return zip_of(files)


BAD_CATS = {"zero.jpg": b"", "truncated.jpg": jpeg(0)[:300], "notes.jpg": b"this is not an image\n"}


def pet_images_zip() -> bytes:
    files = {
        f"PetImages/{kind}/{i}.jpg": jpeg(colour, seed=i)
        for colour, kind in ((0, "Cat"), (2, "Dog"))
        for i in range(10)
    }
    files.update({f"PetImages/Cat/{name}": data for name, data in BAD_CATS.items()})
    files["PetImages/Cat/cmyk.jpg"] = jpeg(0, mode="CMYK")
    files["PetImages/Cat/png_named.jpg"] = jpeg(0, fmt="PNG")
    files["PetImages/Dog/grey.jpg"] = jpeg(2, mode="L")
    files["PetImages/Dog/palette.jpg"] = jpeg(2, mode="P", fmt="GIF")
    files["PetImages/Dog/rgba.jpg"] = jpeg(2, mode="RGBA", fmt="PNG")
    return zip_of(files)


def cifar_tar() -> bytes:
    rng = np.random.default_rng(0)

    def batch(count: int) -> bytes:
        labels = [i % 10 for i in range(count)]
        return pickle.dumps({b"data": rng.integers(0, 255, (count, 3072), dtype=np.uint8), b"labels": labels})

    members = {f"cifar-10-batches-py/data_batch_{i}": batch(20) for i in range(1, 6)}
    members["cifar-10-batches-py/test_batch"] = batch(20)
    names = [
        n.encode() for n in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    ]
    members["cifar-10-batches-py/batches.meta"] = pickle.dumps({b"label_names": names})
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def fashion_files() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    return {
        "train-images-idx3-ubyte.gz": idx(rng.integers(0, 255, (60, 28, 28))),
        "train-labels-idx1-ubyte.gz": idx(np.arange(60) % 10),
        "t10k-images-idx3-ubyte.gz": idx(rng.integers(0, 255, (20, 28, 28))),
        "t10k-labels-idx1-ubyte.gz": idx(np.arange(20) % 10),
    }


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture(scope="module")
def server():
    served = FileServer()
    served.files.update(
        {
            "/hymenoptera_data.zip": hymenoptera_zip(),
            "/kagglecatsanddogs_5340.zip": pet_images_zip(),
            "/cifar-10-python.tar.gz": cifar_tar(),
            **{f"/fashion/{name}": data for name, data in fashion_files().items()},
        }
    )
    yield served
    served.stop()


def listing(folder: Path) -> list[str]:
    """What a folder holds, less the lock files that stay beside what they guarded (empty, never read)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def hymenoptera(server, data_dir: Path, **kwargs) -> HymenopteraDataModule:
    archive = server.files["/hymenoptera_data.zip"]
    options = {"md5": md5(archive), **kwargs}
    return HymenopteraDataModule(
        url=server.url("hymenoptera_data.zip"),
        filename="hymenoptera_data.zip",
        data_dir=str(data_dir),
        data_config=CONFIG,
        num_workers=0,
        **options,
    )


def test_hymenoptera_downloads_once_val_is_the_test_split_validation_comes_from_train(server, tmp_path):
    module = hymenoptera(server, tmp_path)
    module.prepare_data()
    module.setup()
    assert module.class_names == ["ants", "bees"]
    # 6 + 6 in train/, 3 + 3 in val/: one image of each class held out from train/ for validation.
    assert {k: len(v.labels) for k, v in module.splits.items()} == {"train": 10, "val": 2, "test": 6}
    assert {Path(p).parent.parent.name for p in module.splits["test"].images} == {"val"}
    assert Counter(module.splits["val"].labels) == {0: 1, 1: 1}
    assert {Path(p).parent.parent.name for p in module.splits["val"].images} == {"train"}
    assert listing(tmp_path) == ["hymenoptera_data", "hymenoptera_data.zip"]

    before = len(server.requests)
    again = hymenoptera(server, tmp_path)
    again.prepare_data()
    again.setup()
    assert len(server.requests) == before, "the second run downloads nothing"


def test_a_checksum_mismatch_is_a_clear_error_that_leaves_nothing(server, tmp_path):
    module = hymenoptera(server, tmp_path, md5="0" * 32)
    with pytest.raises(DownloadError, match="does not match its published checksum"):
        module.prepare_data()
    assert listing(tmp_path) == []


def test_a_cut_connection_is_resumed_with_a_range_request(server, tmp_path):
    server.cuts["/hymenoptera_data.zip"] = 1
    start = len(server.requests)
    module = hymenoptera(server, tmp_path)
    module.prepare_data()
    ranges = [wanted for path, wanted in server.requests[start:] if path == "/hymenoptera_data.zip"]
    assert ranges[0] is None and ranges[1].startswith("bytes=") and len(ranges) == 2
    module.setup()
    assert len(module.splits["train"].labels) == 10  # 12 in train/, 2 held out for validation


def test_a_download_that_keeps_failing_leaves_no_half_dataset(server, tmp_path):
    server.cuts["/hymenoptera_data.zip"] = 10
    try:
        with pytest.raises(DownloadError) as error:
            hymenoptera(server, tmp_path).prepare_data()
    finally:
        server.cuts["/hymenoptera_data.zip"] = 0
    message = str(error.value)
    assert server.url("hymenoptera_data.zip") in message and "hymenoptera_data.zip" in message
    assert f"md5 {md5(server.files['/hymenoptera_data.zip'])}" in message and str(tmp_path) in message
    assert not (tmp_path / "hymenoptera_data").exists() and not (tmp_path / "hymenoptera_data.zip").exists()


def test_offline_without_a_copy_names_url_file_checksum_and_directory(tmp_path):
    module = HymenopteraDataModule(
        url="http://127.0.0.1:9/hymenoptera_data.zip",
        filename="hymenoptera_data.zip",
        md5="abc",
        data_dir=str(tmp_path),
        data_config=CONFIG,
    )
    with pytest.raises(DownloadError) as error:
        module.prepare_data()
    message = str(error.value)
    for part in (
        "http://127.0.0.1:9/hymenoptera_data.zip",
        "file: hymenoptera_data.zip",
        "md5 abc",
        str(tmp_path / "hymenoptera_data.zip"),
    ):
        assert part in message


@pytest.mark.parametrize("part", ["complete", "corrupt", "longer"])
def test_a_part_with_nothing_left_to_fetch_goes_to_the_checksum(part, server, tmp_path):
    """A run stopped between the last byte and the rename leaves a whole `.part`; the server answers its
    Range request with 416. A part that matches is renamed into place, one that does not is fetched
    again from the start (the checksum, or without one the size the 416 gives, tells)."""
    data = server.files["/hymenoptera_data.zip"]
    (tmp_path / "hymenoptera_data.zip.part").write_bytes(
        {"complete": data, "corrupt": bytes(len(data)), "longer": data + b"x"}[part]
    )
    start = len(server.requests)
    remote = Remote(
        url=server.url("hymenoptera_data.zip"),
        filename="hymenoptera_data.zip",
        md5=None if part == "longer" else md5(data),
    )
    assert download(remote, tmp_path).read_bytes() == data
    resumed_at = len(data) + (part == "longer")
    assert [wanted for _, wanted in server.requests[start:]] == [f"bytes={resumed_at}-"] + (
        [] if part == "complete" else [None]
    )
    assert listing(tmp_path) == ["hymenoptera_data.zip"]


SWEEP_JOB = """
import logging, os, sys, time
from pathlib import Path
from types import SimpleNamespace

import torch

from transferlab.caches import features as feature_cache
from transferlab.models.backbones import create_backbone
from transferlab.models.data_config import DataConfig
from transferlab.data import HymenopteraDataModule

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
url, md5, data_dir, cache_dir, markers = sys.argv[1:]
original = feature_cache.frozen_features


def held(*args, **kwargs):
    (Path(markers) / f"forward-pass-{os.getpid()}").touch()
    while not (Path(markers) / "go").exists():  # the test lets the pass go on once the other job waits
        time.sleep(0.05)
    return original(*args, **kwargs)


feature_cache.frozen_features = held
(Path(markers) / f"ready-{os.getpid()}").touch()
while not (Path(markers) / "start").exists():  # both jobs imported: they start together, as a sweep's do
    time.sleep(0.05)
data = HymenopteraDataModule(url=url, filename="hymenoptera_data.zip", md5=md5, data_dir=data_dir,
                             data_config=DataConfig(input_size=32), num_workers=0)
data.prepare_data()
data.setup()
torch.manual_seed(0)
backbone = create_backbone("small_cnn", pretrained=False)
module = SimpleNamespace(backbone=backbone, features=backbone, device=torch.device("cpu"))
features = feature_cache.split_features(module, data, "test", augment=False, views=1, directory=Path(cache_dir))
print(tuple(features.shape), features.double().sum().item())
"""


def wait_until(condition, what: str, jobs: list[subprocess.Popen], logs: list[Path], deadline_s: float = 300) -> None:
    """Poll while the jobs run; a job that ends first, or a stall, fails with the jobs' logs."""
    end = time.monotonic() + deadline_s
    while not condition():
        if any(job.poll() is not None for job in jobs) or time.monotonic() > end:
            pytest.fail(
                f"never saw {what}; the jobs' logs:\n" + "\n---\n".join(log.read_text()[-3000:] for log in logs)
            )
        time.sleep(0.1)


def test_two_sweep_jobs_started_together_download_extract_and_compute_features_once(server, tmp_path):
    """Two OS processes want the same archive, folder and feature-cache entry at once: one does each
    piece of work while the other waits for it, then reads the complete result."""
    archive = "/hymenoptera_data.zip"
    data_dir, cache_dir, markers = tmp_path / "data", tmp_path / "features", tmp_path / "markers"
    markers.mkdir()
    server.holds[archive] = threading.Event()  # the download that starts stays open until the other job waits
    start = len(server.requests)
    command = [
        sys.executable,
        "-c",
        SWEEP_JOB,
        server.url(archive),
        md5(server.files[archive]),
        str(data_dir),
        str(cache_dir),
        str(markers),
    ]
    env = {**os.environ, "no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1", "PYTHONWARNINGS": "ignore"}
    logs = [tmp_path / f"job{i}.log" for i in range(2)]
    jobs = []
    for log in logs:
        with log.open("w") as stderr:
            jobs.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, cwd=ROOT))

    def waiting_for(name: str) -> bool:
        return any(f"waiting for another process that is writing {name}" in log.read_text() for log in logs)

    try:
        wait_until(lambda: len(list(markers.glob("ready-*"))) == 2, "both jobs ready", jobs, logs)
        (markers / "start").touch()
        wait_until(lambda: len(server.requests) > start, "the download", jobs, logs)
        wait_until(
            lambda: waiting_for(str(data_dir / "hymenoptera_data.zip")), "a job waiting for the download", jobs, logs
        )
        server.holds.pop(archive).set()
        wait_until(lambda: any(markers.glob("forward-pass-*")), "a forward pass", jobs, logs)
        wait_until(lambda: waiting_for(str(cache_dir / "test-")), "a job waiting for the features", jobs, logs)
        (markers / "go").touch()
        outputs = [job.communicate(timeout=300)[0] for job in jobs]
    finally:
        server.holds.pop(archive, threading.Event()).set()
        (markers / "start").touch()
        (markers / "go").touch()
        for job in jobs:
            if job.poll() is None:
                job.kill()
    assert [job.returncode for job in jobs] == [0, 0], [log.read_text()[-3000:] for log in logs]
    assert [path for path, _ in server.requests[start:]] == [archive], "one download"
    assert sum(log.read_text().count("extracting hymenoptera_data.zip") for log in logs) == 1, "one extraction"
    assert len(list(markers.glob("forward-pass-*"))) == 1, "one forward pass"
    assert outputs[0] == outputs[1] and outputs[0].startswith("(1, 6, ")  # the waiting job read the complete file
    assert listing(data_dir) == ["hymenoptera_data", "hymenoptera_data.zip"], "no part, no staging folder left"
    saved = listing(cache_dir)
    assert len(saved) == 1 and saved[0].startswith("test-") and saved[0].endswith(".pt"), saved


def test_an_existing_copy_is_used_without_downloading(server, tmp_path):
    hymenoptera(server, tmp_path / "first").prepare_data()
    before = len(server.requests)
    module = hymenoptera(server, tmp_path / "elsewhere", root=str(tmp_path / "first" / "hymenoptera_data"))
    module.prepare_data()
    module.setup()
    assert len(server.requests) == before and not (tmp_path / "elsewhere").exists()


def test_pet_images_bad_files_are_reported_and_skipped_odd_formats_converted(server, tmp_path, caplog):
    from transferlab.data import scan

    module = CatsVsDogsDataModule(
        url=server.url("kagglecatsanddogs_5340.zip"),
        filename="kagglecatsanddogs_5340.zip",
        data_dir=str(tmp_path),
        data_config=CONFIG,
        num_workers=0,
        split_fractions=[0.4, 0.1, 0.1],
        scan_cache_dir=str(tmp_path / "scan_cache"),
    )
    module.prepare_data()
    module.setup()
    root = tmp_path / "PetImages"
    report = scan.cache_paths(root, tmp_path / "scan_cache")[1].read_text()
    assert sorted(Path(line.split("\t")[0]).name for line in report.splitlines()) == sorted(BAD_CATS)
    assert "skipped 3 unusable image file(s) of 28" in caplog.text and "bad_images.txt" in caplog.text
    total = sum(len(split.labels) for split in module.splits.values())
    assert total == round(25 * 0.6)  # 25 usable images, 40/10/10 % of them
    for name in ("train", "val", "test"):
        images, _ = next(iter(module.loader(name, augment=name == "train")))
        assert images.shape[1:] == (3, 32, 32)
    everything = [module.splits[n].images for n in module.splits]
    assert not any(Path(p).name in BAD_CATS for images in everything for p in images)


def test_the_scan_is_cached_and_redone_for_changed_files(server, tmp_path, monkeypatch):
    from transferlab.data import scan

    module = CatsVsDogsDataModule(
        url=server.url("kagglecatsanddogs_5340.zip"),
        filename="kagglecatsanddogs_5340.zip",
        data_dir=str(tmp_path),
        data_config=CONFIG,
        split_fractions=[0.4, 0.1, 0.1],
        scan_cache_dir=str(tmp_path / "scan_cache"),
    )
    module.prepare_data()
    module.setup()
    checked = []
    original = scan.problem_with
    monkeypatch.setattr(scan, "problem_with", lambda path: checked.append(path.name) or original(path))
    (tmp_path / "PetImages" / "Cat" / "zero.jpg").write_bytes(jpeg(0))  # repaired
    again = CatsVsDogsDataModule(
        url="unused",
        filename="kagglecatsanddogs_5340.zip",
        data_dir=str(tmp_path),
        data_config=CONFIG,
        split_fractions=[0.4, 0.1, 0.1],
        scan_cache_dir=str(tmp_path / "scan_cache"),
    )
    again.setup()
    assert checked == ["zero.jpg"]
    assert "zero.jpg" not in scan.cache_paths(tmp_path / "PetImages", tmp_path / "scan_cache")[1].read_text()


def test_a_large_folder_is_checked_on_every_core_with_the_same_result(tmp_path, monkeypatch):
    from transferlab.data import scan

    good, broken = jpeg(1), {"empty.jpg": b"", "cut.jpg": jpeg(2)[:200], "text.jpg": b"not an image"}
    count = scan.PARALLEL_FROM + 20
    for i in range(count):
        (tmp_path / f"{i:04d}.jpg").write_bytes(good)
    for name, data in broken.items():
        (tmp_path / name).write_bytes(data)
    files = sorted(tmp_path.glob("*.jpg"))
    pools = []
    original_pool = scan.ProcessPoolExecutor
    monkeypatch.setattr(
        scan, "ProcessPoolExecutor", lambda **options: pools.append(options) or original_pool(**options)
    )
    cache, report = scan.cache_paths(tmp_path, tmp_path.parent / "scan_cache")
    in_parallel = scan.scan(tmp_path, files, cache.parent)
    parallel_report = report.read_text()
    cache.unlink()
    monkeypatch.setattr(scan, "PARALLEL_FROM", 10**9)
    assert scan.scan(tmp_path, files, cache.parent) == in_parallel
    assert len(pools) == (1 if len(os.sched_getaffinity(0)) > 1 else 0)
    assert len(in_parallel) == count and report.read_text() == parallel_report
    assert sorted(line.split("\t")[0].rsplit("/", 1)[-1] for line in parallel_report.splitlines()) == sorted(broken)


def test_a_damaged_scan_cache_is_reported_and_every_file_checked_again(tmp_path, caplog):
    from transferlab.data import scan

    for i in range(3):
        (tmp_path / f"{i}.jpg").write_bytes(jpeg(1, seed=i))
    files = sorted(tmp_path.glob("*.jpg"))
    cache = scan.cache_paths(tmp_path, tmp_path / "cache")[0]
    cache.parent.mkdir()
    for damaged in ('{"0.jpg": 5}', '["0.jpg"]', '{"0.jpg": [1, 2'):
        cache.write_text(damaged)
        caplog.clear()
        assert scan.scan(tmp_path, files, cache.parent) == files
        assert f"scan cache {cache} is" in caplog.text and "checking every image again" in caplog.text
        assert sorted(json.loads(cache.read_text())) == ["0.jpg", "1.jpg", "2.jpg"]


def test_two_jobs_scanning_one_folder_at_once_check_each_file_once(tmp_path, monkeypatch, caplog):
    """The second job waits for the first one's lock, then reads its cache (threads hold separate
    locks, as processes do)."""
    from transferlab.data import scan

    caplog.set_level("INFO", logger="transferlab.files")
    for i in range(3):
        (tmp_path / f"{i}.jpg").write_bytes(jpeg(1, seed=i))
    files = sorted(tmp_path.glob("*.jpg"))
    release, checked, results = threading.Event(), [], []
    original = scan.problem_with

    def held(path: Path) -> str | None:
        checked.append(path.name)
        release.wait()
        return original(path)

    monkeypatch.setattr(scan, "problem_with", held)
    cache_dir = tmp_path.parent / f"{tmp_path.name}-cache"
    jobs = [
        threading.Thread(target=lambda: results.append(scan.scan(tmp_path, files, cache_dir)), daemon=True)
        for _ in range(2)
    ]
    run_while_one_waits(jobs, caplog, "waiting for another process that is writing", lambda: len(checked), release)
    assert results == [files, files] and sorted(checked) == ["0.jpg", "1.jpg", "2.jpg"]
    assert listing(tmp_path) == [f.name for f in files], "nothing written into the data folder"
    cache = scan.cache_paths(tmp_path, cache_dir)[0]
    assert listing(cache_dir) == [cache.name], "no partial file left"


def test_a_read_only_data_folder_is_scanned_cached_elsewhere_and_left_as_it_was(tmp_path, caplog):
    from transferlab.data import ImageFolderDataModule, scan

    root = tmp_path / "shared"
    for split, count in (("train", 4), ("val", 2)):
        for name in ("ants", "bees"):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                (root / split / name / f"{i}.jpg").write_bytes(jpeg(1, seed=i))
    (root / "train" / "ants" / "broken.jpg").write_bytes(b"not an image")
    before = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        folder.chmod(0o555)  # as on a shared, read-only mount (root may still write: the listing checks)
    try:
        for _ in range(2):  # the second run reads the cache
            module = ImageFolderDataModule(
                root=str(root), data_config=CONFIG, num_workers=0, val_fraction=0.5, scan_cache_dir=str(tmp_path / "c")
            )
            module.setup()
            assert module.split_sizes() == {"data/train_size": 4, "data/val_size": 4, "data/test_size": 4}
    finally:
        for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
            folder.chmod(0o755)
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == before, "nothing written into the data folder"
    cache, report = scan.cache_paths(root / "train", tmp_path / "c")
    assert "broken.jpg" in report.read_text() and len(json.loads(cache.read_text())) == 9
    assert cache.name.startswith("train-") and cache != scan.cache_paths(root / "val", tmp_path / "c")[0]


def test_a_class_folder_with_only_broken_files_is_an_error_before_training(tmp_path):
    from transferlab.data import ImageFolderDataModule

    for name, data in (("good", jpeg(0)), ("broken", b"")):
        (tmp_path / name).mkdir()
        for i in range(3):
            (tmp_path / name / f"{i}.jpg").write_bytes(data)
    with pytest.raises(TransferlabError, match="broken holds no usable images"):
        ImageFolderDataModule(root=str(tmp_path), data_config=CONFIG).setup()


def test_cifar10_batches_are_read_and_split(server, tmp_path):
    archive = server.files["/cifar-10-python.tar.gz"]
    module = CIFAR10DataModule(
        url=server.url("cifar-10-python.tar.gz"),
        filename="cifar-10-python.tar.gz",
        md5=md5(archive),
        data_dir=str(tmp_path),
        val_size=10,
        data_config=CONFIG,
        num_workers=0,
    )
    module.prepare_data()
    module.setup()
    assert module.class_names[:2] == ["airplane", "automobile"]
    assert {k: len(v.labels) for k, v in module.splits.items()} == {"train": 90, "val": 10, "test": 20}
    assert module.splits["test"].images[0].shape == (32, 32, 3)


def test_fashion_mnist_idx_files_download_and_read(server, tmp_path):
    files = fashion_files()
    module = FashionMNISTDataModule(
        base_url=server.url("fashion"),
        data_dir=str(tmp_path),
        debian_dir=str(tmp_path / "none"),
        val_size=10,
        md5s={name: md5(data) for name, data in files.items()},
        data_config=CONFIG,
        num_workers=0,
    )
    module.prepare_data()
    module.setup()
    assert {k: len(v.labels) for k, v in module.splits.items()} == {"train": 50, "val": 10, "test": 20}
    assert module.class_names[9] == "Ankle boot"
    assert listing(tmp_path / "FashionMNIST" / "raw") == sorted(files)


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["hymenoptera", "cats_vs_dogs", "cifar10", "fashion_mnist"])
def test_a_short_training_run_on_each_dataset(dataset, server, tmp_path, offline_env):
    overrides = {
        "hymenoptera": [f"data.url={server.url('hymenoptera_data.zip')}"],
        "cats_vs_dogs": [f"data.url={server.url('kagglecatsanddogs_5340.zip')}", "data.split_fractions=[0.6,0.2,0.2]"],
        "cifar10": [f"data.url={server.url('cifar-10-python.tar.gz')}", "data.md5=null", "data.val_size=10"],
        "fashion_mnist": [
            f"data.base_url={server.url('fashion')}",
            "data.val_size=10",
            f"data.root={tmp_path / 'fashion'}",
        ],
    }[dataset]
    if dataset == "fashion_mnist":
        (tmp_path / "fashion").mkdir()
        for name, data in fashion_files().items():
            (tmp_path / "fashion" / name).write_bytes(data)
    command = [
        sys.executable,
        str(ROOT / "src" / "train.py"),
        f"data={dataset}",
        *overrides,
        "model=small_cnn",
        "strategy=scratch",
        "data.image_size=32",
        "data.batch_size=8",
        "data.num_workers=0",
        "trainer.max_epochs=1",
        f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    env = {**offline_env, "no_proxy": "127.0.0.1"}
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data"] == dataset and 0 <= metrics["test/acc"] <= 1
    # The photo datasets decode once: cats_vs_dogs into memory-mapped files, hymenoptera in memory.
    on_disk = sorted(p.name.split("-")[1] for p in (tmp_path / "data" / "decoded_cache").glob("*.u8"))
    assert on_disk == (["test", "train", "val"] if dataset == "cats_vs_dogs" else [])


@pytest.mark.parametrize(
    "member",
    [
        tarfile.TarInfo("../outside.txt"),  # climbs out of the folder (an absolute path is made relative)
        SimpleNamespace(name="data/link", type=tarfile.SYMTYPE, linkname="../../etc/passwd"),  # a link out of it
    ],
    ids=["parent", "symlink"],
)
def test_an_archive_member_outside_its_folder_is_refused_and_nothing_is_written(member, tmp_path):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        info = tarfile.TarInfo("data/ok.txt")
        info.size = 2
        archive.addfile(info, io.BytesIO(b"ok"))
        unsafe = tarfile.TarInfo(member.name)
        unsafe.type = getattr(member, "type", tarfile.REGTYPE)
        unsafe.linkname = getattr(member, "linkname", "")
        archive.addfile(unsafe, io.BytesIO(b"") if unsafe.type == tarfile.REGTYPE else None)
    tarball = tmp_path / "set.tar.gz"
    tarball.write_bytes(out.getvalue())
    (tmp_path / "sets").mkdir()
    with pytest.raises(DownloadError, match=f"refusing unsafe archive member '{member.name}'"):
        extract(tarball, tmp_path / "sets" / "data", "data")
    assert not (tmp_path / "sets" / "data").exists() and not (tmp_path / "outside.txt").exists()
    assert [p.name for p in (tmp_path / "sets").iterdir()] == [".data.lock"], "the staging folder is removed"
