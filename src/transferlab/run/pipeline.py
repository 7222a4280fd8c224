"""train(cfg, job): one run, one way down.

    compose (src/train.py) → resume? → check → decide (strategy=auto's probe) → build once → fit → test → results

Each step takes what the one before gave it; nothing below climbs back to re-compose the config or
patch what was built. Hydra's runtime (output directory, overrides, group choices, job number) is read
once, at the entry point, into a `Job`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from transferlab.callbacks.figures import log_final_hparams
from transferlab.callbacks.stops import Diverged, Stopped, StopSignals, finite_checkpoint
from transferlab.classifier.module import count_parameters
from transferlab.distributed import launch, ranks
from transferlab.errors import TransferlabError
from transferlab.models.weights import read_checkpoint
from transferlab.run import build
from transferlab.run.checks import check_config
from transferlab.run.decide import decide, decided_config, recipe_changes
from transferlab.run.lr_finder import find_learning_rate
from transferlab.run.sweeps import config_digest, earlier_attempt

log = logging.getLogger(__name__)

# A write refused for want of space or permission: the user's to fix, one line naming the path.
UNWRITABLE = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)


class RunStopped(Exception):
    """A run that ended early and said so in its metrics.json: interrupted (a signal, Ctrl-C) or
    diverged. `exit_status` is what the process should exit with."""

    def __init__(self, message: str, exit_status: int) -> None:
        super().__init__(message)
        self.exit_status = exit_status


@dataclass(frozen=True)
class Job:
    """What Hydra's runtime says of this job: read once, at the entry point."""

    output_dir: Path
    overrides: list[str] = field(default_factory=list)  # the command line's task overrides
    choices: dict[str, str | None] = field(default_factory=dict)  # config group → option (data=digits)
    number: int = 0  # the job's number in a sweep
    sweep_dir: Path | None = None  # a sweep's directory (-m): where its other jobs write

    @classmethod
    def from_hydra(cls) -> Job:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra = HydraConfig.get()
        return cls(
            Path(hydra.runtime.output_dir),
            list(hydra.overrides.task),
            dict(hydra.runtime.choices),
            OmegaConf.select(hydra, "job.num", default=0),  # a single run has no number (missing: ???)
            Path(hydra.sweep.dir) if hydra.mode == RunMode.MULTIRUN else None,
        )


def resumed_config(cfg: DictConfig, job: Job) -> tuple[DictConfig, Path]:
    """The config an interrupted run was started with (auto's choice included), and its last checkpoint."""
    run_dir = Path(cfg.resume)
    saved, last = run_dir / ".hydra" / "config.yaml", run_dir / "checkpoints" / "last.ckpt"
    if not saved.is_file() or not last.is_file():
        raise TransferlabError(
            f"resume={run_dir}: expected a run directory with {saved.relative_to(run_dir)} and {last.relative_to(run_dir)}"
        )
    others = [o for o in job.overrides if not o.startswith("resume=")]
    if others:
        raise TransferlabError(f"resume continues a run with its saved config; drop the other overrides {others}")
    read_checkpoint(last, "resume")  # cut short or carrying code: one error now, not a traceback in fit
    resumed = OmegaConf.load(saved)
    resumed.resume = str(run_dir)
    return resumed, last


def job_devices(job_number: int, gpu_count: int | None = None) -> list[int]:
    """The one GPU of a sweep's job n: n mod the number of GPUs (joblib runs jobs side by side)."""
    count = torch.cuda.device_count() if gpu_count is None else gpu_count
    if count == 0:
        raise TransferlabError("gpu_per_job=true needs CUDA GPUs; none is visible")
    return [job_number % count]


def hyperparameters(cfg: DictConfig, strategy: str, choices: dict, overrides: list[str] | None = None) -> dict:
    """Flat primitives for TensorBoard's HPARAMS tab: what tells runs apart first (model, strategy, data,
    learning rate, seed), then every key the command line set; not the whole config, whose hundred
    columns would push these out of view."""
    root = cfg.data.get("root")
    flat = {
        "model": cfg.model.name,
        "strategy": strategy,
        "data": f"{choices.get('data')} ({Path(str(root)).name})" if root else choices.get("data"),
        "lr": cfg.optimizer.get("lr"),
        "seed": cfg.seed,
        "optimizer": choices.get("optimizer"),
        "scheduler": choices.get("scheduler"),
        "batch_size": cfg.data.get("batch_size"),
        "image_size": cfg.data.get("image_size"),
        "max_epochs": cfg.trainer.get("max_epochs"),
    }
    shown = {"optimizer.lr", "data.batch_size", "data.image_size", "trainer.max_epochs"}  # above by short name
    for override in overrides or []:
        key = override.lstrip("+~").split("=", 1)[0]
        if key in shown or key in ("seed", "resume") or key.startswith(("hydra.", "paths.")) or "." not in key:
            continue  # groups (model=, data=) are above by name
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, (int, float, str, bool)):
            flat.setdefault(key, value)
    return {k: v for k, v in flat.items() if isinstance(v, (int, float, str, bool))}


def pre_fit_device(cfg: DictConfig, job_number: int = 0) -> torch.device:
    """The device training will use, for the passes before fit (auto's probe, the feature cache)."""
    if not torch.cuda.is_available() or cfg.trainer.get("accelerator") not in ("auto", "gpu", "cuda"):
        return torch.device("cpu")
    if cfg.get("gpu_per_job"):
        return torch.device("cuda", job_devices(job_number)[0])
    rank = ranks.local_rank()  # under DDP: this rank's GPU (LOCAL_RANK, or SLURM_LOCALID under Slurm)
    devices = cfg.trainer.get("devices")
    return torch.device("cuda", int(devices[rank]) if OmegaConf.is_list(devices) else rank)  # trainer.devices=[2,3]


def train(cfg: DictConfig, job: Job | None = None) -> dict:
    """One run; a run that fails still leaves a metrics.json saying so (the sweep report lists it)."""
    job = job or Job.from_hydra()
    checkpoint_to_resume = None
    # Not a rank started by Lightning's launcher (LOCAL_RANK), torchrun or Slurm: this process
    # starts (and must clean up after) any DDP run of its own.
    launching_process = not ranks.started_externally()
    digest = config_digest(cfg)
    try:
        if cfg.get("resume"):
            cfg, checkpoint_to_resume = resumed_config(cfg, job)
        elif job.sweep_dir is not None:  # the same -m command again: reuse or continue earlier attempts
            earlier = earlier_attempt(digest, job.output_dir, job.sweep_dir)
            if earlier.metrics is not None:
                log.info("job %d: already %s in %s: skipped", job.number, earlier.metrics["status"], earlier.where)
                if earlier.where != job.output_dir and ranks.is_global_zero():
                    pointer = {**earlier.metrics, "status": "skipped", "same_as": str(earlier.where)}
                    write_json(job.output_dir / "metrics.json", pointer)
                return earlier.metrics
            if earlier.checkpoint is not None:
                log.info("job %d: continues its unfinished run from %s", job.number, earlier.checkpoint)
                read_checkpoint(earlier.checkpoint, "resume")
                checkpoint_to_resume = earlier.checkpoint
        if ranks.is_global_zero():  # what a killed run leaves: its config, matched when the sweep continues
            write_json(job.output_dir / "metrics.json", run_facts(cfg, job, "running", config_digest=digest))
        return fit_and_test(cfg, job, checkpoint_to_resume, digest)
    except RunStopped:
        raise  # its metrics.json is written
    except Exception as error:
        if not ranks.is_global_zero():
            raise  # under DDP, rank 0 reports
        failed = run_facts(cfg, job, "failed", error=f"{type(error).__name__}: {error}", config_digest=digest)
        with contextlib.suppress(OSError):  # the disk that failed the run may refuse this too: said below
            write_json(job.output_dir / "metrics.json", failed)
        if isinstance(error, OSError) and error.errno in UNWRITABLE:
            raise TransferlabError(
                f"cannot write {error.filename or job.output_dir} ({error.strerror}): free space there, or write "
                "runs elsewhere (paths.log_dir=… or TRANSFERLAB_OUTPUTS)"
            ) from None
        raise
    finally:
        if launching_process:
            launch.tear_down()


def run_facts(cfg: DictConfig, job: Job, status: str, **facts) -> dict:
    """A metrics.json for a run that did not complete: its status, what it was, and `facts`."""
    described = {
        "model": cfg.model.get("name"),
        "data": job.choices.get("data"),
        "strategy": job.choices.get("strategy"),
    }
    return {"status": status, **facts, **described, "seed": cfg.seed}


def stopped_early(
    cfg: DictConfig, job: Job, error: BaseException, stops: StopSignals | None, digest: str = ""
) -> RunStopped | None:
    """The RunStopped for a fit that a signal or a diverged loss ended, or a test a signal ended (its
    metrics.json written), or None."""
    metrics_file, checkpoints = job.output_dir / "metrics.json", job.output_dir / "checkpoints"
    if isinstance(error, Diverged):
        last_finite = finite_checkpoint(checkpoints / "last.ckpt", checkpoints / "best.ckpt")
        message = (
            f"diverged at epoch {error.epoch + 1}, step {error.step}: {error.reason}; the learning rate is the "
            f"likely cause (optimizer.lr={cfg.optimizer.get('lr')}): try one 3–10× lower"
        )
        if ranks.is_global_zero():
            facts = run_facts(
                cfg, job, "diverged", error=message, epoch=error.epoch + 1, step=error.step,
                last_finite_checkpoint=str(last_finite) if last_finite else None, config_digest=digest,
            )  # fmt: skip
            write_json(metrics_file, facts)
        return RunStopped(message, 1)
    stopped: Stopped | None = stops.stopped if stops is not None else None
    if stopped is None:
        return None
    resume = f"python src/train.py resume={job.output_dir}"
    if stopped.stage == "test":  # training had finished: its checkpoints are all there
        message = f"{stopped.cause}: stopped while testing, after training had finished; test it with: {resume}"
        place = {"stage": "test", "epoch": stopped.epoch, "resume": resume}
    else:
        where = f"epoch {stopped.epoch + 1}, step {stopped.step}"
        if stopped.checkpoint is not None:
            message = f"{stopped.cause}: stopped at {where} and saved {stopped.checkpoint}; continue with: {resume}"
        else:
            message = f"{stopped.cause}: stopped at {where}; no checkpoint could be saved"
        place = {
            "epoch": stopped.epoch + 1, "step": stopped.step,
            "checkpoint": str(stopped.checkpoint) if stopped.checkpoint else None,
            "resume": resume if stopped.checkpoint else None,
        }  # fmt: skip
    if ranks.is_global_zero():
        facts = run_facts(cfg, job, "interrupted", error=message, signal=stopped.cause, **place, config_digest=digest)
        write_json(metrics_file, facts)
    return RunStopped(message, stopped.exit_status)


def fit_and_test(cfg: DictConfig, job: Job, checkpoint_to_resume: Path | None, digest: str = "") -> dict:
    started = time.perf_counter()  # fit time includes auto's probe, compilation and the feature pass
    check_config(cfg)
    device = pre_fit_device(cfg, job.number)  # the passes before fit run where training will
    L.seed_everything(cfg.seed, workers=True, verbose=cfg.get("verbose", False))
    decision = decide(cfg, device)
    if decision is not None:
        decided = decided_config(cfg, decision, job.overrides)
        log.info(
            "strategy=auto chose %s and trains with its recipe: %s",
            decision.strategy,
            recipe_changes(cfg, decided) or "unchanged",
        )
        cfg = decided
        saved = job.output_dir / ".hydra" / "config.yaml"
        if saved.is_file() and ranks.is_global_zero():  # so that resume=<run dir> continues with the choice
            save_config(decided_config(OmegaConf.load(saved), decision, job.overrides), saved)
        L.seed_everything(cfg.seed, workers=True, verbose=False)  # the run draws what strategy=<choice> alone would
    run = build.experiment(cfg)
    policy, datamodule, module = run.policy, run.datamodule, run.module
    if ranks.is_global_zero():
        datamodule.log_splits()
    module.to(device)
    if cfg.get("compile") and cfg.compile.enabled:
        # In place (nn.Module.compile): state dict keys and checkpoints stay those of the plain model.
        module.backbone.compile(backend=cfg.compile.backend, mode=cfg.compile.mode, dynamic=False)
    feature_switch = build.feature_cache(cfg).attach(
        module, datamodule, policy.frozen_backbone_epochs, checkpoint_to_resume
    )
    placement = {"devices": job_devices(job.number)} if cfg.get("gpu_per_job") else {}
    if not datamodule.has_validation:  # data.val_fraction=0: train every epoch, test the last one
        placement["limit_val_batches"] = 0
    run_callbacks = build.callbacks(cfg, policy, *feature_switch, validation=datamodule.has_validation)
    trainer = build.trainer(cfg, run_callbacks, build.loggers(cfg), **placement)
    tuned = {}
    if cfg.get("tune") and cfg.tune.lr_find and checkpoint_to_resume is None:  # a resumed run keeps its rate
        options = {k: cfg.tune[k] for k in ("min_lr", "max_lr", "num_training")}
        tuned = {"tune/lr": find_learning_rate(trainer, module, datamodule, **options)}

    stops = next((c for c in trainer.callbacks if isinstance(c, StopSignals)), None)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=checkpoint_to_resume)
    except BaseException as error:  # Lightning's SIGTERMException and Ctrl-C's exit are SystemExit
        stopped = stopped_early(cfg, job, error, stops, digest)
        if stopped is None:
            raise
        raise stopped from None
    fit_seconds = time.perf_counter() - started
    in_sync = {}
    if trainer.world_size > 1:  # every multi-process run proves its ranks trained one model
        ranks.check_ranks_in_sync(module)
        in_sync = {"ddp/world_size": trainer.world_size, "ddp/ranks_in_sync": True}
    # Counted now: testing re-runs the policy's setup, which freezes as at the start of training.
    trainable, total = count_parameters(module)
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    try:
        test_metrics = trainer.test(module, datamodule=datamodule, ckpt_path=best or None, verbose=False)[0]
    except BaseException as error:
        stopped = stopped_early(cfg, job, error, stops, digest)
        if stopped is None:
            raise
        raise stopped from None

    decision = OmegaConf.to_container(cfg.auto) if cfg.get("auto") else {}
    strategy = "auto" if decision else policy.name
    metrics = {
        "test/acc": test_metrics["test/acc"],
        "test/loss": test_metrics["test/loss"],
        "test/balanced_acc": test_metrics["test/balanced_acc"],
        "test/macro_f1": test_metrics["test/macro_f1"],
        "val/acc_best": float(module.val_acc_best.compute()) if datamodule.has_validation else None,
        # What chose best.ckpt (`monitor`) and its score there: the report and sweepers rank on it.
        "monitor": cfg.get("monitor", "val/acc") if datamodule.has_validation else None,
        "monitor/best": monitored_best(trainer) if datamodule.has_validation else None,
        "model/params/trainable": trainable,
        "model/params/total": total,
        "time/fit_s": round(fit_seconds, 2),
        "epochs": trainer.current_epoch,
        "model": cfg.model.name,
        "data": job.choices.get("data"),
        "strategy": strategy,
        "seed": cfg.seed,
        "best_checkpoint": best,
        "feature_cache": datamodule.cached_features is not None,
        "status": "completed",
        "config_digest": digest,
        **datamodule.split_sizes(),
        **in_sync,
        **decision,
        **tuned,
        **{k: v for k, v in test_metrics.items() if k.count("/") == 2},  # per class: test/f1/<class>
    }
    if trainer.is_global_zero:
        log_final_hparams(
            trainer.loggers,
            hyperparameters(cfg, strategy, job.choices, job.overrides),
            {k: metrics[k] for k in ("test/acc", "val/acc_best") if metrics[k] is not None},
        )
        write_json(job.output_dir / "metrics.json", metrics)
    if datamodule.has_validation:
        chosen = f"{metrics['monitor']} {metrics['monitor/best']:.4f}" if metrics["monitor/best"] is not None else "–"
        log.info("test/acc %.4f (the checkpoint of best %s) — %s", metrics["test/acc"], chosen, job.output_dir)
    else:
        log.info("test/acc %.4f (the last epoch's weights; no val split) — %s", metrics["test/acc"], job.output_dir)
    return metrics


def monitored_best(trainer: L.Trainer) -> float | None:
    """The monitored score of the checkpoint that was tested (best.ckpt)."""
    score = trainer.checkpoint_callback.best_model_score if trainer.checkpoint_callback else None
    return float(score) if score is not None else None


def write_json(path: Path, content: dict) -> None:
    """Strict JSON, written atomically; a value that is not a finite number is written as null (NaN is
    not JSON, and a file a reader cannot parse is worse than a missing value). A write that fails (a
    full disk) leaves the previous file as it was and no partial one."""
    finite = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in content.items()}
    partial = path.with_name(path.name + ".part")
    try:
        partial.write_text(json.dumps(finite, indent=2, allow_nan=False) + "\n")
        partial.replace(path)
    except OSError:
        partial.unlink(missing_ok=True)
        raise


def save_config(cfg: DictConfig, saved: Path) -> None:
    """The run's config in place of Hydra's copy (atomic: a resume never reads half a file)."""
    partial = saved.with_name(saved.name + ".part")
    OmegaConf.save(cfg, partial)
    partial.replace(saved)
