"""Sweeps that survive: continue an interrupted sweep, and one summary at its end.

- Continue: every job writes its config's digest (with options.SCHEMA_VERSION) into metrics.json when it starts (`status: running`)
  and keeps it there whatever its end. Running the same `-m` command again with the same
  `hydra.sweep.dir`, a job whose config (less where it writes) matches a completed or diverged job of
  that sweep is skipped, whatever its number now; one whose own directory holds an unfinished run of
  the same config (killed, interrupted, failed) with a `last.ckpt` continues from it; the rest run.
  An Optuna search continues this way too: its seeded sampler proposes the same trials again, and a
  skipped job hands the sweeper its stored value, so the study is rebuilt from the sweep directory.
- `SweepSummary` (a Hydra callback, conf/hydra/default.yaml): after the last job, one line per job
  that did not complete (its overrides and its one-line error), the command that runs what is left
  (the same command: completed jobs are skipped), a `sweep_summary.json`, and exit status 1 when a
  job failed or diverged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from transferlab.files import atomic
from transferlab.options import SCHEMA_VERSION

log = logging.getLogger(__name__)

# Statuses a continued sweep does not run again: the same config would end the same way.
FINAL = ("completed", "diverged")
# Keys that say where a run writes or how it reports, not what it trains.
NOT_THE_EXPERIMENT = ("paths", "resume", "verbose")


def experiment_content(cfg: DictConfig) -> dict:
    """What a job trains: its composed config, interpolations unresolved (so that it does not depend on
    the directory it writes to), less where it writes and how it reports."""
    content = OmegaConf.to_container(cfg, resolve=False)
    for key in NOT_THE_EXPERIMENT:
        content.pop(key, None)
    return content


def config_digest(cfg: DictConfig) -> str:
    """`<schema version>-<digest of what the job trains>`: a new option changes every digest by itself,
    and options.SCHEMA_VERSION marks a change in what the same config trains (nothing to list here)."""
    content = {"schema": SCHEMA_VERSION, "config": experiment_content(cfg)}
    return (
        f"{SCHEMA_VERSION}-{hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:20]}"
    )


def schema1_digest(cfg: DictConfig) -> str:
    """The digest schema 1 wrote (transferlab before options.SCHEMA_VERSION), so that a sweep started then
    and continued now skips its finished jobs. Frozen as it was: it drops the two options schema 1 added
    at a default that trained as before, and reads transferlab's EarlyStopping as Lightning's."""
    content = experiment_content(cfg)
    for section, key, default in (("head", "init", "torch"), ("augment", "rotation_fill", "black")):
        node = content.get("data", {}) if section == "augment" else content
        node = node.get(section) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get(key) == default:
            del node[key]
    for callback in (content.get("callbacks") or {}).values():
        if isinstance(callback, dict) and callback.get("_target_") == "transferlab.callbacks.stops.EarlyStopping":
            callback["_target_"] = "lightning.pytorch.callbacks.EarlyStopping"
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:20]


def job_digests(cfg: DictConfig) -> tuple[str, ...]:
    """The digests a finished job of this config may carry: today's, then schema 1's."""
    return (config_digest(cfg), schema1_digest(cfg))


def read_metrics(path: Path) -> dict:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # none, or half a file from a machine that died mid-write: nothing to trust
    return loaded if isinstance(loaded, dict) else {}


@dataclass(frozen=True)
class Earlier:
    """What an earlier attempt at this job left: a result to reuse, or a checkpoint to continue from."""

    metrics: dict | None = None  # a completed (or diverged) run of this config: skip
    where: Path | None = None
    checkpoint: Path | None = None  # this job's own unfinished run: continue from it


def earlier_attempt(digests: tuple[str, ...], output_dir: Path, sweep_dir: Path) -> Earlier:
    """`digests`: this job's config's (job_digests), today's first."""
    own = read_metrics(output_dir / "metrics.json")
    if own.get("config_digest") in digests:
        if own.get("status") in FINAL:
            return Earlier(own, output_dir)
        last = output_dir / "checkpoints" / "last.ckpt"
        if last.is_file():
            return Earlier(checkpoint=last, where=output_dir)
    for other in sorted(sweep_dir.glob("*/metrics.json")):
        found = read_metrics(other)
        if other.parent != output_dir and found.get("config_digest") in digests and found.get("status") in FINAL:
            return Earlier(found, other.parent)
    return Earlier()


class SweepSummary(Callback):
    """A Hydra callback (hydra.callbacks): the sweep's outcome in one place, after its last job."""

    started: Path | None = None  # this process's sweep directory, from the sweep's start

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        SweepSummary.started = Path(config.hydra.sweep.dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = sorted(p.parent.parent for p in sweep_dir.glob("*/.hydra/config.yaml"))
        outcome = []
        for job in jobs:
            metrics = read_metrics(job / "metrics.json")
            overrides = (
                OmegaConf.load(job / ".hydra" / "overrides.yaml")
                if (job / ".hydra" / "overrides.yaml").is_file()
                else []
            )
            status = metrics.get("status", "unfinished")
            if status == "running":
                status = "unfinished"  # started, never ended: killed with the machine
            outcome.append(
                {"job": job.name, "status": status, "overrides": list(overrides), "error": metrics.get("error")}
            )
        counts: dict[str, int] = {}
        for entry in outcome:
            counts[entry["status"]] = counts.get(entry["status"], 0) + 1
        command = " ".join(
            ["python", "src/train.py", "-m", *config.hydra.overrides.task, f"hydra.sweep.dir={sweep_dir}"]
        )
        summary = {"sweep_dir": str(sweep_dir), "counts": counts, "jobs": outcome, "continue": command}
        with atomic(sweep_dir / "sweep_summary.json") as partial:
            partial.write_text(json.dumps(summary, indent=2) + "\n")
        log.info("sweep %s: %s", sweep_dir, ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
        unfinished = [e for e in outcome if e["status"] not in ("completed", "skipped")]
        for entry in unfinished:
            error = str(entry["error"] or "no metrics.json: killed, or still running").splitlines()[0]
            log.info("  %s %s: %s (%s)", entry["status"], entry["job"], error, " ".join(entry["overrides"]))
        if unfinished:
            log.info(
                "run what is left (completed jobs are skipped, interrupted ones continue; fix failed ones first): %s",
                command,
            )
        if any(e["status"] in ("failed", "diverged") for e in outcome):
            sys.exit(1)


def remove_unstarted_sweep() -> None:
    """After Hydra refused a sweep's command line (a typo in a key or an option, found as the first job's
    config is composed): the sweep directory Hydra made holds its multirun.yaml alone. Remove it, so that
    outputs/multirun lists no sweep that never ran; a directory with a job in it is a sweep's, and stays."""
    sweep_dir = SweepSummary.started
    if sweep_dir is not None and sweep_dir.is_dir() and {p.name for p in sweep_dir.iterdir()} <= {"multirun.yaml"}:
        (sweep_dir / "multirun.yaml").unlink(missing_ok=True)
        sweep_dir.rmdir()
