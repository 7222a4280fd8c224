"""Every architecture of the notes, every recipe: exact counts, custom nets that learn, the decision table."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from PIL import Image

from transferlab.classifier.module import ImageClassifier, count_parameters
from transferlab.data import ImageFolderDataModule
from transferlab.models.backbones import create_backbone
from transferlab.run.build import compose, model_spec
from transferlab.run.pipeline import train
from transferlab.strategies.auto import Auto
from transferlab.strategies.policies import (
    Discriminative,
    FullFinetune,
    Gradual,
    HeadOnly,
    Scratch,
    TopBlocks,
    TwoPhase,
)

from conftest import CONF, TINY, compose_config
from test_freeze import SGD, RecordTraining, build, head_size, make_trainer

MODEL_CONFIGS = sorted(p.stem for p in (CONF / "model").glob("*.yaml") if p.stem not in ("timm", "torchvision"))


def spec_of(config_name: str) -> dict:
    """The backbone spec training builds from `model=<config_name>` without weights (a policy that trains it all)."""
    return model_spec(compose([f"model={config_name}", "model.pretrained=false"]), FullFinetune())


@pytest.mark.parametrize("config_name", MODEL_CONFIGS)
def test_every_model_builds_classifies_and_freezes_exactly(config_name):
    spec = spec_of(config_name)
    module = ImageClassifier(spec, num_classes=3, optimizer=SGD, backbone=create_backbone(**spec)).eval()
    blocks = module.backbone.blocks
    assert len(blocks) >= 4
    size = 80 if config_name in ("inception_v3", "googlenet") else 64
    with torch.no_grad():
        assert module(torch.randn(2, 3, size, size)).shape == (2, 3)

    total = count_parameters(module)[1]
    heads = (
        head_size(module) + sum(p.numel() for p in module.aux_head.parameters())
        if module.aux_head
        else head_size(module)
    )
    top_two = sum(p.numel() for block in blocks[-2:] for p in block.parameters())
    expected = {
        HeadOnly(): heads,
        TwoPhase(): heads,
        Gradual(): heads,
        TopBlocks(n=2): heads + top_two,
        FullFinetune(): total,
        Scratch(): total,
        Discriminative(): total,
    }
    for policy, trainable in expected.items():
        for p in module.parameters():
            p.requires_grad = True
        policy.freeze_before_training(module)
        assert count_parameters(module)[0] == trainable, type(policy).__name__


def test_inception_v3_trains_with_its_auxiliary_classifier():
    spec = spec_of("inception_v3")
    assert spec["aux_weight"] == 0.4
    module = ImageClassifier(spec, num_classes=3, optimizer=SGD, backbone=create_backbone(**spec)).train()
    logits, aux_logits = module._logits(torch.randn(2, 3, 299, 299))  # the aux branch needs its native size
    assert logits.shape == aux_logits.shape == (2, 3)
    assert create_backbone(**{**spec, "aux_weight": 0.0}).features.AuxLogits is None
    assert create_backbone(**spec).data_config.input_size == 299


def test_unknown_architecture_options_are_refused():
    with pytest.raises(Exception, match=r"takes no option \['layers'\]"):
        create_backbone("vgg_custom", pretrained=False, layers=[2, 2])


@pytest.mark.parametrize("size", [32, 48])
@pytest.mark.parametrize(
    "model", [["model=vgg_custom", "model.cfg=[16,M,32,M,32,64,M]"], ["model=resnet_custom", "model.layers=[1,1,1]"]]
)
def test_custom_networks_learn_at_any_input_size(model, size, colour_folder, tmp_path):
    overrides = [
        *TINY,
        f"data.root={colour_folder}",
        *model,
        "strategy=scratch",
        f"data.image_size={size}",
        "trainer.max_epochs=4",
        "optimizer.lr=0.01",
    ]
    metrics = train(compose_config(overrides, tmp_path))
    assert metrics["test/acc"] > 0.6, metrics  # chance: 1/3


def test_discriminative_learning_rates_decay_from_head_to_stem(colour_folder):
    policy = Discriminative(decay=0.5)
    module, _ = build(colour_folder, name="small_cnn", policy=policy)
    policy.freeze_before_training(module)
    lrs = [group["lr"] for group in module.configure_optimizers().param_groups]
    assert lrs == pytest.approx([SGD["lr"], SGD["lr"] / 16, SGD["lr"] / 8, SGD["lr"] / 4, SGD["lr"] / 2])


def test_gradual_unfreezes_one_block_per_epoch_and_survives_resume(colour_folder, tmp_path):
    every_epoch = ModelCheckpoint(dirpath=tmp_path, filename="e{epoch}", save_top_k=-1, auto_insert_metric_name=False)
    module, datamodule = build(colour_folder, name="small_cnn")
    blocks = module.backbone.blocks
    record = RecordTraining()
    make_trainer(Gradual(every=1, decay=0.5), 3, record, every_epoch, checkpointing=True).fit(module, datamodule)
    size = lambda depth: (
        head_size(module) + sum(p.numel() for b in blocks[len(blocks) - depth :] for p in b.parameters())
    )  # noqa: E731
    assert record.trainable == {0: size(0), 1: size(1), 2: size(2)}
    assert record.lrs[2][1:] == pytest.approx([SGD["lr"] * 0.5, SGD["lr"] * 0.25])

    resumed, datamodule = build(colour_folder, name="small_cnn")
    record = RecordTraining()
    make_trainer(Gradual(every=1, decay=0.5), 3, record, checkpointing=True, default_root_dir=tmp_path / "b").fit(
        resumed, datamodule, ckpt_path=tmp_path / "e1.ckpt"
    )
    assert record.trainable == {2: size(2)}
    for (name, expected), actual in zip(module.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(expected, actual, atol=1e-6), name


def auto_choice(root, many_per_class: int) -> dict:
    backbone = create_backbone("efficientnet_lite0", pretrained=True).eval()
    datamodule = ImageFolderDataModule(root=str(root), data_config=backbone.data_config, image_size=64, num_workers=0)
    datamodule.setup("fit")
    decision = Auto(many_per_class=many_per_class, similar=0.7).decide(backbone, datamodule, len(backbone.blocks))
    return decision.report


def test_auto_picks_head_only_for_few_images_close_to_the_pretraining(colour_folder):
    report = auto_choice(colour_folder, many_per_class=100)
    assert report["auto/images_per_class"] == 16 and report["auto/similarity"] > 0.9
    assert report["auto/choice"] == "head_only"


def test_auto_fine_tunes_everything_for_many_images_far_from_the_pretraining(tmp_path):
    # Labels the frozen ImageNet features cannot predict: noise images with random classes.
    rng = np.random.default_rng(0)
    for split, count in (("train", 60), ("val", 6), ("test", 6)):
        for i in range(3 * count):
            folder = tmp_path / split / ("abc"[rng.integers(3)] if split == "train" else "abc"[i % 3])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (40, 40, 3)).astype(np.uint8)).save(folder / f"{i}.jpg")
    report = auto_choice(tmp_path, many_per_class=40)
    assert report["auto/images_per_class"] == 60 and report["auto/similarity"] < 0.3
    assert report["auto/choice"] == "full_finetune"


def describe(*overrides: str, env: dict) -> str:
    import subprocess
    import sys

    from conftest import ROOT

    result = subprocess.run(
        [sys.executable, str(ROOT / "src" / "describe.py"), *overrides],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_describe_shows_input_size_normalisation_blocks_and_counts_offline(offline_env):
    text = describe("model=vgg16_bn", "model.pretrained=false", "strategy=top_blocks", env=offline_env)
    assert "224×224" in text and "mean (0.485, 0.456, 0.406)" in text
    backbone = create_backbone("vgg16_bn", pretrained=False)
    top_two = sum(p.numel() for b in backbone.blocks[-2:] for p in b.parameters())
    assert f"{top_two + 4096 * 2 + 2:,} trainable" in text
    rows = [line for line in text.splitlines() if line[:1].isdigit()]
    assert len(rows) == len(backbone.blocks) == 6


def test_describe_lists_every_model_with_its_source(offline_env):
    text = describe("+list=true", env=offline_env)
    for name, source in (
        ("efficientnet_lite0", "packaged"),
        ("resnet152", "torchvision"),
        ("vgg_custom", "built here"),
    ):
        assert any(line.startswith(name) and source in line for line in text.splitlines()), name
