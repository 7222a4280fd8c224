"""Reviewing a sweep: figures in TensorBoard, the sweep report, predict and export."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import ROOT, TINY, compose_config
from transferlab.inference import load_classifier, predict
from transferlab.run import train


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "src" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sweep(colour_folder, tmp_path_factory) -> Path:
    """Three runs in one folder: two that finish, one that fails; plus one that never finished."""
    root = tmp_path_factory.mktemp("sweep")
    base = [*TINY, f"data.root={colour_folder}", "trainer.max_epochs=1"]
    train(compose_config([*base, "model=small_cnn", "strategy=scratch"], root / "0_scratch"))
    train(compose_config([*base, "data.image_size=64", "optimizer.lr=0.03"], root / "1_head_only"))
    with pytest.raises(Exception, match="no pretrained weights"):
        train(compose_config([*base, "model=small_cnn", "model.pretrained=true"], root / "2_broken"))
    for run in ("0_scratch", "1_head_only", "2_broken", "3_killed"):  # what Hydra writes before the job starts
        (root / run / ".hydra").mkdir(parents=True, exist_ok=True)
        (root / run / ".hydra" / "config.yaml").write_text("model:\n  name: small_cnn\n")
    return root


def test_figures_and_per_class_metrics_are_in_each_run(sweep):
    run = sweep / "0_scratch"
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    images = set(events.Tags()["images"])
    assert {"train/samples", "train/augmentation", "val/confusion_matrix", "test/confusion_matrix"} <= images
    metrics = json.loads((run / "metrics.json").read_text())
    for metric in ("precision", "recall", "f1"):
        for name in ("blue", "green", "red"):
            assert 0 <= metrics[f"test/{metric}/{name}"] <= 1
    if metrics["test/acc"] < 1:
        assert "test/worst_predictions" in images


def test_the_sweep_report_matches_the_runs_and_lists_failures(sweep):
    report = load_script("report").report([sweep])
    text = report.read_text()
    assert (sweep / "report.png").stat().st_size > 1000
    assert "2 completed, 1 failed, 1 unfinished" in text
    for run in ("0_scratch", "1_head_only"):
        metrics = json.loads((sweep / run / "metrics.json").read_text())
        row = next(line for line in text.splitlines() if f"`{run}`" in line)
        assert f"{metrics['test/acc']:.4f}" in row and metrics["strategy"] in row and metrics["model"] in row
    assert "| failed | image_folder | small_cnn |" in text and "no pretrained weights" in text
    assert "| unfinished |" in text and "`3_killed`" in text
    best = max(("0_scratch", "1_head_only"), key=lambda r: json.loads((sweep / r / "metrics.json").read_text())["test/acc"])
    assert next(line for line in text.splitlines() if f"`{best}`" in line).startswith("| ★ |")


def test_predict_reports_unreadable_files_and_predicts_the_rest(sweep, colour_folder, tmp_path):
    checkpoint = sweep / "1_head_only" / "checkpoints" / "best.ckpt"
    for path in sorted((colour_folder / "test" / "red").glob("*.jpg"))[:3]:
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    rows = predict(load_classifier(checkpoint), sorted(tmp_path.glob("*.jpg")), top_k=2)
    assert [r["path"].endswith("broken.jpg") for r in rows].count(True) == 1
    broken = next(r for r in rows if "broken" in r["path"])
    assert "error" in broken and "top" not in broken
    for row in rows:
        if "top" in row:
            assert len(row["top"]) == 2 and row["top"][0][0] == "red" and row["top"][0][1] >= row["top"][1][1]

    out = tmp_path / "predictions.csv"
    result = subprocess.run([sys.executable, str(ROOT / "src" / "predict.py"), f"ckpt={checkpoint}", f"inputs={tmp_path}",
                             "top_k=2", f"csv={out}"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "3 predicted, 1 unreadable" in result.stderr
    table = list(csv.DictReader(out.open()))
    assert len(table) == 4 and sum(bool(r["error"]) for r in table) == 1


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_the_checkpoint(sweep, fmt, tmp_path):
    checkpoint = sweep / "0_scratch" / "checkpoints" / "best.ckpt"
    written, difference = load_script("export").export(str(checkpoint), fmt, str(tmp_path / f"model.{fmt}"))
    assert written.stat().st_size > 10_000 and difference < 1e-4
