"""Bad values are one line naming the key, the value and what is allowed; what describe counts is what training trains."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from transferlab.errors import TransferlabError
from transferlab.review.report import report
from transferlab.run import build
from transferlab.run.describe import describe

from conftest import ROOT, TINY, compose_config


def described(overrides: list[str]) -> str:
    """What src/describe.py prints for these overrides (its config's defaults are train.py's)."""
    return describe(build.compose(overrides, config_name="describe"))


BAD_VALUES = [
    (["optimizer.lr=-1"], "optimizer.lr=-1: expected a number > 0"),
    (["data.image_size=0"], "data.image_size=0: expected an integer ≥ 1 (or null)"),
    (["data.batch_size=0"], "data.batch_size=0: expected an integer ≥ 1"),
    (["data.batch_size=abc"], "data.batch_size='abc': expected an integer ≥ 1"),
    (["strategy=gradual", "strategy.decay=1.5"], "strategy.decay=1.5: expected a number > 0 and ≤ 1"),
    (["strategy=discriminative", "strategy.decay=0"], "strategy.decay=0: expected a number > 0 and ≤ 1"),
    (["strategy=top_blocks", "strategy.n=abc"], "strategy.n='abc': expected an integer ≥ 1"),
    (
        ["strategy=top_blocks", "+strategy.m=2"],
        "strategy.m: TopBlocks takes no option 'm'; it takes n, reinit, backbone_lr_scale",
    ),
    (["head.dropout=1"], "head.dropout=1: expected a number ≥ 0 and < 1"),
    (["feature_cache.views=0"], "feature_cache.views=0: expected an integer ≥ 1"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0: train at least one epoch"),
    # Lightning's "no limit" with a schedule spread over the run: the rate would swing to 0 every other epoch.
    (["trainer.max_epochs=-1"], "trainer.max_epochs=-1: the CosineAnnealingLR schedule spreads over the run's epochs"),
    (["trainer.max_epochs=-1", "scheduler=warmup_cosine"], "trainer.max_epochs=-1: the WarmupCosine schedule"),
    (
        ["trainer.max_epochs=-1", "strategy=fastai_fine_tune", "scheduler=none"],
        "trainer.max_epochs=-1: strategy=fastai_fine_tune counts epochs as fastai's fine_tune(N) does",
    ),
    (["strategy=fastai_fine_tune", "strategy.epochs=null"], "strategy.epochs=null: expected an integer ≥ 1"),
    (["strategy=fastai_fine_tune", "strategy.epochs=-1"], "strategy.epochs=-1: expected an integer ≥ 1"),
    (["optimizer=sgd", "optimizer.momentum=2"], "optimizer.momentum=2: expected a number ≥ 0 and ≤ 1"),
    # Checked by torch itself, on a stand-in parameter, before anything is built:
    (
        ["optimizer=adamw", "+optimizer.betas=[2,0.9]"],
        "optimizer (torch.optim.AdamW): Invalid beta parameter at index 0: 2",
    ),
    # Checked against the class's signature:
    (["scheduler=step", "scheduler.step_size=soon"], "scheduler.step_size='soon': expected an integer"),
    (["data.augment.hflip=2"], "data.augment.hflip=2: expected a number ≥ 0 and ≤ 1"),
    (["data.subset.train=0"], "data.subset.train=0: expected an integer ≥ 1 (or null)"),
    (["foo=1"], "foo: no such key; the config has seed, verbose, head,"),
    # A mistyped key or option: the nearest valid names, never Hydra's advice to add it with `+`.
    (["optimizer.lrr=0.1"], "optimizer.lrr: no such key (did you mean optimizer.lr?); optimizer has optimizer.lr,"),
    (["data.batchsize=8"], "data.batchsize: no such key (did you mean data.batch_size?); data has data.image_size,"),
    (["data.augment.hflp=1"], "data.augment.hflp: no such key (did you mean data.augment.hflip?)"),
    (
        ["strategy=head_onyl"],
        "strategy=head_onyl: no such option (did you mean strategy=head_only?); strategy is one of",
    ),
    (["+optimizer.lrr=0.1"], "optimizer.lrr: AdamW takes no option 'lrr' (did you mean optimizer.lr?); it takes lr,"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_VALUES, ids=[" ".join(o) for o, _ in BAD_VALUES])
def test_a_bad_value_is_one_line_naming_the_key_the_value_and_what_is_allowed(overrides, message):
    with pytest.raises(TransferlabError) as raised:
        described(["model.pretrained=false", *overrides])
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def trainable_line(overrides: list[str]) -> str:
    return described(["model=inception_v3", "model.pretrained=false", *overrides]).splitlines()[-1]


def test_describe_counts_the_parameters_training_trains():
    # head_only trains no auxiliary classifier: 2048 × 2 + 2 head parameters, nothing else (was 5,636: aux counted).
    assert trainable_line(["strategy=head_only"]).endswith(": 4,098 trainable, 21,785,568 frozen")
    # full_finetune trains Inception's auxiliary head too (768 × 2 + 2 more).
    full = trainable_line(["strategy=full_finetune"])
    assert full.startswith("total 24,348,900 parameters: 24,348,900 trainable")


def test_describe_and_training_build_the_same_trainable_parameters(colour_folder, tmp_path):
    cfg = compose_config(
        [
            *TINY,
            f"data.root={colour_folder}",
            "model=resnet18",
            "model.pretrained=false",
            "strategy=top_blocks",
            "trainer.max_epochs=1",
        ],
        tmp_path,
    )
    run = build.experiment(cfg)
    run.policy.freeze_before_training(run.module)
    trained = sum(p.numel() for p in run.module.backbone.parameters() if p.requires_grad)
    shown = described(["model=resnet18", "model.pretrained=false", "strategy=top_blocks"])
    blocks = [line.split() for line in shown.splitlines() if line[:1].isdigit()]
    assert sum(int(row[-1].replace(",", "")) for row in blocks) == trained > 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["strategy=top_blocks", "data.image_size=96"],
            "data.image_size=96 is below the 299 px inception_v3 needs with its auxiliary classifier (model.aux_weight=0.4",
        ),
        (["strategy=head_only", "data.image_size=64"], "data.image_size=64 is below the 75 px inception_v3 needs: set"),
    ],
)
def test_an_input_below_the_models_minimum_is_one_line_naming_data_image_size(
    overrides, message, colour_folder, tmp_path
):
    cfg = compose_config(
        [*TINY, f"data.root={colour_folder}", "model=inception_v3", "model.pretrained=false", *overrides], tmp_path
    )
    with pytest.raises(TransferlabError, match=message.replace("(", r"\(")):
        build.experiment(cfg)


def test_inception_head_only_runs_at_96_px_where_its_auxiliary_head_is_off(colour_folder, tmp_path):
    cfg = compose_config(
        [
            *TINY,
            f"data.root={colour_folder}",
            "model=inception_v3",
            "model.pretrained=false",
            "strategy=head_only",
            "data.image_size=96",
        ],
        tmp_path,
    )
    run = build.experiment(cfg)
    assert run.spec["aux_weight"] == 0.0 and run.module.aux_head is None and run.backbone.min_input_size == 75


def script(name: str, *arguments: str, env: dict, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "src" / f"{name}.py"), *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


@pytest.mark.parametrize(
    ("name", "arguments", "message"),
    [
        ("train", ["optimizer.lr=-1", "trainer.max_epochs=1"], "optimizer.lr=-1: expected a number > 0"),
        ("describe", ["data.batch_size=0"], "data.batch_size=0: expected an integer ≥ 1"),
        ("describe", ["modle=vgg16"], "modle: no such key (did you mean model?); the config has"),
        ("train", ["strategy=head_onyl"], "strategy=head_onyl: no such option (did you mean strategy=head_only?)"),
        ("train", ["data.batchsize=8"], "data.batchsize: no such key (did you mean data.batch_size?)"),
        ("predict", ["ckpt=best.ckpt", "inputs=x.jpg", "top_k=abc"], "top_k='abc': expected an integer ≥ 1"),
        ("predict", ["ckpt=best.ckpt", "inputs=x.jpg", "top_k=0"], "top_k=0: expected an integer ≥ 1"),
        ("predict", ["inputs=x.jpg"], "missing ckpt= (python src/predict.py --help)"),
        ("predict", ["ckpt=best.ckpt", "inputs=x.jpg", "topk=3"], "topk: no such key (did you mean top_k?)"),
        ("predict", ["ckpt=nowhere.ckpt", "inputs=x.jpg"], "ckpt=nowhere.ckpt: no such checkpoint file"),
        ("export", ["ckpt=best.ckpt", "formt=onnx"], "formt: no such key (did you mean format?)"),
        ("export", ["ckpt=best.ckpt", "format=gif"], "format=gif: choose onnx or torchscript"),
        ("export", ["ckpt=best.ckpt"], "missing format= (python src/export.py --help)"),
        (
            "cache",
            ["clear=everything"],
            "clear=everything: use clear=true or one of feature_cache, decoded_cache, scan_cache",
        ),
        ("report", ["runs=nowhere"], "no run directories (with .hydra/config.yaml) under nowhere"),
        ("report", [], "missing runs= (python src/report.py --help)"),
    ],
)
def test_every_script_reports_a_bad_value_in_one_line_and_exits_1(name, arguments, message, offline_env, tmp_path):
    extra = [f"hydra.run.dir={tmp_path}"] if name == "train" else []
    where = tmp_path / "cwd"
    where.mkdir()
    result = script(name, *arguments, *extra, env=offline_env, cwd=where)
    assert result.returncode == 1 and message in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    if name != "train":  # the apps that do not train: the message alone, and no run directory or log file
        assert (result.stdout + result.stderr).strip() == result.stderr.strip() and "\n" not in result.stderr.strip()
        assert not list(where.iterdir())


def test_the_report_lists_a_run_whose_files_are_corrupt_as_unreadable(tmp_path):
    for name, metrics in (
        ("good", json.dumps({"status": "completed", "test/acc": 0.9, "model": "m", "data": "d", "strategy": "s"})),
        ("cut", '{"status": "compl'),
    ):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "config.yaml").write_text("model:\n  name: m\n")
        (tmp_path / name / "metrics.json").write_text(metrics)
    text = report(tmp_path).read_text()
    assert "1 completed, 1 unreadable." in text
    assert "| unreadable | ? | ? | ? | metrics.json: Unterminated string" in text
