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
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from transferlab.errors import TransferlabError
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
        row = next(line for line in text.splitlines() if f"`{run}/checkpoints/best.ckpt`" in line)
        assert f"{metrics['test/acc']:.4f} [" in row and metrics["strategy"] in row and metrics["model"] in row
        assert (sweep / run / "test_predictions.csv").is_file()
    assert "| failed | image_folder | small_cnn |" in text and "no pretrained weights" in text
    assert "| unfinished |" in text and "`3_killed`" in text
    starred = next(line for line in text.splitlines() if line.startswith("| ★ |"))
    best = max(
        ("0_scratch", "1_head_only"), key=lambda r: json.loads((sweep / r / "metrics.json").read_text())["val/acc_best"]
    )
    assert f"`{best}/checkpoints/best.ckpt`" in starred or (
        json.loads((sweep / "0_scratch" / "metrics.json").read_text())["val/acc_best"]
        == json.loads((sweep / "1_head_only" / "metrics.json").read_text())["val/acc_best"]
    ), "the best by validation accuracy, not by test"
    assert "## Is the winner really better?" in text and "exact McNemar p" in text


def fake_run(root: Path, name: str, overrides: list[str], seed: int, val: float, right: list[bool]) -> None:
    """A completed run as src/train.py leaves it: config, overrides, metrics, test predictions."""
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("model:\n  name: resnet18\ndata:\n  root: /home/me/photos\n")
    (run / ".hydra" / "hydra.yaml").write_text(
        json.dumps({"hydra": {"overrides": {"task": [*overrides, f"seed={seed}"]}, "runtime": {"choices": {}}}})
    )
    metrics = {
        "status": "completed", "model": "resnet18", "data": "image_folder", "strategy": "head_only", "seed": seed,
        "test/acc": sum(right) / len(right), "val/acc_best": val, "data/test_size": len(right), "time/fit_s": 10.0,
        "best_checkpoint": str(run / "checkpoints" / "best.ckpt"),
    }  # fmt: skip
    (run / "metrics.json").write_text(json.dumps(metrics))
    rows = ["index,file,label,prediction,confidence"]
    rows += [f"{i},/photos/{i}.jpg,cat,{'cat' if ok else 'dog'},0.9" for i, ok in enumerate(right)]
    (run / "test_predictions.csv").write_text("\n".join(rows) + "\n")


def test_the_report_chooses_on_validation_and_says_how_sure_the_comparison_is(tmp_path):
    from scipy.stats import binomtest

    from transferlab.review.report import report

    # Recipe A: best on validation, worse on test (one seed). Recipe B: better test, worse val (two seeds).
    a = [True] * 80 + [False] * 20
    b1 = (
        [True] * 70 + [False] * 5 + [True] * 20 + [False] * 5
    )  # right on 15 images A gets wrong, wrong on 10 A gets right
    b2 = [True] * 90 + [False] * 10
    fake_run(tmp_path, "0", ["optimizer.lr=0.01"], 1, 0.95, a)
    fake_run(tmp_path, "1", ["optimizer.lr=0.1"], 1, 0.90, b1)
    fake_run(tmp_path, "2", ["optimizer.lr=0.1"], 2, 0.91, b2)
    text = report(tmp_path).read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "image_folder" in line]
    assert rows[0].startswith(
        "| ★ | image_folder (photos) | `optimizer.lr=0.01` | 1 | 0.9500 | 0.8000 [0.711, 0.867] |"
    )
    # Two seeds that agree: mean ± sample std (0), and an interval no narrower than Wilson's over their 200
    # pooled test predictions (a t interval of width 0 would say nothing of the test set's size).
    assert rows[1].startswith(
        "|  | image_folder (photos) | `optimizer.lr=0.1` | 2 | 0.9050 | 0.9000 ± 0.0000 [0.851, 0.934] |"
    )
    assert rows[1].endswith("`2/checkpoints/best.ckpt` |"), "the checkpoint of the seed with the best validation score"
    assert "`0/checkpoints/best.ckpt`" in rows[0]
    # Paired on seed 1, the seed both recipes ran.
    only_a = sum(x and not y for x, y in zip(a, b1))
    only_b = sum(y and not x for x, y in zip(a, b1))
    p = binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue
    assert (
        f"seed 1: `optimizer.lr=0.01` alone right on {only_a} test images, `optimizer.lr=0.1` alone on {only_b}; "
        f"p = {p:.3g}, a real difference, in favour of `optimizer.lr=0.1` (exact McNemar p < 0.05)" in text
    ), "the validation choice loses on test here, and the report says so"
    assert (tmp_path / "report.png").stat().st_size > 1000
    # A run scored on `monitor` (val/balanced_acc) ranks by that score, not by val/acc_best.
    metrics = json.loads((tmp_path / "0" / "metrics.json").read_text())
    metrics.update({"monitor": "val/balanced_acc", "monitor/best": 0.5})
    (tmp_path / "0" / "metrics.json").write_text(json.dumps(metrics))
    assert next(r for r in report(tmp_path).read_text().splitlines() if r.startswith("| ★ |")).count("optimizer.lr=0.1")
    # Different test images cannot be paired.
    (tmp_path / "1" / "test_predictions.csv").write_text("index,file,label,prediction,confidence\n0,/x.jpg,cat,cat,1\n")
    assert "no paired test: the two runs were tested on different images" in report(tmp_path).read_text()


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
def test_export_matches_the_checkpoint_on_real_images_and_carries_its_preprocessing(sweep, fmt, tmp_path):
    checkpoint = sweep / "0_scratch" / "checkpoints" / "best.ckpt"
    written, difference, count = export(str(checkpoint), fmt, str(tmp_path / f"model.{fmt}"))
    assert written.stat().st_size > 10_000 and difference < 1e-4
    assert count == 16, "checked on 16 of the run's 18 real test images (test_predictions.csv)"
    if fmt == "onnx":
        import onnxruntime

        meta = onnxruntime.InferenceSession(str(written)).get_modelmeta().custom_metadata_map
    else:
        extra = {"transferlab.json": ""}
        torch.jit.load(str(written), _extra_files=extra)
        meta = json.loads(extra["transferlab.json"])
    assert json.loads(meta["class_names"]) == ["blue", "green", "red"]
    assert (meta["input_size"], meta["resize_size"], meta["model"], meta["strategy"]) == (
        "32",
        "32",
        "small_cnn",
        "scratch",
    )
    assert json.loads(meta["mean"]) == pytest.approx([0.485, 0.456, 0.406])
    # src/export.py: the same file, without out= beside the checkpoint, and nothing in the current folder.
    where = tmp_path / "cwd"
    where.mkdir()
    run = tmp_path / "run"
    shutil.copytree(sweep / "0_scratch", run)
    copy = run / "checkpoints" / "best.ckpt"
    result = subprocess.run(
        [sys.executable, str(ROOT / "src" / "export.py"), f"ckpt={copy}", f"format={fmt}"],
        capture_output=True,
        text=True,
        cwd=where,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    beside = copy.with_suffix(".onnx" if fmt == "onnx" else ".torchscript.pt")
    assert result.stdout.startswith(f"wrote {beside}; largest difference from the checkpoint on 16 images")
    assert beside.stat().st_size > 10_000 and float(result.stdout.split()[-1]) < 1e-4 and not list(where.iterdir())


def test_an_export_without_images_to_check_on_is_a_clear_error(sweep, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(sweep / "0_scratch" / "checkpoints" / "best.ckpt", run / "checkpoints" / "best.ckpt")
    with pytest.raises(TransferlabError, match="no test image files recorded beside it.*give images=PATH"):
        export(str(run / "checkpoints" / "best.ckpt"), "onnx")
    assert not list((run / "checkpoints").glob("*.onnx"))


def test_the_readme_onnx_example_predicts_as_the_checkpoint_with_onnxruntime_alone(sweep, colour_folder, tmp_path):
    """examples/predict_onnx.py in a process where torch cannot be imported: the same top classes as
    src/predict.py on the checkpoint, probabilities within 0.01 (Pillow resizes, torchvision resizes a
    tensor: a few grey levels apart)."""
    checkpoint = sweep / "1_head_only" / "checkpoints" / "best.ckpt"
    written, _, _ = export(str(checkpoint), "onnx", str(tmp_path / "model.onnx"))
    photos = sorted((colour_folder / "test").rglob("*.jpg"))[::3]
    (tmp_path / "notes.jpg").write_text("not an image")
    blocked = "import sys, runpy; sys.modules['torch'] = None; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    arguments = [str(written), *map(str, photos), str(tmp_path / "notes.jpg")]
    result = subprocess.run(
        [sys.executable, "-c", blocked, str(ROOT / "examples" / "predict_onnx.py"), *arguments],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    expected = predict(load_classifier(checkpoint), photos, top_k=3)
    lines = result.stdout.splitlines()
    assert len(lines) == len(photos) + 1 and lines.pop().startswith(f"{tmp_path / 'notes.jpg'}\tERROR ")
    for line, row in zip(lines, expected):
        path, ranked = line.split("\t")
        pairs = [item.rsplit(" ", 1) for item in ranked.split(", ")]
        assert path == row["path"] and [n for n, _ in pairs] == [n for n, _ in row["top"]]
        assert [float(p) for _, p in pairs] == pytest.approx([p for _, p in row["top"]], abs=0.01)


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


def test_a_perfect_run_a_csv_table_and_the_chart_report_without_error(tmp_path):
    from transferlab.review.report import report

    fake_run(tmp_path, "0", ["optimizer.lr=0.01"], 1, 1.0, [True] * 13)  # Wilson's bound: 0.9999999…
    config = tmp_path / "0" / ".hydra" / "config.yaml"
    config.write_text("model:\n  name: resnet18\ndata:\n  csv: /home/me/labels.csv\n")
    text = report(tmp_path).read_text()
    assert "| ★ | image_folder (labels.csv) |" in text and "1.0000 [0.772, 1.000]" in text
    assert (tmp_path / "report.png").stat().st_size > 1000


def test_the_intervals_and_the_paired_test_equal_their_closed_forms():
    from scipy.stats import binomtest

    from transferlab.review.statistics import mcnemar, seed_interval, wilson

    assert wilson(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)  # the textbook example
    low, high = wilson(136, 153)
    share, z, n = 136 / 153, 1.959964, 153
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    assert (low + high) / 2 == pytest.approx(centre, abs=1e-6) and high < 1
    assert wilson(153, 153)[1] == 1.0 and wilson(0, 20)[0] == 0.0
    summary = seed_interval([0.90, 0.92, 0.91])
    assert (summary.mean, summary.std) == pytest.approx((0.91, 0.01))
    assert summary.high - summary.mean == pytest.approx(4.302653 * 0.01 / 3**0.5, abs=1e-6)  # t(0.975, 2)
    first, second = [True] * 10 + [False] * 5, [False] * 3 + [True] * 12
    result = mcnemar(first, second)
    assert (result.only_first, result.only_second) == (3, 5)
    assert result.p_value == pytest.approx(binomtest(3, 8, 0.5).pvalue) == pytest.approx(0.7265625)
    assert mcnemar([True, False], [True, False]).p_value == 1.0, "no image tells them apart"


def test_tensorboard_has_the_runs_summary_and_the_hparams_that_tell_runs_apart(sweep):
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(sweep / "1_head_only" / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    start = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    assert hparams["model"].string_value == "efficientnet_lite0" and hparams["strategy"].string_value == "head_only"
    assert hparams["data"].string_value.startswith("image_folder (") and hparams["lr"].number_value == 0.03
    assert list(hparams)[:5] == ["model", "strategy", "data", "lr", "seed"] or {
        "model",
        "strategy",
        "data",
        "lr",
        "seed",
    } <= set(hparams)
    assert "data.batch_size" not in hparams and "data.root" in hparams, "the command line's keys, each once"
    assert len(hparams) <= 17, "the keys that tell runs apart, not the whole config"
    (summary,) = events.Tensors("summary/text_summary")
    text = summary.tensor_proto.string_val[0].decode()
    metrics = json.loads((sweep / "1_head_only" / "metrics.json").read_text())
    assert f"| test/acc | {metrics['test/acc']:.4f} |" in text and "| model | efficientnet_lite0 |" in text


def test_sample_grids_take_every_class_and_confusion_matrices_stay_legible_at_37_classes():
    import numpy as np

    from transferlab.callbacks.figures import file_name
    from transferlab.review.figures import confusion_figure, stratified_indices

    assert stratified_indices([0] * 10 + [1] * 10 + [2] * 2, 9) == [0, 10, 20, 1, 11, 21, 2, 12, 3]
    rng = np.random.default_rng(0)
    counts = torch.as_tensor(np.diag(rng.integers(20, 40, 37)) + rng.integers(0, 2, (37, 37)))
    figure = confusion_figure(counts, [f"breed_{i}" for i in range(37)], "test")
    counts_axis, shares_axis = figure.axes
    assert len(counts_axis.texts) == int((counts > 0).sum()), "a number in every non-zero cell"
    diagonal = [t for t in shares_axis.texts if t.get_position()[0] == t.get_position()[1]]
    row = counts[0].numpy()
    assert diagonal[0].get_text() == f"{100 * row[0] / row.sum():.0f}", "row-normalised: share of the true class"
    assert figure.get_size_inches()[1] >= 0.32 * 37 and counts_axis.texts[0].get_fontsize() >= 4.5
    assert file_name(Path("/photos/test/cat/IMG_2031.jpg")) == "IMG_2031.jpg\n" and file_name(np.zeros(3)) == ""
