"""Sweeps that survive: a failed job does not stop the others and is summarised; the same command
continues a sweep killed with SIGKILL (completed jobs skipped, the killed one continued from its
last.ckpt) and ends as an uninterrupted sweep, an Optuna search too; a transient failure is retried, a
config error not; a sweep Hydra refused leaves no empty directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, SMALL_RUN, compose_config

SWEEP = SMALL_RUN


def command(*overrides: str) -> list[str]:
    return [sys.executable, str(ROOT / "src" / "train.py"), "-m", *overrides]


def environment() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT / "tests")}


def sweep(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(command(*overrides), env=environment(), cwd=ROOT, capture_output=True, text=True, timeout=600)


def job_metrics(sweep_dir) -> dict[str, dict]:
    return {p.parent.name.split("_")[0]: json.loads(p.read_text()) for p in sweep_dir.glob("*/metrics.json")}


def kill_in_job_1(overrides: list[str], sweep_dir) -> None:
    """Start the sweep, SIGKILL it once job 1 has finished an epoch (in the middle of that job), and check
    what is left: job 0 completed, job 1 running, no job 2."""
    process = subprocess.Popen(
        command(*overrides, f"hydra.sweep.dir={sweep_dir}"),
        env=environment(),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not list(sweep_dir.glob("1_*/checkpoints/last.ckpt")) and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    before = job_metrics(sweep_dir)
    assert before["0"]["status"] == "completed" and before["1"]["status"] == "running" and "2" not in before


def test_a_failed_job_is_summarised_the_others_run_and_the_sweep_exits_1(stop_photos, tmp_path):
    result = sweep(
        *SWEEP,
        f"data.root={stop_photos}",
        "trainer.max_epochs=1",
        "optimizer.lr=0.01,-1",
        f"hydra.sweep.dir={tmp_path}",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output and "Error executing job" not in output
    statuses = {job: m["status"] for job, m in job_metrics(tmp_path).items()}
    assert statuses == {"0": "completed", "1": "failed"}
    assert "sweep " in output and "1 completed, 1 failed" in output
    assert "failed 1_" in output and "optimizer.lr=-1: expected a number > 0" in output
    summary = json.loads((tmp_path / "sweep_summary.json").read_text())
    assert summary["counts"] == {"completed": 1, "failed": 1}
    assert summary["continue"].endswith(f"optimizer.lr=0.01,-1 hydra.sweep.dir={tmp_path}")


def test_a_sweep_killed_mid_job_continues_with_the_same_command_and_ends_as_an_uninterrupted_one(stop_photos, tmp_path):
    overrides = [
        *SWEEP,
        f"data.root={stop_photos}",
        "trainer.max_epochs=6",
        "data.batch_size=2",
        "optimizer.lr=0.003,0.001,0.002",
    ]
    killed_dir, whole_dir = tmp_path / "killed", tmp_path / "whole"
    kill_in_job_1(overrides, killed_dir)
    completed_at = next(killed_dir.glob("0_*/metrics.json")).stat().st_mtime_ns

    again = sweep(*overrides, f"hydra.sweep.dir={killed_dir}")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "job 0: already completed" in again.stdout and "job 1: continues its unfinished run from" in again.stdout
    assert next(killed_dir.glob("0_*/metrics.json")).stat().st_mtime_ns == completed_at, "job 0 did not train again"
    assert sweep(*overrides, f"hydra.sweep.dir={whole_dir}").returncode == 0
    continued, uninterrupted = job_metrics(killed_dir), job_metrics(whole_dir)
    for job in ("0", "1", "2"):
        for key in ("status", "test/acc", "val/acc_best", "epochs", "config_digest"):
            assert continued[job][key] == uninterrupted[job][key], (job, key)


def test_a_transient_failure_is_retried_and_a_config_error_is_not(stop_photos, tmp_path):
    marker = tmp_path / "failed_once"
    flaky = ["+callbacks.flaky._target_=signal_helper.FailOnce", f"+callbacks.flaky.marker={marker}"]
    common = [*SWEEP, f"data.root={stop_photos}", "trainer.max_epochs=1", *flaky]
    retried = sweep(*common, "sweep.retries=1", f"hydra.sweep.dir={tmp_path / 'retried'}")
    assert retried.returncode == 0 and "running the job again (2 of 2)" in retried.stdout + retried.stderr
    assert job_metrics(tmp_path / "retried")["0"]["status"] == "completed"
    marker.unlink()
    once = sweep(*common, "sweep.retries=0", f"hydra.sweep.dir={tmp_path / 'once'}")
    assert once.returncode == 1 and job_metrics(tmp_path / "once")["0"]["status"] == "failed"
    checked = sweep(*common, "sweep.retries=3", "optimizer.lr=-1", f"hydra.sweep.dir={tmp_path / 'checked'}")
    assert checked.returncode == 1 and "running the job again" not in checked.stdout + checked.stderr


def test_a_mistyped_sweep_leaves_no_empty_sweep_directory_and_a_started_sweep_keeps_its_own(tmp_path):
    fresh = tmp_path / "fresh"
    refused = sweep("optimizer.lrr=0.1,0.2", f"hydra.sweep.dir={fresh}")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr + refused.stdout
    assert "error: optimizer.lrr: no such key (did you mean optimizer.lr?)" in refused.stdout + refused.stderr
    assert not fresh.exists(), "Hydra's multirun.yaml alone, for a sweep that never ran, is removed"
    started = tmp_path / "started"
    (started / "0_seed=1").mkdir(parents=True)  # a job of an earlier run of this sweep
    (started / "multirun.yaml").write_text("{}\n")
    assert sweep("optimizer.lrr=0.1,0.2", f"hydra.sweep.dir={started}").returncode == 1
    assert (started / "0_seed=1").is_dir(), "a sweep with a job in it is never removed"


def test_an_optuna_sweep_killed_mid_trial_continues_its_study_and_ends_as_an_uninterrupted_one(stop_photos, tmp_path):
    """The study is kept in the sweep directory: each trial's metrics.json holds its config's digest and
    its value. The seeded sampler proposes the same trials again, so the told ones are read back, not run."""
    import yaml

    overrides = [
        *SWEEP,
        f"data.root={stop_photos}",
        "trainer.max_epochs=6",
        "data.batch_size=2",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.sampler.n_startup_trials=2",
    ]
    killed_dir, whole_dir = tmp_path / "killed", tmp_path / "whole"
    kill_in_job_1(overrides, killed_dir)
    assert not (killed_dir / "optimization_results.yaml").exists()
    told_at = next(killed_dir.glob("0_*/metrics.json")).stat().st_mtime_ns

    again = sweep(*overrides, f"hydra.sweep.dir={killed_dir}")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "job 0: already completed" in again.stdout and "job 1: continues its unfinished run from" in again.stdout
    assert next(killed_dir.glob("0_*/metrics.json")).stat().st_mtime_ns == told_at, "trial 0 was not run again"
    whole = sweep(*overrides, f"hydra.sweep.dir={whole_dir}")
    assert whole.returncode == 0, whole.stderr[-2000:]
    continued, uninterrupted = job_metrics(killed_dir), job_metrics(whole_dir)
    assert sorted(continued) == sorted(uninterrupted) == ["0", "1", "2"]
    for job in ("0", "1", "2"):
        for key in ("test/acc", "val/acc_best", "epochs", "config_digest", "strategy"):
            assert continued[job][key] == uninterrupted[job][key], (job, key)
    results = [yaml.safe_load((d / "optimization_results.yaml").read_text()) for d in (killed_dir, whole_dir)]
    assert results[0]["best_params"] == results[1]["best_params"]
    assert results[0]["best_value"] == results[1]["best_value"]


# What commit 347839d (schema 1, before options.SCHEMA_VERSION) wrote into metrics.json for these configs.
SCHEMA1_DIGESTS = {
    (): "29b290efb85d858e24e1",
    ("strategy=auto",): "1221e4a0a4fdcc27f6cc",
    ("model=resnet18", "strategy=full_finetune", "optimizer.lr=0.01"): "1e60a6a1517c422b873b",
}


@pytest.mark.parametrize("overrides", list(SCHEMA1_DIGESTS))
def test_a_sweep_started_before_the_schema_version_skips_its_finished_jobs(overrides, tmp_path):
    """A job finished by the previous version carries its schema-1 digest: the same config, continued now,
    finds it (and a job of another config does not)."""
    from transferlab.run.sweeps import earlier_attempt, job_digests

    cfg = compose_config(list(overrides), tmp_path / "compose")
    today, schema1 = job_digests(cfg)
    assert schema1 == SCHEMA1_DIGESTS[overrides] and today.startswith("2-") and today != schema1
    sweep = tmp_path / "sweep"
    (sweep / "0").mkdir(parents=True)
    finished = {"status": "completed", "test/acc": 0.9, "config_digest": SCHEMA1_DIGESTS[overrides]}
    (sweep / "0" / "metrics.json").write_text(json.dumps(finished))
    earlier = earlier_attempt(job_digests(cfg), sweep / "1", sweep)
    assert earlier.metrics == finished and earlier.where == sweep / "0"
    other = compose_config([*overrides, "seed=7"], tmp_path / "other")
    assert earlier_attempt(job_digests(other), sweep / "1", sweep).metrics is None


def test_a_new_option_changes_the_digest_with_nothing_to_list_and_so_does_the_schema_version(tmp_path, monkeypatch):
    """No table of options "added at their default": a key the config did not have changes the digest by
    itself; options.SCHEMA_VERSION changes it for the same config; where a run writes does not."""
    from omegaconf import OmegaConf, open_dict

    from transferlab.run import sweeps

    today = compose_config([], tmp_path / "a")
    assert sweeps.config_digest(compose_config(["paths.log_dir=/elsewhere"], tmp_path / "b")) == sweeps.config_digest(
        today
    )
    grown = OmegaConf.create(OmegaConf.to_container(today, resolve=False))
    with open_dict(grown):
        grown.head.new_option = 0.0
    assert sweeps.config_digest(grown) != sweeps.config_digest(today)
    before = sweeps.config_digest(today)
    monkeypatch.setattr(sweeps, "SCHEMA_VERSION", 3)
    assert sweeps.config_digest(today) != before and sweeps.config_digest(today).startswith("3-")
