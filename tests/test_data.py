"""Datamodules: splits, class checks, transforms from the weights, reproducible augmentation."""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from transferlab.data import DigitsDataModule, ImageFolderDataModule, PhotosDataModule, TableDataModule, photos
from transferlab.data.loading import EpochSampler
from transferlab.data.photos import SPLITS
from transferlab.data.splits import Split, split_lines
from transferlab.errors import TransferlabError
from transferlab.models.data_config import DataConfig

from conftest import CLASSES, write_colour_images

CONFIG = DataConfig(input_size=224, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def test_digits_are_split_stratified_and_seeded():
    first = DigitsDataModule(data_config=CONFIG, image_size=48, seed=3, num_workers=0)
    first.setup()
    assert first.num_classes == 10 and first.class_names[0] == "0"
    sizes = {name: len(split.labels) for name, split in first.splits.items()}
    assert sum(sizes.values()) == 1797 and sizes["train"] == pytest.approx(0.6 * 1797, abs=2)
    per_class = Counter(first.splits["test"].labels)
    assert max(per_class.values()) - min(per_class.values()) <= 2, "stratified"

    again = DigitsDataModule(data_config=CONFIG, image_size=48, seed=3, num_workers=0)
    again.setup()
    other = DigitsDataModule(data_config=CONFIG, image_size=48, seed=4, num_workers=0)
    other.setup()
    assert again.splits["test"].labels == first.splits["test"].labels
    assert [a.tobytes() for a in again.splits["test"].images] == [a.tobytes() for a in first.splits["test"].images]
    assert [a.tobytes() for a in other.splits["test"].images] != [a.tobytes() for a in first.splits["test"].images]

    images, labels = next(iter(first.val_dataloader()))
    assert images.shape == (32, 3, 48, 48), "the data config's size override wins over the weights' 224"
    assert labels.dtype == torch.int64


def folder_files(folder) -> set:
    return {path for path in folder.rglob("*.jpg")}


def test_without_a_test_folder_val_is_the_test_split_and_validation_comes_from_train(tmp_path, caplog):
    write_colour_images(tmp_path / "train", 10, 0)
    write_colour_images(tmp_path / "val", 4, 1)
    for path in sorted((tmp_path / "train" / "blue").iterdir())[:5]:
        path.unlink()  # uneven classes: blue 5, green 10, red 10
    caplog.set_level(logging.INFO)

    def split(seed: int, **options) -> ImageFolderDataModule:
        module = ImageFolderDataModule(root=str(tmp_path), data_config=CONFIG, num_workers=0, seed=seed, **options)
        module.setup()
        return module

    module = split(seed=5)
    module.log_splits()  # what a run prints first (run.pipeline calls it once the experiment is built)
    assert module.class_names == list(sorted(CLASSES))
    train, val, test = (module.splits[name] for name in ("train", "val", "test"))
    assert test.images == sorted(folder_files(tmp_path / "val"), key=lambda p: (p.parent.name, p)), (
        "val/ untouched, as the test split"
    )
    assert test.labels == [module.class_names.index(p.parent.name) for p in test.images]
    assert set(val.images) < folder_files(tmp_path / "train") and not set(train.images) & set(val.images)
    assert set(train.images) | set(val.images) == folder_files(tmp_path / "train")
    assert all(module.class_names[label] == path.parent.name for path, label in zip(val.images, val.labels))
    assert Counter(module.class_names[label] for label in val.labels) == {"blue": 1, "green": 2, "red": 2}, (
        "0.2 of each class"
    )
    assert module.split_sizes() == {"data/train_size": 20, "data/val_size": 5, "data/test_size": 12}
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "3 classes" in r.getMessage()]
    assert lines[-1].splitlines() == [
        f"the folder {tmp_path}: 3 classes",
        f"  train      20 images (blue 4, green 8, red 8): the folder {tmp_path / 'train'} less the val split",
        f"  val         5 images (blue 1, green 2, red 2): held out of the folder {tmp_path / 'train'} "
        "(data.val_fraction=0.2, stratified, seed 5)",
        f"  test       12 images (blue 4, green 4, red 4): the folder {tmp_path / 'val'} "
        "(no test/ folder: val/ is the test split, never used to choose)",
    ]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert (
        "the val split has 5 images: choosing the best epoch on so few is noisy (one image is 20.0 points"
        in (warnings[-1])
    )

    assert split(seed=5).splits["val"] == val, "same seed, same split"
    assert split(seed=6).splits["val"].images != val.images
    assert Counter(split(seed=5, val_fraction=0.5).splits["val"].labels) == {0: 3, 1: 5, 2: 5}


def test_the_start_lines_say_each_splits_origin_and_warn_of_imbalance(caplog):
    caplog.set_level(logging.INFO)
    digits = DigitsDataModule(data_config=CONFIG, image_size=32, seed=3, num_workers=0, subset={"train": 500})
    digits.setup()
    digits.log_splits()
    text = caplog.records[-1].getMessage().splitlines()
    assert text[0] == "Digits: 10 classes"
    assert text[1].startswith(
        "  train     500 images (48–51 a class): data.subset.train=500 of 1,077 (stratified, seed 3), "
    )
    assert text[1].endswith(
        "which are 60 % of the 1,797 images of scikit-learn's digits (data.split_fractions 60/20/20, stratified, seed 3)"
    )
    assert text[3].endswith(
        ": 20 % of the 1,797 images of scikit-learn's digits (data.split_fractions 60/20/20, stratified, seed 3)"
    )
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "balanced, and 360 val images"

    labels = [0] * 40 + [1] * 12 + [2] * 13
    lines, warnings = split_lines(["cat", "dog", "fox"], {"train": Split([None] * 65, labels, "a CSV file")})
    assert lines[0] == "  train      65 images (cat 40, dog 12, fox 13): a CSV file"
    assert lines[1].startswith("  val      none: data.val_fraction=0, so nothing chooses an epoch")
    assert warnings == [
        "imbalanced: the train split has 40 'cat' images but 12 'dog'; see balanced accuracy and per-class F1 in metrics.json"
    ]
    assert split_lines(["cat", "dog"], {"train": Split([None] * 48, [0] * 36 + [1] * 12)})[1] == [], "3× is not over 3×"


def test_a_bad_val_fraction_or_a_class_too_small_to_hold_out_from_is_a_clear_error(tmp_path):
    for fraction in (1, 1.5, -0.1):
        with pytest.raises(
            TransferlabError, match=rf"data.val_fraction={fraction}: choose a fraction of train/ .* from 0"
        ):
            ImageFolderDataModule(root=str(tmp_path), data_config=CONFIG, val_fraction=fraction)
    write_colour_images(tmp_path / "train", 2, 0)
    write_colour_images(tmp_path / "val", 2, 1)
    for path in sorted((tmp_path / "train" / "green").iterdir())[1:]:
        path.unlink()
    with pytest.raises(
        TransferlabError, match=r"data.val_fraction: class 'green' has 1 image in .*train, too few.*add a test/"
    ):
        ImageFolderDataModule(root=str(tmp_path), data_config=CONFIG).setup()
    write_colour_images(tmp_path / "test", 2, 2)
    assert len(ImageFolderDataModule(root=str(tmp_path), data_config=CONFIG).split_sizes()) == 3, (
        "with test/, nothing is held out"
    )


def test_image_folder_of_class_folders_is_split_here(tmp_path):
    write_colour_images(tmp_path, 10, 0)
    module = ImageFolderDataModule(
        root=str(tmp_path), data_config=CONFIG, split_fractions=[0.6, 0.2, 0.2], num_workers=0
    )
    module.setup()
    assert {name: len(s.labels) for name, s in module.splits.items()} == {"train": 18, "val": 6, "test": 6}
    assert Counter(module.splits["val"].labels) == {0: 2, 1: 2, 2: 2}


def test_image_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(TransferlabError, match="needs data.root"):
        ImageFolderDataModule(root=None, data_config=CONFIG)
    with pytest.raises(TransferlabError, match="is not a directory"):
        ImageFolderDataModule(root=str(tmp_path / "nowhere"), data_config=CONFIG).setup()

    write_colour_images(tmp_path / "train", 2, 0)
    write_colour_images(tmp_path / "val", 2, 1)
    shutil.rmtree(tmp_path / "val" / "blue")
    with pytest.raises(TransferlabError, match=r"val has classes \['green', 'red'\], but train/ has"):
        ImageFolderDataModule(root=str(tmp_path), data_config=CONFIG).setup()

    (tmp_path / "val" / "blue").mkdir()
    with pytest.raises(TransferlabError, match="blue holds no usable images"):
        ImageFolderDataModule(root=str(tmp_path), data_config=CONFIG).setup()


def test_augmentation_is_a_function_of_seed_epoch_and_index(colour_folder):
    module = ImageFolderDataModule(root=str(colour_folder), data_config=CONFIG, image_size=32, num_workers=0, seed=0)
    module.setup()
    dataset = module.train_dataloader().dataset
    torch.manual_seed(123)
    first = dataset[(1, 5)][0]
    torch.manual_seed(999)  # the global generator does not matter
    assert torch.equal(first, dataset[(1, 5)][0])
    assert not torch.equal(first, dataset[(2, 5)][0]), "another epoch, another augmentation"
    evaluation = module.val_dataloader().dataset
    assert torch.equal(evaluation[0][0], evaluation[0][0])


def test_epoch_sampler_shuffles_per_epoch_reproducibly():
    sampler = EpochSampler(10, seed=1, shuffle=True, keyed_by_epoch=True)
    sampler.set_epoch(3)
    order = list(sampler)
    assert sorted(i for _, i in order) == list(range(10)) and {e for e, _ in order} == {3}
    assert list(sampler) == order
    sampler.set_epoch(4)
    assert [i for _, i in sampler] != [i for _, i in order]
    assert list(EpochSampler(5, seed=1, shuffle=False, keyed_by_epoch=False)) == [0, 1, 2, 3, 4]


def test_a_subset_is_a_seeded_stratified_sample_of_each_split():
    full = DigitsDataModule(data_config=CONFIG, seed=3, num_workers=0)
    full.setup()
    small = DigitsDataModule(data_config=CONFIG, seed=3, num_workers=0, subset={"train": 100, "val": 50, "test": None})
    small.setup()
    assert small.split_sizes() == {"data/train_size": 100, "data/val_size": 50, "data/test_size": 360}
    assert set(Counter(small.splits["train"].labels).values()) == {10}, "stratified: 10 of each class"
    assert set(Counter(small.splits["val"].labels).values()) == {5}
    full_train = {image.tobytes() for image in full.splits["train"].images}
    assert {image.tobytes() for image in small.splits["train"].images} <= full_train, "drawn from its own split"
    assert small.splits["test"].labels == full.splits["test"].labels, "null keeps the whole split"
    again = DigitsDataModule(data_config=CONFIG, seed=3, num_workers=0, subset={"train": 100})
    again.setup()
    assert [a.tobytes() for a in again.splits["train"].images] == [a.tobytes() for a in small.splits["train"].images]


@pytest.mark.parametrize(
    "subset, message",
    [
        ({"train": 5000}, "data.subset.train=5000 is more than the 1077 images of the train split"),
        ({"val": 4}, "data.subset.val=4 is fewer than the split's 10 classes"),
        ({"holdout": 10}, "data.subset.holdout: no such split; the splits are train, val, test"),
    ],
)
def test_a_subset_the_split_cannot_give_is_a_clear_error(subset, message):
    module = DigitsDataModule(data_config=CONFIG, seed=3, num_workers=0, subset=subset)
    with pytest.raises(TransferlabError, match=message):
        module.setup()


def flat_cells(height: int, width: int, grid: int, offset: int) -> np.ndarray:
    """A 'photograph' whose grid cells are flat colours, unique over all photographs."""
    rows = np.minimum(np.arange(height) * grid // height, grid - 1)
    cols = np.minimum(np.arange(width) * grid // width, grid - 1)
    cell = offset + rows[:, None] * grid + cols[None, :]
    return np.stack([cell, cell * 3 % 256, np.full_like(cell, 7)], axis=-1).astype(np.uint8)


def test_photo_crops_stay_inside_cells_dealt_to_one_split(monkeypatch):
    grid = 3
    fake = {"wide": flat_cells(60, 90, grid, 0), "tall": flat_cells(99, 45, grid, 100)}
    monkeypatch.setattr(photos, "photographs", lambda: {name: (lambda p=p: p) for name, p in fake.items()})
    module = PhotosDataModule(grid=grid, cells=(5, 2, 2), crops_per_cell=3, crop_size=16, data_config=CONFIG, seed=1)
    module.setup()
    assert module.class_names == ["wide", "tall"]
    cells_of = {}
    for name, split in module.splits.items():
        assert Counter(split.labels) == {0: 3 * (5, 2, 2)[SPLITS.index(name)], 1: 3 * (5, 2, 2)[SPLITS.index(name)]}
        for image, label in zip(split.images, split.labels, strict=True):
            assert image.shape == (16, 16, 3)
            colours = np.unique(image.reshape(-1, 3), axis=0)
            assert len(colours) == 1, "a crop never straddles two cells"
            cell = int(colours[0][0])
            assert (cell >= 100) == (label == 1), "a crop is labelled with its own photograph"
            cells_of.setdefault(name, set()).add(cell)
    assert not (cells_of["train"] & cells_of["val"]) and not (cells_of["train"] & cells_of["test"])
    assert not (cells_of["val"] & cells_of["test"]), "each cell is dealt to one split"
    assert len(cells_of["train"]) == 10 and len(cells_of["val"]) == len(cells_of["test"]) == 4


def test_the_photo_set_is_real_photographs_seeded_and_balanced():
    module = PhotosDataModule(data_config=CONFIG, seed=42, num_workers=0)
    module.setup()
    assert module.split_sizes() == {"data/train_size": 480, "data/val_size": 480, "data/test_size": 480}
    assert all(set(Counter(split.labels).values()) == {48} for split in module.splits.values())
    cat = module.splits["train"].images[module.splits["train"].labels.index(module.class_names.index("cat"))]
    assert cat.shape == (96, 96, 3) and cat.std() > 10, "a textured crop of a real photograph"
    other = PhotosDataModule(data_config=CONFIG, seed=43, num_workers=0)
    other.setup()
    assert other.splits["test"].images[0].tobytes() != module.splits["test"].images[0].tobytes()


def test_photo_cells_that_do_not_fill_the_grid_are_a_clear_error():
    with pytest.raises(
        TransferlabError, match=r"data.cells=\[10, 3, 2\]: need three positive counts .* data.grid² = 16"
    ):
        PhotosDataModule(grid=4, cells=(10, 3, 2), data_config=CONFIG)


def labelled_table(root, rows: list[str], name: str = "labels.csv") -> Path:
    write_colour_images(root / "img", 6, 0)
    (root / name).write_text("\n".join(rows) + "\n")
    return root / name


def test_a_csv_of_paths_and_labels_with_a_split_column_and_bad_rows_reported_by_number(tmp_path, caplog):
    rows = ["file,label,split"]
    for colour in CLASSES:
        rows += [
            f"img/{colour}/{colour}_{i:03d}.jpg,{colour},{'train' if i < 4 else 'valid' if i < 5 else 'test'}"
            for i in range(6)
        ]
    rows += ["img/red/missing.jpg,red,train", "img/red/red_000.jpg,,train", "img/red/red_001.jpg,red,holdout"]
    table = labelled_table(tmp_path, rows)
    (tmp_path / "img" / "red" / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "labels.csv").write_text(table.read_text() + "img/red/broken.jpg,red,train\n")
    caplog.set_level(logging.INFO)
    module = TableDataModule(csv=str(table), data_config=CONFIG, num_workers=0, scan_cache_dir=str(tmp_path / "scan"))
    module.setup()
    assert module.class_names == sorted(CLASSES)
    assert module.split_sizes() == {"data/train_size": 12, "data/val_size": 3, "data/test_size": 3}
    train = module.splits["train"]
    assert all(Path(p).parent.name == module.class_names[label] for p, label in zip(train.images, train.labels))
    warning = next(r.getMessage() for r in caplog.records if "skipped 4 of 22 rows" in r.getMessage())
    for expected in ("row 20: no file", "row 21: empty label", "row 22: split 'holdout' is not train, val or test",
                     "row 23: ", "broken.jpg is not a readable image"):  # fmt: skip
        assert expected in warning, expected


def test_a_table_without_a_split_column_is_split_here_and_parquet_reads_the_same(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = ["path,class"] + [f"{colour}/{colour}_{i:03d}.jpg,{colour}" for colour in CLASSES for i in range(6)]
    table = labelled_table(tmp_path, rows)
    options = {
        "data_config": CONFIG,
        "num_workers": 0,
        "root": str(tmp_path / "img"),
        "split_fractions": [0.5, 0.25, 0.25],
    }
    from_csv = TableDataModule(csv=str(table), **options)
    from_csv.setup()
    assert from_csv.split_sizes() == {"data/train_size": 8, "data/val_size": 5, "data/test_size": 5}
    assert "50 % of the 18 images of the table" in from_csv.splits["train"].source
    columns = [line.split(",") for line in rows[1:]]
    pq.write_table(
        pa.table({"path": [c[0] for c in columns], "class": [c[1] for c in columns]}), tmp_path / "labels.parquet"
    )
    from_parquet = TableDataModule(csv=str(tmp_path / "labels.parquet"), **options)
    from_parquet.setup()
    for name in ("train", "val", "test"):
        assert from_parquet.splits[name].images == from_csv.splits[name].images, name


@pytest.mark.parametrize(
    ("rows", "options", "message"),
    [
        (["file,label"], {}, "data.csv=.*: no rows"),
        (["file,label", "nowhere.jpg,cat"], {}, r"no usable rows \(first problems: row 2: no file"),
        (["file,label", "x.jpg,cat"], {"label_column": "class"}, "data.label_column=class: no such column in .*; its columns are file, label"),
        (["file,label,split", "img/red/red_000.jpg,red,train"], {}, "its split column needs train rows and val or test rows"),
    ],
)  # fmt: skip
def test_a_table_the_run_cannot_use_is_one_clear_error(rows, options, message, tmp_path):
    table = labelled_table(tmp_path, rows)
    with pytest.raises(TransferlabError, match=message):
        TableDataModule(csv=str(table), data_config=CONFIG, num_workers=0, **options).setup()
    with pytest.raises(TransferlabError, match="data=csv needs data.csv=PATH"):
        TableDataModule(data_config=CONFIG)


def test_a_file_listed_twice_is_reported_and_a_class_missing_from_a_split_warned(tmp_path, caplog):
    rows = ["file,label,split"]
    rows += [f"img/{c}/{c}_{i:03d}.jpg,{c},{'train' if i < 4 else 'test'}" for c in ("red", "green") for i in range(6)]
    rows += ["img/blue/blue_000.jpg,blue,test", "img/red/red_005.jpg,red,train"]  # blue: test only; red_005 twice
    table = labelled_table(tmp_path, rows)
    caplog.set_level(logging.INFO)
    module = TableDataModule(csv=str(table), data_config=CONFIG, num_workers=0, scan_cache_dir=str(tmp_path / "s"))
    module.setup()
    module.log_splits()
    assert "skipped 1 of 14 rows: row 15: the same file as row 7" in caplog.text
    assert "(-1 known" not in caplog.text
    assert "the train split has no images of 'blue': the model cannot learn them" in caplog.text


def test_val_fraction_0_where_it_does_not_apply_is_an_error_not_ignored(tmp_path):
    write_colour_images(tmp_path, 4, 0)  # class folders, split here by split_fractions
    with pytest.raises(
        TransferlabError, match="data.val_fraction=0 applies to a folder with train/ and val/ but no test/"
    ):
        ImageFolderDataModule(root=str(tmp_path), data_config=CONFIG, val_fraction=0).setup()


def test_a_clean_scan_removes_an_older_list_of_bad_files(tmp_path):
    from transferlab.data import scan

    (tmp_path / "a.jpg").write_bytes(b"not an image")
    files = [tmp_path / "a.jpg"]
    report = scan.cache_paths(tmp_path, tmp_path.parent / "c")[1]
    assert scan.scan(tmp_path, files, tmp_path.parent / "c") == [] and "a.jpg" in report.read_text()
    write_colour_images(tmp_path / "x", 1, 0)
    good = sorted((tmp_path / "x").rglob("*.jpg"))
    assert scan.scan(tmp_path, good, tmp_path.parent / "c") == good and not report.exists()


def test_the_augmentation_and_batch_seeds_are_pythons_tuple_hash_written_out():
    """seed_of gives exactly what the seeds were before (hash((seed, epoch, index)) & 0x7FFF_FFFF on 64-bit
    CPython), so runs draw as they did, and no longer depends on Python keeping its tuple hash."""
    import random

    from transferlab.stable_hash import seed_of

    draws = random.Random(0)
    keys = [(42, 0, 0), (-1, 3, 5), (-2, -1, 7), (2**61, 1, 2), (2**63 + 5, 0, 1), (7,)]
    keys += [tuple(draws.randint(-(2**40), 2**40) for _ in range(draws.randint(1, 4))) for _ in range(2000)]
    assert [seed_of(*key) for key in keys] == [hash(key) & 0x7FFF_FFFF for key in keys]
    assert seed_of(42, 0, 0) == 1192296978  # pinned: the same on any Python
