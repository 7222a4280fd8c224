"""End to end through the Hydra configs: run artefacts, reload, reproducibility, resume, sweeps, errors."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from transferlab.classifier.module import ImageClassifier
from transferlab.run.pipeline import train

from conftest import ROOT, TINY, TINY_WITH_WORKERS, compose_config

TRAIN = [sys.executable, str(ROOT / "src" / "train.py")]


def run_train(overrides: list[str], env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*TRAIN, *overrides], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def trained_run(colour_folder, tmp_path_factory) -> tuple[Path, dict]:
    """head_only on the packaged EfficientNet-Lite0 weights, through the real configs."""
    output_dir = tmp_path_factory.mktemp("run")
    cfg = compose_config(
        [*TINY, f"data.root={colour_folder}", "trainer.max_epochs=3", "optimizer.lr=0.03", "data.image_size=64"],
        output_dir,
    )
    return output_dir, train(cfg)


def test_a_run_leaves_metrics_checkpoints_and_tensorboard_logs(trained_run):
    output_dir, metrics = trained_run
    saved = json.loads((output_dir / "metrics.json").read_text())
    assert saved == metrics
    for key in ("test/acc", "test/loss", "val/acc_best", "model/params/trainable", "model/params/total", "time/fit_s"):
        assert isinstance(saved[key], (int, float)), key
    assert (saved["model"], saved["data"], saved["strategy"], saved["seed"]) == (
        "efficientnet_lite0",
        "image_folder",
        "head_only",
        42,
    )
    assert saved["model/params/trainable"] == 1280 * 3 + 3, "head_only: only the Linear head trains"
    assert saved["test/acc"] > 0.8, "pretrained features separate the colour classes (chance is 1/3)"
    assert (output_dir / "checkpoints" / "best.ckpt").is_file() and (output_dir / "checkpoints" / "last.ckpt").is_file()

    events = EventAccumulator(str(output_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best", "test/acc"} <= scalars
    assert {"model/params/trainable", "model/params/frozen"} <= scalars
    assert any(tag.startswith("lr-") for tag in scalars)
    assert events.Scalars("model/params/trainable")[0].value == 1280 * 3 + 3
    assert "train/samples" in events.Tags()["images"]
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")


def test_a_checkpoint_reloads_alone_and_predicts_the_same(trained_run, colour_folder):
    output_dir, metrics = trained_run
    best = output_dir / "checkpoints" / "best.ckpt"
    reloaded = ImageClassifier.load_from_checkpoint(best, map_location="cpu").eval()
    assert reloaded.hparams.class_names == ["blue", "green", "red"]
    assert reloaded.hparams.model == {"name": "efficientnet_lite0", "pretrained": False, "weights": None}
    state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
    for name, tensor in reloaded.state_dict().items():
        assert torch.equal(tensor, state[name]), name


def test_an_earlier_runs_checkpoint_is_the_next_runs_pretrained_backbone(trained_run, colour_folder, tmp_path):
    output_dir, _ = trained_run
    best = output_dir / "checkpoints" / "best.ckpt"
    cfg = compose_config(
        [*TINY, f"data.root={colour_folder}", f"model.weights={best}", "trainer.max_epochs=1"], tmp_path
    )
    metrics = train(cfg)
    previous = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
    now = torch.load(metrics["best_checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    backbone_keys = [k for k in previous if k.startswith("backbone.")]
    assert backbone_keys and all(torch.equal(previous[k], now[k]) for k in backbone_keys), "head_only kept them"


def test_same_seed_same_metrics(colour_folder, tmp_path):
    overrides = [*TINY, f"data.root={colour_folder}", "model=small_cnn", "strategy=scratch", "trainer.max_epochs=1"]
    first = train(compose_config(overrides, tmp_path / "a"))
    second = train(compose_config(overrides, tmp_path / "b"))
    for key in ("test/acc", "test/loss", "val/acc_best"):
        assert first[key] == second[key], key


def test_logger_none_trains_without_tensorboard_files(colour_folder, tmp_path):
    # LearningRateMonitor refuses a trainer without a logger: logger=none once crashed with its traceback.
    overrides = [*TINY, f"data.root={colour_folder}", "model=small_cnn", "strategy=scratch", "logger=none"]
    metrics = train(compose_config([*overrides, "trainer.max_epochs=1"], tmp_path))
    assert 0 <= metrics["test/acc"] <= 1 and (tmp_path / "checkpoints" / "best.ckpt").is_file()
    assert not list(tmp_path.rglob("events.out.tfevents*"))


def test_small_models_learn_above_chance_from_scratch(colour_folder, tmp_path):
    overrides = [*TINY, f"data.root={colour_folder}", "model=small_cnn", "strategy=scratch", "trainer.max_epochs=4"]
    metrics = train(compose_config(overrides, tmp_path))
    assert metrics["test/acc"] > 0.6, metrics


def test_missing_weights_offline_exit_with_one_clear_message(offline_env, tmp_path):
    result = run_train(["model=resnet18", "strategy=head_only", f"paths.log_dir={tmp_path}"], offline_env)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "resnet18-f37072fd.pth" in output
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in output
    assert str(Path(offline_env["TORCH_HOME"]) / "hub" / "checkpoints") in output
    assert "Traceback" not in output


def test_unknown_model_exits_listing_the_valid_names(offline_env, tmp_path):
    result = run_train(["model=small_cnn", "model.name=resnet19", f"paths.log_dir={tmp_path}"], offline_env)
    assert result.returncode != 0
    assert "Unknown model 'resnet19'. Valid names:" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_metrics(colour_folder, offline_env, tmp_path):
    overrides = [
        *TINY,
        f"data.root={colour_folder}",
        "model=small_cnn",
        "strategy=scratch",
        "data.image_size=48",
        "trainer.max_epochs=4",
    ]
    reference = run_train([*overrides, f"hydra.run.dir={tmp_path / 'reference'}"], offline_env)
    assert reference.returncode == 0, reference.stderr[-3000:]

    run_dir = tmp_path / "killed"
    process = subprocess.Popen(
        [*TRAIN, *overrides, f"hydra.run.dir={run_dir}"],
        env=offline_env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "killed mid-run"
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "running", "what a killed run leaves"
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] < 3

    resumed = run_train([f"resume={run_dir}"], offline_env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = json.loads((tmp_path / "reference" / "metrics.json").read_text())
    actual = json.loads((run_dir / "metrics.json").read_text())
    for key in ("test/acc", "test/loss", "val/acc_best", "epochs"):
        assert actual[key] == pytest.approx(expected[key], abs=1e-6), key


@pytest.mark.slow
def test_a_multirun_sweep_gives_each_run_its_own_directory(colour_folder, offline_env, tmp_path):
    result = run_train(
        [
            "-m",
            "model=small_cnn,efficientnet_lite0",
            "strategy=scratch,head_only",
            *TINY,
            f"data.root={colour_folder}",
            "trainer.max_epochs=1",
            f"paths.log_dir={tmp_path}",
        ],
        offline_env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(p.parent for p in tmp_path.glob("multirun/*/*/*/metrics.json"))
    assert len(runs) == 4
    combos = {
        (
            json.loads((r / "metrics.json").read_text())["model"],
            json.loads((r / "metrics.json").read_text())["strategy"],
        )
        for r in runs
    }
    assert combos == {(m, s) for m in ("small_cnn", "efficientnet_lite0") for s in ("scratch", "head_only")}
    for run in runs:
        assert (run / "checkpoints" / "best.ckpt").is_file() and list((run / "tensorboard").glob("events.*"))
    assert not list(tmp_path.glob("runs")), "no stray single-run directories"


@pytest.mark.parametrize("strategy", ["head_only", "full_finetune", "top_blocks", "two_phase", "scratch"])
def test_every_strategy_runs_through_the_configs(strategy, colour_folder, tmp_path):
    extra = ["strategy.head_epochs=1"] if strategy == "two_phase" else []
    overrides = [*TINY, f"data.root={colour_folder}", "model=small_cnn", f"strategy={strategy}", *extra]
    metrics = train(compose_config(overrides, tmp_path))
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    trainable = [event.value for event in events.Scalars("model/params/trainable")]
    # What each strategy trains, counted on the run's own architecture (small_cnn: 4 blocks, 3 classes).
    reference = ImageClassifier.load_from_checkpoint(metrics["best_checkpoint"], map_location="cpu")
    head = sum(p.numel() for p in reference.head.parameters())
    top_two = sum(p.numel() for block in reference.backbone.blocks[-2:] for p in block.parameters())
    total = metrics["model/params/total"]
    expected = {"head_only": head, "full_finetune": total, "top_blocks": head + top_two, "scratch": total}
    if strategy == "two_phase":
        assert trainable[0] == head and trainable[-1] == total, "the backbone joined in epoch 1"
        assert {"lr-AdamW/pg1", "lr-AdamW/pg2"} <= set(events.Tags()["scalars"])
    else:
        assert trainable == [expected[strategy]] * len(trainable), "the same parameters train every epoch"
    assert metrics["model/params/trainable"] == trainable[-1]
    # One learning rate per parameter group: the head, then each block that trains (two_phase: the backbone).
    learning_rates = {tag for tag in events.Tags()["scalars"] if tag.startswith("lr-AdamW")}
    blocks = len(reference.backbone.blocks)
    groups = {"head_only": 1, "top_blocks": 3, "full_finetune": 1 + blocks, "scratch": 1 + blocks, "two_phase": 2}
    assert len(learning_rates - {"lr-AdamW"}) == (groups[strategy] if groups[strategy] > 1 else 0), learning_rates
    assert metrics["status"] == "completed" and metrics["strategy"] == strategy and metrics["epochs"] == 2


@pytest.mark.slow
def test_ddp_inside_a_multirun_keeps_each_run_in_its_own_directory(colour_folder, offline_env, tmp_path):
    """Lightning's DDP launcher re-runs the command line for rank 1; under `-m` that used to start
    a second sweep in a stray directory (Lightning #11300). Two runs × two CPU processes (gloo)."""
    result = run_train(
        [
            "-m",
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.sync_batchnorm=false",
            "model=small_cnn",
            "strategy=scratch,head_only",
            *TINY,
            f"data.root={colour_folder}",
            "trainer.max_epochs=1",
            f"paths.log_dir={tmp_path}",
        ],
        offline_env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweeps = list(tmp_path.glob("multirun/*/*"))
    assert len(sweeps) == 1, f"one sweep directory, not {sweeps}"
    runs = sorted(p for p in sweeps[0].iterdir() if p.is_dir())
    assert [p.name.split("_")[0] for p in runs] == ["0", "1"]
    for run in runs:
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["status"] == "completed" and 0 <= metrics["test/acc"] <= 1
        assert (run / "checkpoints" / "best.ckpt").is_file() and len(list((run / "tensorboard").glob("events.*"))) >= 1
    assert not (tmp_path / "runs").exists(), "no stray single-run directory from a child process"


def test_a_sweep_spread_over_gpus_gives_job_n_gpu_n_mod_count():
    from transferlab.errors import TransferlabError
    from transferlab.run.pipeline import job_devices

    assert [job_devices(n, gpu_count=4) for n in range(6)] == [[0], [1], [2], [3], [0], [1]]
    with pytest.raises(TransferlabError, match="needs CUDA GPUs"):
        job_devices(0, gpu_count=0)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_sweeps_run_through_the_joblib_and_submitit_launchers(launcher, colour_folder, offline_env, tmp_path):
    """With the default DataLoader workers: each job starts them in the launcher's process (a loky
    worker for joblib), for its image loaders (scratch) and its feature-cache pass (head_only)."""
    options = ["hydra.launcher.n_jobs=2"] if launcher == "joblib" else ["hydra.launcher.timeout_min=10"]
    command = [
        "-m",
        f"hydra/launcher={launcher}",
        *options,
        "model=small_cnn",
        "strategy=scratch,head_only",
        *TINY_WITH_WORKERS,
        f"data.root={colour_folder}",
        "trainer.max_epochs=1",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    result = run_train(command, offline_env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    written = sorted((tmp_path / "sweep").glob("*/metrics.json"))
    assert sorted(json.loads(p.read_text())["strategy"] for p in written) == ["head_only", "scratch"]
    # The same command continues the sweep through this launcher too: both jobs are done, so neither trains.
    stamps = [p.stat().st_mtime_ns for p in written]
    again = run_train(command, offline_env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [p.stat().st_mtime_ns for p in written] == stamps, "completed jobs are skipped, not trained again"


@pytest.mark.slow
def test_optuna_searches_lr_weight_decay_and_strategy_on_validation_accuracy(colour_folder, offline_env, tmp_path):
    result = run_train(
        [
            "hparams_search=optuna",
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.sampler.n_startup_trials=2",
            "model=small_cnn",
            *TINY,
            f"data.root={colour_folder}",
            "trainer.max_epochs=1",
            f"paths.log_dir={tmp_path}",
        ],
        offline_env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [json.loads(p.read_text()) for p in tmp_path.glob("multirun/*/*/*/metrics.json")]
    assert len(runs) == 3
    import yaml

    best = yaml.safe_load(next(tmp_path.glob("multirun/*/*/optimization_results.yaml")).read_text())
    assert best["best_value"] == pytest.approx(max(r["val/acc_best"] for r in runs))
    assert {"optimizer.lr", "optimizer.weight_decay", "strategy"} <= set(best["best_params"])


def test_compile_traces_the_backbone_and_keeps_plain_checkpoints(tiny_overrides, tmp_path):
    """compile.enabled=true: the backbone runs as captured graphs (aot_eager here: Inductor's C++
    build takes a minute on 2 cores), trains to the plain run's metrics, and its checkpoint
    loads into an uncompiled model."""
    import torch._dynamo

    base = [*tiny_overrides, "model=small_cnn", "strategy=scratch", "optimizer.lr=0.01"]
    plain = train(compose_config(base, tmp_path / "plain"))
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = train(
        compose_config([*base, "compile.enabled=true", "compile.backend=aot_eager"], tmp_path / "compiled")
    )
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    assert compiled["test/acc"] == plain["test/acc"]
    assert compiled["test/loss"] == pytest.approx(plain["test/loss"], abs=1e-3)
    reloaded = ImageClassifier.load_from_checkpoint(compiled["best_checkpoint"], map_location="cpu")
    assert not any("_orig_mod" in key for key in reloaded.state_dict())


@pytest.mark.parametrize("strategy", ["scratch", "head_only"])
def test_bf16_mixed_precision_trains_and_keeps_float32_weights(strategy, tiny_overrides, tmp_path):
    """trainer.precision=bf16-mixed (trainer=gpu's default) through the whole run, on CPU autocast:
    images (scratch) and cached features (head_only) alike."""
    model = "model=small_cnn" if strategy == "scratch" else "model=efficientnet_lite0"
    overrides = [
        *tiny_overrides,
        model,
        f"strategy={strategy}",
        "optimizer.lr=0.01",
        "trainer.max_epochs=3",
        "trainer.precision=bf16-mixed",
        "feature_cache.dir=null",
        "data.image_size=64",
    ]
    metrics = train(compose_config(overrides, tmp_path))
    assert metrics["test/acc"] > 0.8  # three colours: chance is 1/3
    state = torch.load(metrics["best_checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    assert {v.dtype for k, v in state.items() if v.is_floating_point()} == {torch.float32}


def test_passes_before_fit_run_on_the_gpu_that_training_will_use(monkeypatch, tmp_path):
    from transferlab.run.pipeline import pre_fit_device

    cfg = compose_config(["trainer=gpu"], tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pre_fit_device(cfg) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert pre_fit_device(cfg) == torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_RANK", "1")  # a DDP child
    assert pre_fit_device(cfg) == torch.device("cuda", 1)
    cfg.trainer.devices = [2, 3]  # an explicit list of GPUs: rank 1 trains on the second
    assert pre_fit_device(cfg) == torch.device("cuda", 3)
    cfg.gpu_per_job = True
    assert pre_fit_device(cfg, job_number=6) == torch.device("cuda", 2), "job 6 of a sweep over 4 GPUs"
    assert pre_fit_device(compose_config(["trainer=cpu"], tmp_path)) == torch.device("cpu")


def test_a_lite_checkpoint_from_the_earlier_network_is_refused(trained_run, tmp_path):
    """Same tensor names and shapes as the faithful network, other features: refused, not loaded."""
    from transferlab.errors import TransferlabError
    from transferlab.models.weights import transferlab_backbone_state

    output_dir, _ = trained_run
    checkpoint = torch.load(output_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["packaged_arch"] == "tf_efficientnet_lite0"
    del checkpoint["packaged_arch"]
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    with pytest.raises(TransferlabError, match="trained in timm's efficientnet_lite network .* train it again"):
        ImageClassifier.load_from_checkpoint(old, map_location="cpu")
    with pytest.raises(TransferlabError, match=f"model.weights={old} holds a efficientnet_lite0 trained in timm's"):
        transferlab_backbone_state(old, "efficientnet_lite0")


def test_test_loss_is_the_mean_over_images_not_over_batches(trained_run, colour_folder):
    """18 test images in batches of 16 and 2: each image weighs the same."""
    import torch.nn.functional as F

    from transferlab.data import ImageFolderDataModule

    output_dir, metrics = trained_run
    module = ImageClassifier.load_from_checkpoint(output_dir / "checkpoints" / "best.ckpt", map_location="cpu").eval()
    datamodule = ImageFolderDataModule(
        root=str(colour_folder), data_config=module.backbone.data_config, image_size=64, batch_size=16, num_workers=0
    )
    datamodule.setup()
    losses = []
    with torch.no_grad():
        for images, labels in datamodule.test_dataloader():
            losses.append(F.cross_entropy(module(images), labels, reduction="none"))
    assert metrics["test/loss"] == pytest.approx(float(torch.cat(losses).mean()), abs=1e-5)


@pytest.mark.parametrize("label", ["model.weights", "resume", "ckpt"])
def test_a_truncated_or_foreign_checkpoint_is_one_clear_error(label, trained_run, tmp_path):
    from transferlab.errors import TransferlabError
    from transferlab.models.weights import read_checkpoint

    output_dir, _ = trained_run
    whole = (output_dir / "checkpoints" / "best.ckpt").read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(TransferlabError, match=rf"{label}={cut} is not a readable checkpoint .*a copy cut short"):
        read_checkpoint(cut, label)
    foreign = tmp_path / "code.ckpt"
    torch.save({"state_dict": {}, "payload": Path("/")}, foreign)  # an object, not tensors and plain values
    with pytest.raises(TransferlabError, match=rf"{label}={foreign} is not a readable checkpoint"):
        read_checkpoint(foreign, label)


def test_predict_with_a_truncated_checkpoint_exits_with_one_line(trained_run, offline_env, tmp_path):
    output_dir, _ = trained_run
    whole = (output_dir / "checkpoints" / "best.ckpt").read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(whole[:1000])
    result = subprocess.run(
        [sys.executable, str(ROOT / "src" / "predict.py"), f"ckpt={cut}", f"inputs={tmp_path}"],
        env=offline_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert f"ckpt={cut} is not a readable checkpoint" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_zero_epochs_is_one_clear_error_not_infinity_in_metrics_json(offline_env, tmp_path, colour_folder):
    result = run_train(
        [
            *TINY,
            f"data.root={colour_folder}",
            "model=small_cnn",
            "strategy=scratch",
            "trainer.max_epochs=0",
            f"hydra.run.dir={tmp_path}",
        ],
        offline_env,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "trainer.max_epochs=0: train at least one epoch" in output
    assert "Traceback" not in output
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "failed", "strict JSON, and says so"


def test_val_fraction_0_trains_every_epoch_on_all_of_train_and_tests_the_last_weights(tmp_path):
    """A fixed recipe (fastai, Keras): no validation split, no early stopping, the last epoch is tested."""
    from conftest import write_colour_images

    write_colour_images(tmp_path / "photos" / "train", 8, 0)
    write_colour_images(tmp_path / "photos" / "val", 4, 1)
    cfg = compose_config(
        [
            *TINY,
            f"data.root={tmp_path / 'photos'}",
            "data.val_fraction=0",
            "model=small_cnn",
            "strategy=scratch",
            "trainer.max_epochs=3",
            "callbacks.early_stopping.patience=1",  # would stop a run that selects; this one cannot
        ],
        tmp_path / "run",
    )
    metrics = train(cfg)
    assert metrics["val/acc_best"] is None and metrics["epochs"] == 3
    assert (metrics["data/train_size"], metrics["data/val_size"], metrics["data/test_size"]) == (24, 0, 12)
    checkpoints = tmp_path / "run" / "checkpoints"
    best, last = (
        torch.load(checkpoints / f"{n}.ckpt", map_location="cpu", weights_only=False) for n in ("best", "last")
    )
    assert best["epoch"] == last["epoch"] == 2, "best.ckpt is the last epoch's weights"
    assert all(torch.equal(best["state_dict"][k], last["state_dict"][k]) for k in last["state_dict"])
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["val/acc_best"] is None


def test_imbalanced_data_options_weights_sampler_monitor_and_metrics_equal_scikit_learns(tmp_path):
    """loss.class_weight=balanced, data.sampler=balanced and monitor=val/balanced_acc on a 12:4:4 folder;
    metrics.json's balanced accuracy and macro F1 equal scikit-learn's on the run's own test predictions."""
    import csv

    from sklearn.metrics import balanced_accuracy_score, f1_score
    from sklearn.utils.class_weight import compute_class_weight

    from transferlab.run import build

    from conftest import write_colour_images

    write_colour_images(tmp_path / "photos" / "train", 12, 0)
    write_colour_images(tmp_path / "photos" / "test", 4, 2)
    write_colour_images(tmp_path / "photos" / "val", 4, 1)
    for colour in ("green", "blue"):
        for path in sorted((tmp_path / "photos" / "train" / colour).iterdir())[4:]:
            path.unlink()
    overrides = [
        *TINY,
        f"data.root={tmp_path / 'photos'}",
        "model=small_cnn",
        "strategy=scratch",
        "loss.class_weight=balanced",
        "data.sampler=balanced",
        "monitor=val/balanced_acc",
    ]
    cfg = compose_config(overrides, tmp_path / "run")
    experiment = build.experiment(cfg)
    labels = experiment.datamodule.splits["train"].labels
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    assert experiment.module.class_weights.tolist() == pytest.approx(expected.tolist())
    drawn = [labels[i] for _, i in experiment.datamodule.train_dataloader().sampler]
    assert len(drawn) == len(labels) == 20 and len(set(drawn)) == 3
    many = build.datamodule(cfg, experiment.backbone).balanced_weights("train")
    assert float(many[[i for i, y in enumerate(labels) if y == 0]].sum()) == pytest.approx(1.0), "each class: 1"

    metrics = train(compose_config(overrides, tmp_path / "run2"))
    callbacks = build.callbacks(cfg, build.policy(cfg))
    assert {c.monitor for c in callbacks if hasattr(c, "monitor") and c.monitor} == {"val/balanced_acc"}
    with (tmp_path / "run2" / "test_predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    truth, guess = [r["label"] for r in rows], [r["prediction"] for r in rows]
    assert metrics["test/balanced_acc"] == pytest.approx(balanced_accuracy_score(truth, guess), abs=1e-6)
    assert metrics["test/macro_f1"] == pytest.approx(f1_score(truth, guess, average="macro"), abs=1e-6)
    assert metrics["test/acc"] == pytest.approx(sum(t == g for t, g in zip(truth, guess)) / len(rows), abs=1e-6)
