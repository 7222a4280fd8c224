"""Freeze policies: exact trainable counts, BatchNorm statistics, param groups, phase changes, resume."""

from __future__ import annotations

import logging
import shutil

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from PIL import Image
from torch import nn

from transferlab.callbacks.seeding import SeedEachBatch
from transferlab.classifier.module import ImageClassifier, count_parameters
from transferlab.data import ImageFolderDataModule
from transferlab.errors import TransferlabError
from transferlab.models.backbones import create_backbone
from transferlab.run.pipeline import train
from transferlab.strategies import auto
from transferlab.strategies import probe as transferability
from transferlab.strategies.auto import Auto, Decision
from transferlab.strategies.policies import FullFinetune, HeadOnly, Scratch, TopBlocks, TwoPhase
from transferlab.strategies.probe import probe_sample

from conftest import TINY, compose_config

LR = 0.05
SGD = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": LR, "momentum": 0.9}
COSINE = {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "_partial_": True, "T_max": 3}


def build(colour_folder, name: str = "efficientnet_lite0", scheduler: dict | None = None, policy=None):
    # The packaged lite0 weights: real pretrained BatchNorm statistics, offline.
    backbone = create_backbone(name, pretrained=name != "small_cnn")
    datamodule = ImageFolderDataModule(
        root=str(colour_folder), data_config=backbone.data_config, image_size=32, batch_size=16, num_workers=0, seed=0
    )
    datamodule.setup()
    spec = {"name": name, "pretrained": True, "weights": None}
    groups = policy.param_groups if policy is not None else None  # the policy's learning rates per block
    module = ImageClassifier(
        spec, num_classes=3, optimizer=SGD, scheduler=scheduler, backbone=backbone, param_groups=groups
    )
    return module, datamodule


def make_trainer(policy, epochs: int, *callbacks: Callback, **kwargs) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs,
        callbacks=[policy, SeedEachBatch(0), *callbacks],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=bool(kwargs.pop("checkpointing", False)),
        **kwargs,
    )


def batchnorms(module: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def running_stats(modules: list[nn.Module]) -> list[torch.Tensor]:
    return [bn.running_mean.clone() for m in modules for bn in batchnorms(m)]


class RecordTraining(Callback):
    """Per epoch: trainable parameter count, optimizer group lrs, and whether any watched BN was in train mode."""

    def __init__(self, watched=lambda module: module.backbone) -> None:
        self.watched = watched
        self.trainable, self.lrs, self.bn_training = {}, {}, {}

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        epoch = trainer.current_epoch
        self.trainable[epoch] = count_parameters(pl_module)[0]
        self.lrs[epoch] = [g["lr"] for g in trainer.optimizers[0].param_groups]
        in_train = any(bn.training for bn in batchnorms(self.watched(pl_module)))
        self.bn_training[epoch] = self.bn_training.get(epoch, False) or in_train


def head_size(module: ImageClassifier) -> int:
    return sum(p.numel() for p in module.head.parameters())


def test_head_only_trains_the_head_and_keeps_pretrained_bn_statistics(colour_folder):
    module, datamodule = build(colour_folder)
    before = running_stats([module.backbone])
    backbone_weights = [p.clone() for p in module.backbone.parameters()]
    record = RecordTraining()
    make_trainer(HeadOnly(), 2, record).fit(module, datamodule)

    assert record.trainable == {0: head_size(module), 1: head_size(module)}
    assert record.bn_training == {0: False, 1: False}, "frozen BN stays in eval mode, also after validation"
    assert all(torch.equal(a, b) for a, b in zip(before, running_stats([module.backbone])))
    assert all(torch.equal(a, b) for a, b in zip(backbone_weights, module.backbone.parameters()))
    assert len(record.lrs[0]) == 1, "the optimizer only sees the head"


def test_full_finetune_trains_everything_with_a_smaller_backbone_lr(colour_folder):
    policy = FullFinetune(backbone_lr_scale=0.1)
    module, datamodule = build(colour_folder, policy=policy)
    record = RecordTraining()
    make_trainer(policy, 1, record).fit(module, datamodule)
    assert record.trainable[0] == count_parameters(module)[1]
    head_lr, *block_lrs = record.lrs[0]
    assert head_lr == pytest.approx(LR)
    assert len(block_lrs) == len(module.backbone.blocks)
    assert block_lrs == pytest.approx([LR * 0.1] * len(block_lrs))
    assert record.bn_training[0] is True


def test_top_blocks_trains_exactly_the_last_n_blocks(colour_folder):
    module, datamodule = build(colour_folder)
    blocks = module.backbone.blocks
    frozen_before = running_stats(blocks[:-2])
    top_before = running_stats(blocks[-2:])
    record = RecordTraining(watched=lambda m: nn.ModuleList(m.backbone.blocks[:-2]))
    make_trainer(TopBlocks(n=2), 1, record).fit(module, datamodule)

    expected = head_size(module) + sum(p.numel() for b in blocks[-2:] for p in b.parameters())
    assert record.trainable[0] == expected
    assert record.bn_training[0] is False
    assert all(torch.equal(a, b) for a, b in zip(frozen_before, running_stats(blocks[:-2])))
    assert not all(torch.equal(a, b) for a, b in zip(top_before, running_stats(blocks[-2:]))), "top BN adapts"


def test_top_blocks_reinit_replaces_the_pretrained_weights(colour_folder):
    module, _ = build(colour_folder)
    top_conv = module.backbone.features.conv_head.weight
    lower_conv = module.backbone.features.conv_stem.weight
    top_before, lower_before = top_conv.clone(), lower_conv.clone()
    TopBlocks(n=1, reinit=True).freeze_before_training(module)
    assert not torch.equal(top_before, top_conv)
    assert torch.equal(lower_before, lower_conv)


def test_top_blocks_with_too_many_blocks_is_a_clear_error(colour_folder):
    module, _ = build(colour_folder, name="small_cnn")
    with pytest.raises(TransferlabError, match=r"strategy.n=9, but small_cnn has only 4 blocks"):
        TopBlocks(n=9).freeze_before_training(module)


def test_two_phase_adds_the_backbone_mid_run_and_the_scheduler_follows(colour_folder):
    module, datamodule = build(colour_folder, scheduler=COSINE)
    before = running_stats([module.backbone])
    record = RecordTraining()
    make_trainer(TwoPhase(head_epochs=1, unfreeze_lr_scale=0.1), 3, record).fit(module, datamodule)

    total = count_parameters(module)[1]
    assert record.trainable == {0: head_size(module), 1: total, 2: total}
    assert len(record.lrs[0]) == 1 and len(record.lrs[1]) == 2
    cosine = lambda epoch, lr: lr * (1 + torch.cos(torch.tensor(torch.pi * epoch / 3)).item()) / 2  # noqa: E731
    # Epoch 1: the backbone joins at lr × 0.1 and from then on follows the same cosine curve.
    assert record.lrs[1] == pytest.approx([cosine(1, LR), LR * 0.1])
    head_decay = record.lrs[2][0] / record.lrs[1][0]
    assert record.lrs[2][0] == pytest.approx(cosine(2, LR))
    assert record.lrs[2][1] == pytest.approx(record.lrs[1][1] * head_decay) and head_decay < 1
    assert record.bn_training == {0: False, 1: False, 2: False}, "BN stays in inference mode in both phases"
    assert all(torch.equal(a, b) for a, b in zip(before, running_stats([module.backbone])))


def test_two_phase_resumed_after_the_phase_change_matches_an_uninterrupted_run(colour_folder, tmp_path):
    every_epoch = ModelCheckpoint(dirpath=tmp_path, filename="e{epoch}", save_top_k=-1, auto_insert_metric_name=False)
    module, datamodule = build(colour_folder, scheduler=COSINE)
    make_trainer(TwoPhase(head_epochs=1), 3, every_epoch, checkpointing=True).fit(module, datamodule)

    resumed, datamodule = build(colour_folder, scheduler=COSINE)
    record = RecordTraining()
    trainer = make_trainer(TwoPhase(head_epochs=1), 3, record, checkpointing=True, default_root_dir=tmp_path / "b")
    trainer.fit(resumed, datamodule, ckpt_path=tmp_path / "e1.ckpt")

    assert list(record.trainable) == [2], "only the last epoch ran"
    assert record.trainable[2] == count_parameters(resumed)[1], "nothing is re-frozen after the resume"
    assert len(trainer.optimizers[0].param_groups) == 2
    for (name, expected), actual in zip(module.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(expected, actual, atol=1e-6), name


def test_scratch_trains_everything_and_needs_no_pretrained_weights(colour_folder):
    assert Scratch.uses_pretrained_weights is False and HeadOnly.uses_pretrained_weights is True
    module, _ = build(colour_folder, name="small_cnn")
    Scratch().freeze_before_training(module)
    assert count_parameters(module)[0] == count_parameters(module)[1]


def class_ordered_folder(root, classes: int, per_class: int) -> None:
    """root/{train,val,test}/c00…/*.png: class k's images share a colour, stored class after class
    (as cats_vs_dogs' Cat/ then Dog/), so the first images of the train split are all one class."""
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, (classes, 3))
    for split, count in (("train", per_class), ("val", 2), ("test", 2)):
        for label, colour in enumerate(colours):
            (root / split / f"c{label:02d}").mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(colour + rng.integers(-40, 40, (16, 16, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / f"c{label:02d}" / f"{i:02d}.png")


def probe(root, max_images: int, seed: int, monkeypatch) -> tuple[Decision, torch.Tensor, torch.Tensor]:
    """Auto's decision on `root` (small_cnn, 32 px) and the (features, labels) its linear probe saw."""
    torch.manual_seed(0)  # the same random backbone every time: only the sample may differ
    backbone = create_backbone("small_cnn", pretrained=False)
    datamodule = ImageFolderDataModule(
        root=str(root), data_config=backbone.data_config, image_size=32, batch_size=16, num_workers=0, seed=seed
    )
    datamodule.setup()
    seen = []
    score = transferability.linear_probe_score
    monkeypatch.setattr(auto, "linear_probe_score", lambda f, y, **k: seen.append((f, y)) or score(f, y, **k))
    decision = Auto(many_per_class=100, max_images=max_images).decide(backbone.eval(), datamodule, len(backbone.blocks))
    return decision, torch.as_tensor(seen[0][0]), torch.as_tensor(seen[0][1])


def test_the_probe_sample_is_stratified_proportional_and_seeded():
    labels = np.repeat(np.arange(12), [40] * 10 + [3, 237])  # class-ordered, one small and one large class
    indices = probe_sample(labels, max_images=128, seed=0)
    per_class = np.bincount(labels[indices])
    # 128 of 640 is 1 in 5: 8 of each 40, 47 of 237 (47.4), and all of a class smaller than 5.
    assert list(per_class) == [8] * 10 + [3, 47], "in proportion, every class"
    assert len(set(indices)) == len(indices) and list(indices) == sorted(indices)
    assert np.array_equal(probe_sample(labels, 128, seed=0), indices)
    assert not np.array_equal(probe_sample(labels, 128, seed=1), indices)
    # 24 of 640 would be 1.5 of each 40: at least 5 of every class win over max_images.
    assert list(np.bincount(labels[probe_sample(labels, 24, seed=0)])) == [5] * 10 + [3, 9]
    assert np.array_equal(probe_sample(labels, 10_000, seed=0), np.arange(len(labels))), "a small split: all of it"


def test_auto_probes_both_classes_of_a_class_ordered_folder(tmp_path, monkeypatch):
    # The first 10 training images are all c00: the old probe (first max_images) had one class.
    class_ordered_folder(tmp_path, classes=2, per_class=20)
    policy, _, labels = probe(tmp_path, max_images=10, seed=0, monkeypatch=monkeypatch)
    assert torch.bincount(labels).tolist() == [5, 5]
    assert policy.report["auto/probe_images"] == 10 and policy.report["auto/probe_min_per_class"] == 5
    assert policy.report["auto/choice"] in ("head_only", "top_blocks")


def test_auto_probes_every_one_of_many_classes_and_decides_the_same_for_a_seed(tmp_path, monkeypatch, caplog):
    class_ordered_folder(tmp_path, classes=12, per_class=10)
    caplog.set_level(logging.INFO, logger="transferlab.strategies")
    policy, features, labels = probe(tmp_path, max_images=60, seed=3, monkeypatch=monkeypatch)
    assert torch.bincount(labels).tolist() == [5] * 12, "every class, not the first six"
    assert "linear probe on 60 of 120 training images (seed 3; per class: 5–5 in each of 12 classes)" in caplog.text

    again, same_features, same_labels = probe(tmp_path, max_images=60, seed=3, monkeypatch=monkeypatch)
    assert torch.equal(same_features, features) and torch.equal(same_labels, labels)
    assert again.report == policy.report
    _, other_features, _ = probe(tmp_path, max_images=60, seed=4, monkeypatch=monkeypatch)
    assert not torch.equal(other_features, features), "another seed, another sample"


def test_auto_with_a_class_of_one_image_or_no_probe_images_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(TransferlabError, match="strategy.max_images=0: choose how many"):
        Auto(max_images=0)
    class_ordered_folder(tmp_path, classes=2, per_class=6)
    for path in sorted((tmp_path / "train" / "c01").iterdir())[1:]:
        path.unlink()
    with pytest.raises(TransferlabError, match=r"strategy=auto: class 'c01' has 1 training image\(s\).*at least 2"):
        probe(tmp_path, max_images=10, seed=0, monkeypatch=monkeypatch)


def test_auto_runs_on_a_class_ordered_folder_without_test_through_the_configs(tmp_path):
    # cats_vs_dogs' crash: the class-ordered train split is longer than max_images.
    class_ordered_folder(tmp_path / "data", classes=2, per_class=20)
    shutil.rmtree(tmp_path / "data" / "test")
    overrides = [
        *TINY,
        f"data.root={tmp_path / 'data'}",
        "strategy=auto",
        "strategy.max_images=12",
        "trainer.max_epochs=1",
    ]
    metrics = train(compose_config(overrides, tmp_path / "run"))
    assert metrics["auto/probe_images"] == 12 and metrics["auto/probe_min_per_class"] == 6
    assert metrics["auto/images_per_class"] == 16, "20 in train/, 4 of each held out for validation"
    assert metrics["auto/choice"] in ("head_only", "top_blocks")
