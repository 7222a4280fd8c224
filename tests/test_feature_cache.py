"""Frozen-backbone runs compute features once: same results as the uncached path, reused across runs."""

from __future__ import annotations

import logging

import pytest
import torch

from transferlab.caches import features as feature_cache
from transferlab.caches.features import features_pay_off
from transferlab.models.backbones import create_backbone
from transferlab.run.pipeline import train

from conftest import TINY, compose_config


def head_weights(metrics: dict) -> dict[str, torch.Tensor]:
    state = torch.load(metrics["best_checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("head.")}


@pytest.mark.parametrize("augment", [False, True])
def test_cached_features_train_the_same_head_as_images(augment, colour_folder, tmp_path):
    # With augmentation, 2 views for 2 epochs: epoch e sees exactly the images the uncached run sees.
    base = [
        *TINY,
        f"data.root={colour_folder}",
        "data.image_size=64",
        "optimizer.lr=0.03",
        f"data.augment.enabled={str(augment).lower()}",
        "feature_cache.views=2",
        "feature_cache.dir=null",
    ]
    cached = train(compose_config([*base, "feature_cache.enabled=true"], tmp_path / "cached"))
    uncached = train(compose_config([*base, "feature_cache.enabled=false"], tmp_path / "uncached"))
    assert cached["feature_cache"] is True and uncached["feature_cache"] is False
    for key in ("test/acc", "val/acc_best"):
        assert cached[key] == pytest.approx(uncached[key], abs=1e-6), key
    assert cached["test/loss"] == pytest.approx(uncached["test/loss"], abs=1e-4)
    for (name, a), b in zip(head_weights(cached).items(), head_weights(uncached).values()):
        assert torch.allclose(a, b, atol=1e-4), name


def test_the_next_run_of_a_sweep_reuses_the_features_on_disk(colour_folder, tmp_path, monkeypatch):
    passes = []
    original = feature_cache.frozen_features
    monkeypatch.setattr(feature_cache, "frozen_features", lambda *a, **k: passes.append(1) or original(*a, **k))
    base = [
        *TINY,
        f"data.root={colour_folder}",
        "data.image_size=64",
        f"feature_cache.dir={tmp_path / 'cache'}",
        "feature_cache.views=2",
    ]
    train(compose_config([*base, "optimizer.lr=0.01"], tmp_path / "a"))
    assert len(passes) == 2 + 1 + 1, "two training views, val, test"
    train(compose_config([*base, "optimizer.lr=0.03"], tmp_path / "b"))  # another head, same features
    assert len(passes) == 4, "nothing recomputed"
    train(compose_config([*base, "data.augment.enabled=false"], tmp_path / "c"))
    assert len(passes) == 5, "another training view: only the training features are computed again"


def test_two_phase_trains_the_head_on_features_then_the_whole_model_on_images(colour_folder, tmp_path, monkeypatch):
    """Phase 1 (frozen backbone) on cached features, phase 2 on images: the same run as uncached."""
    passes = []
    original = feature_cache.frozen_features
    monkeypatch.setattr(feature_cache, "frozen_features", lambda *a, **k: passes.append(1) or original(*a, **k))
    base = [
        *TINY,
        f"data.root={colour_folder}",
        "data.image_size=64",
        "optimizer.lr=0.03",
        "data.augment.enabled=false",
        "strategy=two_phase",
        "strategy.head_epochs=2",
        "trainer.max_epochs=3",
        "feature_cache.dir=null",
    ]
    cached = train(compose_config([*base, "feature_cache.enabled=true"], tmp_path / "cached"))
    assert len(passes) == 2, "one training view (no augmentation) and val; test runs on images after fine-tuning"
    uncached = train(compose_config([*base, "feature_cache.enabled=false"], tmp_path / "uncached"))
    assert len(passes) == 2
    assert cached["feature_cache"] is True and uncached["feature_cache"] is False
    assert cached["model/params/trainable"] == uncached["model/params/trainable"] > 100_000, (
        "phase 2 trains the backbone"
    )
    for key in ("test/acc", "val/acc_best"):
        assert cached[key] == pytest.approx(uncached[key], abs=1e-6), key
    assert cached["test/loss"] == pytest.approx(uncached["test/loss"], abs=1e-3)


def test_only_whole_frozen_epochs_use_cached_features():
    from transferlab.strategies.policies import FullFinetune, Gradual, HeadOnly, TopBlocks, TwoPhase

    assert HeadOnly().frozen_backbone_epochs is None  # the whole run
    assert TwoPhase(head_epochs=3).frozen_backbone_epochs == 3
    assert Gradual(every=2).frozen_backbone_epochs == 2
    assert FullFinetune().frozen_backbone_epochs == 0 and TopBlocks(n=1).frozen_backbone_epochs == 0
    # Worth it only when the frozen epochs outnumber the views the cache must compute.
    assert features_pay_off(None, 2) and features_pay_off(3, 2) and features_pay_off(2, 1)
    assert not features_pay_off(2, 2) and not features_pay_off(0, 1)


def test_auto_decides_before_training_so_that_its_head_only_uses_the_cache(colour_folder, tmp_path, caplog):
    overrides = [*TINY, f"data.root={colour_folder}", "data.image_size=64", "strategy=auto", "feature_cache.dir=null"]
    with caplog.at_level(logging.INFO, logger="transferlab"):
        metrics = train(compose_config(overrides, tmp_path))
    # head_only's recipe, but TINY's trainer.max_epochs=2 from the command line
    assert (
        "chose head_only and trains with its recipe: {'optimizer.lr': 0.01, 'callbacks.early_stopping.patience': 10}"
        in caplog.text
    )
    assert metrics["auto/choice"] == "head_only" and metrics["feature_cache"] is True
    assert metrics["model/params/trainable"] == 1280 * 3 + 3  # efficientnet_lite0's features → 3 classes
    assert metrics["test/acc"] > 0.8


def test_auto_builds_its_backbone_once_and_trains_as_its_choice_alone_would(colour_folder, tmp_path, monkeypatch):
    """The probe's backbone and datamodule are the run's (one build), and the probe draws nothing the run
    would: the same command line with strategy=head_only (auto's choice here) ends with the same loss."""
    from transferlab.run import build

    builds = []
    monkeypatch.setattr(build, "create_backbone", lambda **spec: builds.append(spec) or create_backbone(**spec))
    shared = [*TINY, f"data.root={colour_folder}", "data.image_size=64", "feature_cache.dir=null", "optimizer.lr=0.01"]
    shared += ["callbacks.early_stopping.patience=10"]  # head_only's recipe, so that the two runs are one recipe
    auto = train(compose_config([*shared, "strategy=auto"], tmp_path / "auto"))
    assert auto["auto/choice"] == "head_only" and len(builds) == 1
    alone = train(compose_config([*shared, "strategy=head_only"], tmp_path / "alone"))
    assert len(builds) == 2
    assert (auto["test/loss"], auto["test/acc"], auto["val/acc_best"]) == (
        alone["test/loss"], alone["test/acc"], alone["val/acc_best"]
    )  # fmt: skip


def frozen_small_cnn(colour_folder, **options):
    """A backbone and a datamodule as `split_features` sees them, without a training run."""
    from types import SimpleNamespace

    from transferlab.data import ImageFolderDataModule
    from transferlab.models.backbones import create_backbone
    from transferlab.models.data_config import DataConfig

    torch.manual_seed(0)
    backbone = create_backbone("small_cnn", pretrained=False)
    data = ImageFolderDataModule(
        root=str(colour_folder), data_config=DataConfig(input_size=32), num_workers=0, **options
    )
    data.setup()
    return SimpleNamespace(backbone=backbone, features=backbone, device=torch.device("cpu")), data


def test_the_key_changes_with_the_decode_cache_and_the_library_versions(colour_folder, monkeypatch):
    import PIL
    import timm
    import torchvision

    module, data = frozen_small_cnn(colour_folder)
    key = feature_cache.cache_key(module, data, "train", augment=True, views=2)
    assert feature_cache.cache_key(module, data, "train", augment=True, views=2) == key
    data.decode_cache = "memory"  # decoded images get another transform: other augmentation draws
    decoded = feature_cache.cache_key(module, data, "train", augment=True, views=2)
    assert decoded != key
    data.decode_cache = "disk"  # the same pixels as in memory: the same features
    assert feature_cache.cache_key(module, data, "train", augment=True, views=2) == decoded
    data.decode_cache = None
    for library in (torch, torchvision, timm, PIL):
        with monkeypatch.context() as patched:
            patched.setattr(library, "__version__", "0.0.1-upgraded")
            assert feature_cache.cache_key(module, data, "train", augment=True, views=2) != key, library.__name__
    assert feature_cache.cache_key(module, data, "train", augment=True, views=2) == key


def test_a_damaged_feature_file_is_reported_and_computed_again(colour_folder, tmp_path, monkeypatch, caplog):
    module, data = frozen_small_cnn(colour_folder)
    passes = []
    original = feature_cache.frozen_features
    monkeypatch.setattr(feature_cache, "frozen_features", lambda *a, **k: passes.append(1) or original(*a, **k))
    features = feature_cache.split_features(module, data, "val", augment=False, views=1, directory=tmp_path)
    [saved] = tmp_path.glob("val-*.pt")
    good = saved.read_bytes()
    for damage in (good[: len(good) // 2], b"", b"not a tensor file"):
        saved.write_bytes(damage)
        caplog.clear()
        again = feature_cache.split_features(module, data, "val", augment=False, views=1, directory=tmp_path)
        assert torch.equal(again, features)
        assert f"feature cache {saved} is unreadable" in caplog.text and "computing the features again" in caplog.text
    assert len(passes) == 4, "computed once, then once per damaged file"
    assert torch.equal(torch.load(saved, weights_only=True), features) and not list(tmp_path.glob("*.partial"))


def test_a_feature_file_that_cannot_be_written_costs_the_cache_not_the_run(
    colour_folder, tmp_path, monkeypatch, caplog
):
    module, data = frozen_small_cnn(colour_folder)

    def full_disk(obj, path, *args, **kwargs):
        open(path, "wb").close()  # as a save that ran out of space: a file was begun
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    features = feature_cache.split_features(module, data, "val", augment=False, views=1, directory=tmp_path)
    assert features.shape == (1, 18, module.backbone.num_features)
    assert "feature cache: could not write" in caplog.text and "No space left on device" in caplog.text
    assert not [p for p in tmp_path.iterdir() if not p.name.endswith(".lock")], "no partial file, no cache file"
