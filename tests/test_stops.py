"""Runs that stop early say so: a real signal (SIGTERM, SIGUSR1, Ctrl-C) saves a checkpoint where it
stopped and exits non-zero, and the resumed run ends as one never stopped; a diverged loss stops the run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from transferlab.run.pipeline import RunStopped, train

from conftest import ROOT, SMALL_RUN, TINY, compose_config

SMALL = [*SMALL_RUN, "trainer.max_epochs=3"]


@pytest.fixture(scope="module")
def never_stopped(stop_photos, tmp_path_factory):
    """The reference: the same run, never stopped."""
    where = tmp_path_factory.mktemp("whole")
    assert run(*SMALL, f"data.root={stop_photos}", f"hydra.run.dir={where}").returncode == 0
    return where


def run(*overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "tests"), **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "src" / "train.py"), *overrides],
        env=environment,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        # A suite started in the background (`pytest &`) passes SIGINT on ignored, and Python then leaves
        # Ctrl-C ignored: give the run the terminal's default, as a user's run in a terminal has.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def signal_at(epoch: int, batch: int, name: str) -> list[str]:
    return [
        "+callbacks.signal._target_=signal_helper.SignalAt",
        f"+callbacks.signal.epoch={epoch}",
        f"+callbacks.signal.batch={batch}",
        f"+callbacks.signal.name={name}",
    ]


def weights(run_dir) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


def test_sigterm_mid_epoch_saves_exits_143_and_the_resumed_run_equals_an_uninterrupted_one(
    stop_photos, never_stopped, tmp_path
):
    common = [*SMALL, f"data.root={stop_photos}"]
    stopped = run(*common, *signal_at(1, 3, "SIGTERM"), f"hydra.run.dir={tmp_path / 'stopped'}")
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    metrics = json.loads((tmp_path / "stopped" / "metrics.json").read_text())
    assert (metrics["status"], metrics["signal"], metrics["epoch"], metrics["step"]) == (
        "interrupted",
        "SIGTERM",
        2,
        12,
    )
    assert metrics["resume"] == f"python src/train.py resume={tmp_path / 'stopped'}"
    assert f"continue with: python src/train.py resume={tmp_path / 'stopped'}" in stopped.stdout + stopped.stderr
    assert "Traceback" not in stopped.stderr and "Received SIGTERM" not in stopped.stdout + stopped.stderr

    resumed = run(f"resume={tmp_path / 'stopped'}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming at epoch 2 of 3, after its batch 4" in resumed.stdout
    a, b = weights(tmp_path / "stopped"), weights(never_stopped)
    assert all(torch.equal(a[k], b[k]) for k in b), "the same weights as a run never stopped"
    first, second = (json.loads((r / "metrics.json").read_text()) for r in (tmp_path / "stopped", never_stopped))
    assert (first["test/acc"], first["epochs"], first["status"]) == (second["test/acc"], second["epochs"], "completed")


@pytest.mark.parametrize(("name", "status"), [("SIGUSR1", 138), ("SIGINT", 130)])
def test_sigusr1_and_ctrl_c_save_too_exit_non_zero_and_resume_exactly(
    name, status, stop_photos, never_stopped, tmp_path
):
    stopped = run(*SMALL, f"data.root={stop_photos}", *signal_at(0, 2, name), f"hydra.run.dir={tmp_path}")
    assert stopped.returncode == status, stopped.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["signal"] == {"SIGUSR1": "SIGUSR1", "SIGINT": "Ctrl-C"}[name]
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    # Stopped at the step boundary after the signal (this step's or the next): the loader's place is that step.
    assert saved["global_step"] in (3, 4)
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"epoch": 0, "batches": saved["global_step"]}
    ]
    resumed = run(f"resume={tmp_path}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming at epoch 1 of 3, after its batch " in resumed.stdout
    a, b = weights(tmp_path), weights(never_stopped)
    assert all(torch.equal(a[k], b[k]) for k in b), "the same weights as a run never stopped"
    first, second = (json.loads((r / "metrics.json").read_text()) for r in (tmp_path, never_stopped))
    assert (first["test/acc"], first["epochs"], first["status"]) == (second["test/acc"], second["epochs"], "completed")


@pytest.mark.parametrize("name, status", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_while_testing_says_so_exits_non_zero_and_resume_tests_the_trained_model(
    name, status, stop_photos, never_stopped, tmp_path
):
    where = tmp_path / "stopped"
    test_stop = [
        *signal_at(0, 0, name),
        "+callbacks.signal.stage=test",
        f"+callbacks.signal.marker={tmp_path / 'sent'}",
    ]
    stopped = run(*SMALL, f"data.root={stop_photos}", *test_stop, f"hydra.run.dir={where}")
    assert stopped.returncode == status, stopped.stderr[-2000:]
    metrics = json.loads((where / "metrics.json").read_text())
    cause = "SIGTERM" if name == "SIGTERM" else "Ctrl-C"
    assert (metrics["status"], metrics["signal"], metrics["stage"]) == ("interrupted", cause, "test")
    assert f"stopped while testing, after training had finished; test it with: python src/train.py resume={where}" in (
        stopped.stdout + stopped.stderr
    )
    assert "Traceback" not in stopped.stderr
    resumed = run(f"resume={where}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    tested, reference = (json.loads((r / "metrics.json").read_text()) for r in (where, never_stopped))
    assert tested["status"] == "completed" and tested["test/acc"] == reference["test/acc"]


def test_a_run_early_stopping_ended_is_tested_on_resume_without_training_on(stop_photos, tmp_path):
    """Lightning restores EarlyStopping's counters but not its stop: without our EarlyStopping the resumed
    run would train epoch 3 onwards and could pick another best.ckpt."""
    where = tmp_path / "stopped"
    # No val/acc improves by a whole point: stopped after epoch 2 of 6.
    early = ["trainer.max_epochs=6", "callbacks.early_stopping.patience=1", "+callbacks.early_stopping.min_delta=1.0"]
    test_stop = [
        *signal_at(0, 0, "SIGTERM"),
        "+callbacks.signal.stage=test",
        f"+callbacks.signal.marker={tmp_path / 'sent'}",
    ]
    stopped = run(*SMALL_RUN, *early, f"data.root={stop_photos}", *test_stop, f"hydra.run.dir={where}")
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    assert "early stopping after epoch 2" in stopped.stdout
    last = (where / "checkpoints" / "last.ckpt").read_bytes()
    resumed = run(f"resume={where}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "epoch 3/6" not in resumed.stdout, "trained on after early stopping"
    assert (where / "checkpoints" / "last.ckpt").read_bytes() == last
    metrics = json.loads((where / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs"] == 2


def test_a_nan_loss_stops_the_run_in_its_first_epoch_and_says_diverged(colour_folder, tmp_path):
    overrides = [*TINY, f"data.root={colour_folder}", "optimizer.lr=1e30", "trainer.max_epochs=5"]
    # Lightning's default log interval (TINY logs every step): the check reads its flag at the epoch's last batch.
    cfg = compose_config([*overrides, "trainer.log_every_n_steps=50"], tmp_path)
    with pytest.raises(
        RunStopped, match=r"diverged at epoch 1, step \d+: the training loss is nan; .*optimizer.lr=1e\+30"
    ):
        train(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and metrics["epoch"] == 1 and "test/acc" not in metrics


def test_a_loss_far_above_a_uniform_guess_is_divergence_too(colour_folder, tmp_path):
    overrides = [*TINY, f"data.root={colour_folder}", "model=small_cnn", "strategy=scratch", "optimizer=sgd"]
    cfg = compose_config([*overrides, "optimizer.lr=1000"], tmp_path)
    with pytest.raises(RunStopped, match="over 100× a uniform guess's 1.099") as stopped:
        train(cfg)
    assert stopped.value.exit_status == 1
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "diverged"
    fine = train(compose_config([*overrides, "optimizer.lr=0.01"], tmp_path / "fine"))
    assert fine["status"] == "completed", "a sane rate is not stopped"


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_no_half_file(colour_folder, tmp_path, monkeypatch):
    """A write error injected where the bytes are written (torch.save, a JSON file's write)."""
    import errno
    from pathlib import Path

    from transferlab.errors import TransferlabError
    from transferlab.run import pipeline

    def disk_full(*args, **kwargs):
        raise RuntimeError("PytorchStreamWriter failed writing file data/3: file write failed")

    monkeypatch.setattr(torch, "save", disk_full)
    cfg = compose_config([*TINY, f"data.root={colour_folder}", "model=small_cnn", "strategy=scratch"], tmp_path)
    with pytest.raises(
        TransferlabError, match=r"could not write the checkpoint .*best.ckpt \(PytorchStreamWriter"
    ) as e:
        train(cfg)
    assert "\n" not in str(e.value) and "is the disk full or read-only?" in str(e.value)
    assert not list(tmp_path.rglob("*.partial")), "no half-written checkpoint"
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "failed"
    monkeypatch.undo()

    before = (tmp_path / "metrics.json").read_text()
    original = Path.write_text

    def full(self, *args, **kwargs):
        if self.name.endswith(".partial"):
            original(self, '{"status": "compl', **{k: v for k, v in kwargs.items() if k != "encoding"})
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError):
        pipeline.write_json(tmp_path / "metrics.json", {"status": "completed"})
    assert (tmp_path / "metrics.json").read_text() == before and not list(tmp_path.glob("*.partial")), (
        "the old file kept, the half-written one removed"
    )


def test_the_divergence_check_reads_its_device_flag_once_per_log_interval_and_names_the_first_bad_step(monkeypatch):
    """No host sync on the steps between checks (a `.item()` a step stalls a GPU's queue); the stop names
    the first non-finite step and its loss, found at the next check (log interval or the epoch's last batch)."""
    from types import SimpleNamespace

    from transferlab.callbacks.stops import Diverged, StopOnDivergence

    reads = []
    item = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda self: reads.append(1) or item(self))
    check = StopOnDivergence()
    trainer = SimpleNamespace(
        global_step=0, log_every_n_steps=4, num_training_batches=100, world_size=1, current_epoch=0
    )
    losses = [1.0, 0.9, float("nan"), 0.8, float("inf"), 0.7, 0.6, 0.5]
    with pytest.raises(Diverged) as stopped:
        for batch_idx, value in enumerate(losses):
            trainer.global_step = batch_idx + 1  # after the optimizer step, as in Lightning's hook
            check.on_train_batch_end(trainer, None, {"loss": torch.tensor(value)}, None, batch_idx)
            assert reads == [] or trainer.global_step == 4, f"a host read at step {trainer.global_step}"
    assert trainer.global_step == 4, "found at the first check after the bad step"
    assert (stopped.value.step, stopped.value.reason) == (3, "the training loss is nan")
    epoch_end = StopOnDivergence()  # an epoch of 3 batches, shorter than the interval: checked at its last
    trainer.num_training_batches = 3
    for batch_idx, value in enumerate([1.0, float("nan")]):
        trainer.global_step = batch_idx + 1
        epoch_end.on_train_batch_end(trainer, None, {"loss": torch.tensor(value)}, None, batch_idx)
    trainer.global_step = 3
    with pytest.raises(Diverged, match="the training loss is nan") as stopped:
        epoch_end.on_train_batch_end(trainer, None, {"loss": torch.tensor(1.0)}, None, 2)
    assert stopped.value.step == 2


def test_the_training_loss_mean_is_torchmetrics_weighted_mean_without_a_host_read_a_step(monkeypatch):
    """StepMean gives MeanMetric's weighted mean bit for bit (nan_strategy="disable" would drop the weights)
    and never reads a value on the host while it updates."""
    from torchmetrics import MeanMetric

    from transferlab.classifier.metrics import StepMean

    reads = []
    for name in ("item", "__bool__"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, original=original: reads.append(1) or original(self))
    ours, reference = StepMean(), MeanMetric()
    steps = [(torch.tensor(1.2345678), 16), (torch.tensor(3.3), 5), (torch.tensor(float("nan")), 16)]
    for value, weight in steps[:2]:
        ours.update(value, weight=weight)
    assert reads == []
    for value, weight in steps[:2]:
        reference.update(value, weight=weight)
    assert torch.equal(ours.compute(), reference.compute())
    ours.update(*steps[2])  # a NaN loss: no error here, the mean says NaN (the divergence check stops the run)
    assert torch.isnan(ours.compute())
