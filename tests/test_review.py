"""Reviewing a sweep: figures in TensorBoard, the sweep report, predict and export."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from transferlab.review.export import export
from transferlab.review.inference import load_classifier, predict
from transferlab.run.pipeline import train

from conftest import ROOT, TINY, compose_config


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
    # The per-class figures describe the test predictions the accuracy counts: F1 is the harmonic mean of
    # precision and recall, and the recalls weighted by the classes' test images (6 each) give test/acc.
    for name in ("blue", "green", "red"):
        precision, recall, f1 = (metrics[f"test/{metric}/{name}"] for metric in ("precision", "recall", "f1"))
        harmonic = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        assert f1 == pytest.approx(harmonic, abs=1e-6), name
        assert recall * 6 == pytest.approx(round(recall * 6), abs=1e-6), f"{name}: a share of 6 test images"
    recalls = [metrics[f"test/recall/{name}"] for name in ("blue", "green", "red")]
    assert sum(recalls) / 3 == pytest.approx(metrics["test/acc"], abs=1e-6)
    if metrics["test/acc"] < 1:
        assert "test/worst_predictions" in images


def test_the_sweep_report_matches_the_runs_and_lists_failures(sweep, tmp_path):
    # Through src/report.py, runs= as a list, from a folder it must leave as it found it.
    result = subprocess.run(
        [sys.executable, str(ROOT / "src" / "report.py"), f"runs=[{sweep}]"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote {sweep / 'report.md'}" in result.stdout and not list(tmp_path.iterdir())
    text = (sweep / "report.md").read_text()
    assert text in result.stdout
    assert (sweep / "report.png").stat().st_size > 1000
    assert "2 completed, 1 failed, 1 unfinished" in text
    for run in ("0_scratch", "1_head_only"):
        metrics = json.loads((sweep / run / "metrics.json").read_text())
        row = next(line for line in text.splitlines() if f"`{run}`" in line)
        assert f"{metrics['test/acc']:.4f}" in row and metrics["strategy"] in row and metrics["model"] in row
    assert "| failed | image_folder | small_cnn |" in text and "no pretrained weights" in text
    assert "| unfinished |" in text and "`3_killed`" in text
    best = max(
        ("0_scratch", "1_head_only"), key=lambda r: json.loads((sweep / r / "metrics.json").read_text())["test/acc"]
    )
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
    where = tmp_path / "cwd"
    where.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "src" / "predict.py"),
            f"ckpt={checkpoint}",
            f"inputs={tmp_path}",
            "top_k=2",
            f"csv={out}",
        ],
        capture_output=True,
        text=True,
        cwd=where,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "3 predicted, 1 unreadable" in result.stderr
    assert not list(where.iterdir()), "no run directory, no log file: only csv="
    assert len(result.stdout.splitlines()) == 4 and sum("\tERROR " in line for line in result.stdout.splitlines()) == 1
    table = list(csv.DictReader(out.open()))
    assert len(table) == 4 and sum(bool(r["error"]) for r in table) == 1


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_the_checkpoint(sweep, fmt, tmp_path):
    checkpoint = sweep / "0_scratch" / "checkpoints" / "best.ckpt"
    written, difference = export(str(checkpoint), fmt, str(tmp_path / f"model.{fmt}"))
    assert written.stat().st_size > 10_000 and difference < 1e-4
    # src/export.py: the same file, without out= beside the checkpoint, and nothing in the current folder.
    where = tmp_path / "cwd"
    where.mkdir()
    copy = tmp_path / "copy.ckpt"
    shutil.copy(checkpoint, copy)
    result = subprocess.run(
        [sys.executable, str(ROOT / "src" / "export.py"), f"ckpt={copy}", f"format={fmt}"],
        capture_output=True,
        text=True,
        cwd=where,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    beside = copy.with_suffix(".onnx" if fmt == "onnx" else ".torchscript.pt")
    assert result.stdout.startswith(f"wrote {beside}; largest difference") and beside.stat().st_size > 10_000
    assert float(result.stdout.split()[-1]) < 1e-4 and not list(where.iterdir())


# A sitecustomize for the sweep's process: TensorBoard event files written only when their writer is
# flushed or closed. TensorBoard's own writer hands events to a background thread that the process
# does not wait for at exit; whether that thread gets to a run's last events first is a race. Here it
# never does: what a run leaves unflushed is lost every time, as it was, at random, before.
UNFLUSHED_EVENTS_ARE_LOST = """
from tensorboard.summary.writer import event_file_writer


class WriterWithoutThread:
    def __init__(self, record_writer, max_queue_size=10, flush_secs=120):
        self.record_writer, self.pending, self.closed = record_writer, [], False

    def write(self, data):
        if self.closed:
            raise OSError("Writer is closed")
        self.pending.append(data)

    def flush(self):
        for data in self.pending:
            self.record_writer.write(data)
        self.pending.clear()
        self.record_writer.flush()

    def close(self):
        if not self.closed:
            self.flush()
            self.record_writer.close()
            self.closed = True


event_file_writer._AsyncWriter = WriterWithoutThread
"""
SESSION_STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


def hparams_request(url: str, route: str, request: dict) -> dict:
    """A request of TensorBoard's HPARAMS tab: its JSON POSTed to the hparams plugin."""
    post = urllib.request.Request(
        f"{url}data/plugin/hparams/{route}", data=json.dumps(request).encode(), headers={"Content-Type": "text/plain"}
    )
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(post) as response:
        return json.load(response)


def hparams_table(logdir: Path) -> dict[str, dict]:
    """The HPARAMS tab's table as TensorBoard's own server serves it: session name → hparams and
    metric values. Loaded in full before it serves (blocking reload), so nothing depends on timing."""
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(logdir),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--load_fast",
            "false",
            "--reload_task",
            "blocking",
            "--reload_interval",
            "0",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        for line in server.stderr:  # "TensorBoard 2.x at http://127.0.0.1:<port>/ (Press CTRL+C to quit)"
            lines.append(line)
            if found := re.search(r"(http://127\.0\.0\.1:\d+/)", line):
                break
        assert found, "".join(lines)
        url = found.group(1)
        experiment = hparams_request(url, "experiment", {"experimentName": "", "hparamsLimit": 1000})
        columns = [{"hparam": info["name"], "includeInResult": True} for info in experiment.get("hparamInfos", [])]
        columns += [{"metric": info["name"], "includeInResult": True} for info in experiment.get("metricInfos", [])]
        groups = hparams_request(
            url,
            "session_groups",
            {
                "experimentName": "",
                "allowedStatuses": SESSION_STATUSES,
                "colParams": columns,
                "startIndex": 0,
                "sliceSize": 1000,
            },
        )
    finally:
        server.terminate()
        server.wait()
    return {
        session["name"]: {
            **group["hparams"],
            **{value["name"]["tag"]: value["value"] for value in group.get("metricValues", [])},
        }
        for group in groups.get("sessionGroups", [])
        for session in group["sessions"]
    }


@pytest.mark.slow
def test_tensorboard_shows_every_run_of_a_sweep_with_its_final_metrics(colour_folder, offline_env, tmp_path):
    """The HPARAMS tab lists each run with test/acc and val/acc_best: the run writes them (the metrics
    as scalars too) and flushes them before its process ends, with no help from a background thread."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(UNFLUSHED_EVENTS_ARE_LOST)
    env = {**offline_env, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), offline_env.get("PYTHONPATH")]))}
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "src" / "train.py"),
            "-m",
            "model=small_cnn",
            "strategy=scratch,head_only",
            *TINY,
            f"data.root={colour_folder}",
            "trainer.max_epochs=1",
            f"paths.log_dir={tmp_path / 'logs'}",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {
        path.parent: json.loads(path.read_text()) for path in (tmp_path / "logs").glob("multirun/*/*/*/metrics.json")
    }
    assert len(runs) == 2
    sweep = next(iter(runs)).parent

    table = hparams_table(sweep)
    assert set(table) == {f"{run.name}/tensorboard" for run in runs}
    for run, metrics in runs.items():
        row = table[f"{run.name}/tensorboard"]
        assert row["strategy"] == metrics["strategy"]
        assert row["test/acc"] == pytest.approx(metrics["test/acc"], rel=1e-6)
        assert row["val/acc_best"] == pytest.approx(metrics["val/acc_best"], rel=1e-6)
