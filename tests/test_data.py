"""Datamodules: splits, class checks, transforms from the weights, reproducible augmentation."""

from __future__ import annotations

import shutil
from collections import Counter

import pytest
import torch

from conftest import CLASSES, write_colour_images
from transferlab.backbones import DataConfig
from transferlab.data import DigitsDataModule, ImageFolderDataModule
from transferlab.data.base import EpochSampler
from transferlab.errors import TransferlabError

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


def test_image_folder_uses_val_as_test_when_there_is_no_test_folder(tmp_path, caplog):
    write_colour_images(tmp_path / "train", 3, 0)
    write_colour_images(tmp_path / "val", 2, 1)
    module = ImageFolderDataModule(root=str(tmp_path), data_config=CONFIG, num_workers=0)
    module.setup()
    assert module.class_names == list(sorted(CLASSES))
    assert module.splits["test"] == module.splits["val"]
    assert "val split doubles as the test split" in caplog.text


def test_image_folder_of_class_folders_is_split_here(tmp_path):
    write_colour_images(tmp_path, 10, 0)
    module = ImageFolderDataModule(root=str(tmp_path), data_config=CONFIG, split_fractions=[0.6, 0.2, 0.2], num_workers=0)
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
