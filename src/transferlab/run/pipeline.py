"""train(cfg, job): one run, one way down, in four steps a reader can follow.

    composed config (src/train.py) → resume? continue a sweep? → prepare → fit → evaluate → record

- prepare: check the config once; strategy=auto's probe decides (run/decide.py) on the backbone and
  datamodule the run then trains (built once); the run's saved config becomes what runs; the trainer.
- fit: Lightning's fit; a signal or a diverged loss ends it with its metrics.json (RunStopped).
- evaluate: the best checkpoint on the test split.
- record: metrics.json, TensorBoard's hyperparameters, the result line.

Each step takes what the one before gave it; nothing below climbs back to re-compose the run's config.
Hydra's runtime (output directory, overrides, group choices, job number) is read once, at the entry
point, into a `Job`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
from omegaconf import DictConfig, OmegaConf

from transferlab.callbacks.figures import log_final_hparams
from transferlab.callbacks.stops import Diverged, Stopped, StopSignals, finite_checkpoint
from transferlab.classifier.module import count_parameters
from transferlab.distributed import launch, ranks
from transferlab.errors import TransferlabError
from transferlab.models.weights import read_checkpoint
from transferlab.run import build
from transferlab.run.checks import check_config
from transferlab.run.decide import decide, with_decision
from transferlab.run.job import Job, job_devices, pre_fit_device, resumed_config
from transferlab.run.lr_finder import find_learning_rate
from transferlab.run.results import hyperparameters, run_facts, save_config, write_json
from transferlab.run.sweeps import config_digest, earlier_attempt, job_digests

log = logging.getLogger(__name__)

# A write refused for want of space or permission: the user's to fix, one line naming the path.
UNWRITABLE = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)


class RunStopped(Exception):
    """A run that ended early and said so in its metrics.json: interrupted (a signal, Ctrl-C) or
    diverged. `exit_status` is what the process should exit with."""

    def __init__(self, message: str, exit_status: int) -> None:
        super().__init__(message)
        self.exit_status = exit_status


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
            earlier = earlier_attempt(job_digests(cfg), job.output_dir, job.sweep_dir)
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
            write_json(job.output_dir / "metrics.json", run_facts(cfg, job.choices, "running", config_digest=digest))
        started = time.perf_counter()  # fit time includes auto's probe, compilation and the feature pass
        run = prepare(cfg, job, checkpoint_to_resume)
        parameters = fit(run, job, checkpoint_to_resume, digest)
        fit_seconds = time.perf_counter() - started
        return record(run, job, evaluate(run, job, digest), parameters, fit_seconds, digest)
    except RunStopped:
        raise  # its metrics.json is written
    except Exception as error:
        if not ranks.is_global_zero():
            raise  # under DDP, rank 0 reports
        failed = run_facts(cfg, job.choices, "failed", error=f"{type(error).__name__}: {error}", config_digest=digest)
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


@dataclass
class Prepared:
    """A run ready to fit: its config (auto's choice made), what it trains, and the trainer."""

    cfg: DictConfig
    experiment: build.Experiment
    trainer: L.Trainer
    tuned: dict = field(default_factory=dict)  # tune/lr, when the range test ran

    @property
    def stops(self) -> StopSignals | None:
        return next((c for c in self.trainer.callbacks if isinstance(c, StopSignals)), None)


def prepare(cfg: DictConfig, job: Job, checkpoint_to_resume: Path | None) -> Prepared:
    """The config checked once, auto's decision, the objects of the run built once, and its trainer."""
    check_config(cfg)
    device = pre_fit_device(cfg, job.number)  # the passes before fit run where training will
    L.seed_everything(cfg.seed, workers=True, verbose=cfg.get("verbose", False))
    decided = decide(cfg, job.overrides, device)
    if decided is not None:
        cfg = decided.cfg
        saved = job.output_dir / ".hydra" / "config.yaml"
        if saved.is_file() and ranks.is_global_zero():  # what runs: resume=<run dir> continues with the choice
            save_config(with_decision(OmegaConf.load(saved), cfg), saved)
    run = build.experiment(cfg, decided.built if decided is not None else None)
    if ranks.is_global_zero():
        run.datamodule.log_splits()
    run.module.to(device)
    if cfg.get("compile") and cfg.compile.enabled:
        # In place (nn.Module.compile): state dict keys and checkpoints stay those of the plain model.
        run.module.backbone.compile(backend=cfg.compile.backend, mode=cfg.compile.mode, dynamic=False)
    feature_switch = build.feature_cache(cfg).attach(
        run.module, run.datamodule, run.policy.frozen_backbone_epochs, checkpoint_to_resume
    )
    validation = run.datamodule.has_validation
    placement = {"devices": job_devices(job.number)} if cfg.get("gpu_per_job") else {}
    if not validation:  # data.val_fraction=0: train every epoch, test the last one
        placement["limit_val_batches"] = 0
    run_callbacks = build.callbacks(cfg, run.policy, *feature_switch, validation=validation)
    trainer = build.trainer(cfg, run_callbacks, build.loggers(cfg), **placement)
    prepared = Prepared(cfg, run, trainer)
    if cfg.get("tune") and cfg.tune.lr_find and checkpoint_to_resume is None:  # a resumed run keeps its rate
        options = {k: cfg.tune[k] for k in ("min_lr", "max_lr", "num_training")}
        prepared.tuned = {"tune/lr": find_learning_rate(trainer, run.module, run.datamodule, **options)}
    return prepared


def fit(run: Prepared, job: Job, checkpoint_to_resume: Path | None, digest: str) -> tuple[int, int]:
    """Lightning's fit; under DDP, a check that every rank trained one model. Returns the (trainable,
    total) parameter counts, counted here: testing re-runs the policy's setup, which freezes as at the start."""
    module, trainer = run.experiment.module, run.trainer
    try:
        trainer.fit(module, datamodule=run.experiment.datamodule, ckpt_path=checkpoint_to_resume)
    except BaseException as error:  # Lightning's SIGTERMException and Ctrl-C's exit are SystemExit
        stopped = stopped_early(run.cfg, job, error, run.stops, digest)
        if stopped is None:
            raise
        raise stopped from None
    if trainer.world_size > 1:  # every multi-process run proves its ranks trained one model
        ranks.check_ranks_in_sync(module)
    return count_parameters(module)


def evaluate(run: Prepared, job: Job, digest: str) -> dict:
    """The test metrics of the checkpoint chosen on validation (best.ckpt), or of the last epoch."""
    trainer = run.trainer
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    try:
        module, datamodule = run.experiment.module, run.experiment.datamodule
        return trainer.test(module, datamodule=datamodule, ckpt_path=best or None, verbose=False)[0]
    except BaseException as error:
        stopped = stopped_early(run.cfg, job, error, run.stops, digest)
        if stopped is None:
            raise
        raise stopped from None


def record(
    run: Prepared, job: Job, test_metrics: dict, parameters: tuple[int, int], fit_seconds: float, digest: str
) -> dict:
    """metrics.json, the hyperparameters TensorBoard lists the run by, and the result line."""
    cfg, trainer, module, datamodule = run.cfg, run.trainer, run.experiment.module, run.experiment.datamodule
    validation = datamodule.has_validation
    decision = OmegaConf.to_container(cfg.auto) if cfg.get("auto") else {}
    strategy = "auto" if decision else run.experiment.policy.name
    trainable, total = parameters
    in_sync = {"ddp/world_size": trainer.world_size, "ddp/ranks_in_sync": True} if trainer.world_size > 1 else {}
    metrics = {
        "test/acc": test_metrics["test/acc"],
        "test/loss": test_metrics["test/loss"],
        "test/balanced_acc": test_metrics["test/balanced_acc"],
        "test/macro_f1": test_metrics["test/macro_f1"],
        "val/acc_best": float(module.val_acc_best.compute()) if validation else None,
        # What chose best.ckpt (`monitor`) and its score there: the report and sweepers rank on it.
        "monitor": cfg.get("monitor", "val/acc") if validation else None,
        "monitor/best": monitored_best(trainer) if validation else None,
        "model/params/trainable": trainable,
        "model/params/total": total,
        "time/fit_s": round(fit_seconds, 2),
        "epochs": trainer.current_epoch,
        "model": cfg.model.name,
        "data": job.choices.get("data"),
        "strategy": strategy,
        "seed": cfg.seed,
        "best_checkpoint": trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else "",
        "feature_cache": datamodule.cached_features is not None,
        "status": "completed",
        "config_digest": digest,
        **datamodule.split_sizes(),
        **in_sync,
        **decision,
        **run.tuned,
        **{k: v for k, v in test_metrics.items() if k.count("/") == 2},  # per class: test/f1/<class>
    }
    if trainer.is_global_zero:
        log_final_hparams(
            trainer.loggers,
            hyperparameters(cfg, strategy, job.choices, job.overrides),
            {k: metrics[k] for k in ("test/acc", "val/acc_best") if metrics[k] is not None},
        )
        write_json(job.output_dir / "metrics.json", metrics)
    if validation:
        chosen = f"{metrics['monitor']} {metrics['monitor/best']:.4f}" if metrics["monitor/best"] is not None else "–"
        log.info("test/acc %.4f (the checkpoint of best %s) — %s", metrics["test/acc"], chosen, job.output_dir)
    else:
        log.info("test/acc %.4f (the last epoch's weights; no val split) — %s", metrics["test/acc"], job.output_dir)
    return metrics


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
                cfg, job.choices, "diverged", error=message, epoch=error.epoch + 1, step=error.step,
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
        facts = run_facts(
            cfg, job.choices, "interrupted", error=message, signal=stopped.cause, **place, config_digest=digest
        )
        write_json(metrics_file, facts)
    return RunStopped(message, stopped.exit_status)


def monitored_best(trainer: L.Trainer) -> float | None:
    """The monitored score of the checkpoint that was tested (best.ckpt)."""
    score = trainer.checkpoint_callback.best_model_score if trainer.checkpoint_callback else None
    return float(score) if score is not None else None
