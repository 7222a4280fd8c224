"""Datamodules: splits, class checks, transforms from the weights, reproducible augmentation."""

from __future__ import annotations

import logging
import shutil
from collections import Counter

import pytest
import torch

from transferlab.data import DigitsDataModule, ImageFolderDataModule
from transferlab.data.base import EpochSampler
from transferlab.errors import TransferlabError
from transferlab.transforms import DataConfig

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
    assert "val/ (12 images) is the test split" in caplog.text and "5 images held out from train/" in caplog.text

    assert split(seed=5).splits["val"] == val, "same seed, same split"
    assert split(seed=6).splits["val"].images != val.images
    assert Counter(split(seed=5, val_fraction=0.5).splits["val"].labels) == {0: 3, 1: 5, 2: 5}


def test_a_bad_val_fraction_or_a_class_too_small_to_hold_out_from_is_a_clear_error(tmp_path):
    for fraction in (0, 1, 1.5, -0.1):
        with pytest.raises(TransferlabError, match=rf"data.val_fraction={fraction}: choose a fraction between 0 and 1"):
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
