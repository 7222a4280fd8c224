"""train(cfg): build everything once, fit, test the best checkpoint, write metrics.json."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from transferlab import ddp, parallel
from transferlab.backbones import create_backbone
from transferlab.callbacks import AtomicCheckpointIO, SeedEachBatch, log_final_hparams
from transferlab.classifier import ImageClassifier, count_parameters
from transferlab.errors import TransferlabError
from transferlab.feature_cache import BackToImages, cache_features
from transferlab.sync_batchnorm import TimmAwareSyncBatchNorm
from transferlab.weights import read_checkpoint

log = logging.getLogger(__name__)


def register_resolvers() -> None:
    """Resolvers the Hydra configs use; called before Hydra composes them."""
    if not OmegaConf.has_resolver("coalesce"):
        # `${coalesce:${resume},<new dir>}`: the resumed run's directory, else a new one.
        OmegaConf.register_new_resolver("coalesce", lambda *values: next((v for v in values if v), None))
    if not OmegaConf.has_resolver("path_safe"):
        # Sweep sub-directories are named after the overrides; a path value must not nest them.
        OmegaConf.register_new_resolver("path_safe", lambda name: str(name).replace("/", "_")[:120])
    if not OmegaConf.has_resolver("run_stamp"):
        # A run's directory name: its start time; the Slurm job for the tasks of one multi-task
        # (multi-node) run, which must all agree on it and may start seconds apart.
        OmegaConf.register_new_resolver("run_stamp", parallel.run_stamp, use_cache=True)
    if not OmegaConf.has_resolver("config_subdir"):
        # A resumed run keeps the config it was started with in .hydra/.
        OmegaConf.register_new_resolver("config_subdir", lambda resume: ".hydra/resumed" if resume else ".hydra")


def resumed_config(cfg: DictConfig) -> tuple[DictConfig, Path]:
    """The config an interrupted run was started with, and its last checkpoint."""
    run_dir = Path(cfg.resume)
    saved, last = run_dir / ".hydra" / "config.yaml", run_dir / "checkpoints" / "last.ckpt"
    if not saved.is_file() or not last.is_file():
        raise TransferlabError(f"resume={run_dir}: expected a run directory with {saved.relative_to(run_dir)} and {last.relative_to(run_dir)}")
    others = [o for o in HydraConfig.get().overrides.task if not o.startswith("resume=")]
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


def hyperparameters(cfg: DictConfig, strategy: str) -> dict:
    """Flat primitives for TensorBoard's hparams tab."""
    choices = HydraConfig.get().runtime.choices
    flat = {"model": cfg.model.name, "data": choices.get("data"), "strategy": strategy,
            "optimizer": choices.get("optimizer"), "scheduler": choices.get("scheduler"), "seed": cfg.seed}
    for section in ("model", "strategy", "optimizer", "data"):
        for key, value in OmegaConf.to_container(cfg[section], resolve=True).items():
            if not key.startswith("_") and isinstance(value, (int, float, str, bool)):
                flat[f"{section}.{key}"] = value
    return flat


def train(cfg: DictConfig) -> dict:
    """One run; a run that fails still leaves a metrics.json saying so (the sweep report lists it)."""
    checkpoint_to_resume = None
    if cfg.get("resume"):
        cfg, checkpoint_to_resume = resumed_config(cfg)
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    # Not a rank started by Lightning's launcher (LOCAL_RANK), torchrun or Slurm: this process
    # starts (and must clean up after) any DDP run of its own.
    launching_process = not parallel.started_externally()
    try:
        return fit_and_test(cfg, output_dir, checkpoint_to_resume)
    except Exception as error:
        if not parallel.is_global_zero():
            raise  # under DDP, rank 0 reports
        choices = HydraConfig.get().runtime.choices
        failed = {"status": "failed", "error": f"{type(error).__name__}: {error}", "model": cfg.model.get("name"),
                  "data": choices.get("data"), "strategy": choices.get("strategy"), "seed": cfg.seed}
        (output_dir / "metrics.json").write_text(json.dumps(failed, indent=2) + "\n")
        raise
    finally:
        if launching_process:
            ddp.tear_down()


def features_pay_off(frozen_epochs: int | None, views: int) -> bool:
    """Cached features cost one frozen pass per view: they pay off when the backbone stays frozen
    for more epochs than that (head_only: the whole run). two_phase's default 2 head epochs with
    2 augmented views would do as many passes plus a loader switch: no faster (digits: 138 s vs 131 s,
    measured on the earlier EfficientNet-Lite network)."""
    return frozen_epochs is None or frozen_epochs > views


def pre_fit_device(cfg: DictConfig) -> torch.device:
    """The device training will use, for the passes before fit (auto's probe, the feature cache)."""
    if not torch.cuda.is_available() or cfg.trainer.get("accelerator") not in ("auto", "gpu", "cuda"):
        return torch.device("cpu")
    if cfg.get("gpu_per_job"):
        return torch.device("cuda", job_devices(HydraConfig.get().job.num)[0])
    rank = parallel.local_rank()  # under DDP: this rank's GPU (LOCAL_RANK, or SLURM_LOCALID under Slurm)
    devices = cfg.trainer.get("devices")
    return torch.device("cuda", int(devices[rank]) if OmegaConf.is_list(devices) else rank)  # trainer.devices=[2,3]


def prepare_feature_cache(cfg: DictConfig, policy, module: ImageClassifier, datamodule, checkpoint: Path | None) -> list:
    """Cache the frozen backbone's features when that pays off; returns the callbacks it needs."""
    cache, frozen_epochs = cfg.get("feature_cache") or {}, policy.frozen_backbone_epochs
    views = cache.get("views", 1) if datamodule.augment.enabled else 1
    if (not cache.get("enabled") or not features_pay_off(frozen_epochs, views)
            or checkpoint_to_resume_is_past(checkpoint, frozen_epochs)):
        return []
    cache_features(module, datamodule, views=cache.views, directory=cache.get("dir"), until_epoch=frozen_epochs)
    # Partly frozen runs (two_phase): new loaders, over images, when the backbone starts training.
    return [] if frozen_epochs is None else [BackToImages(frozen_epochs)]


def checkpoint_to_resume_is_past(checkpoint: Path | None, frozen_epochs: int | None) -> bool:
    """Whether a resumed run starts after the backbone's frozen epochs (cached features unused)."""
    if checkpoint is None or frozen_epochs is None:
        return False
    saved_epoch = read_checkpoint(checkpoint, "resume")["epoch"]
    return saved_epoch + 1 >= frozen_epochs  # `epoch` is the last finished one


def fit_and_test(cfg: DictConfig, output_dir: Path, checkpoint_to_resume: Path | None) -> dict:
    epochs = cfg.trainer.get("max_epochs")
    if epochs is not None and (epochs == 0 or epochs < -1):  # -1: Lightning's "until max_steps"
        raise TransferlabError(f"trainer.max_epochs={epochs}: train at least one epoch (a run without one has no "
                               f"validation score and no checkpoint to test)")
    L.seed_everything(cfg.seed, workers=True)

    policy = instantiate(cfg.strategy)
    pretrained = bool(cfg.model.pretrained) and policy.uses_pretrained_weights
    if cfg.model.pretrained and not pretrained:
        log.info("strategy %s trains from random weights: no pretrained weights are loaded", type(policy).__name__)
    model_spec = {k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if k != "dropout"}
    model_spec.update(pretrained=pretrained, weights=cfg.model.weights if pretrained else None)
    if "aux_weight" in model_spec and policy.frozen_backbone_epochs != 0:
        # Inception's auxiliary classifier only runs while the whole backbone is in train mode from the
        # first step: a backbone frozen at first (head_only; two_phase and gradual, whose first epochs may
        # run on cached features) would leave it without gradients (an error under DDP).
        model_spec["aux_weight"] = 0.0
    backbone = create_backbone(**model_spec)
    if not pretrained and policy.uses_pretrained_weights and policy.name != "full_finetune":
        log.warning("strategy %s freezes parts of a randomly initialised %s", policy.name, cfg.model.name)

    datamodule = instantiate(cfg.data, data_config=backbone.data_config, _convert_="object")
    datamodule.prepare_data()
    datamodule.setup("fit")

    module = ImageClassifier(
        model=model_spec,
        num_classes=datamodule.num_classes,
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True) if cfg.get("scheduler") else None,
        class_names=datamodule.class_names,
        data_config=datamodule.data_config.to_dict(),
        dropout=cfg.model.dropout,
        channels_last=cfg.channels_last,
        backbone=backbone,
    )
    started = time.perf_counter()  # fit time includes auto's probe, compilation and the feature pass
    module.to(pre_fit_device(cfg))  # the passes before fit run where training will
    policy.prepare(module, datamodule)  # strategy=auto decides here, so that head_only gets the cache
    if cfg.get("compile") and cfg.compile.enabled:
        # In place (nn.Module.compile): state dict keys and checkpoints stay those of the plain model.
        module.backbone.compile(backend=cfg.compile.backend, mode=cfg.compile.mode, dynamic=False)
    feature_switch = prepare_feature_cache(cfg, policy, module, datamodule, checkpoint_to_resume)
    callbacks = [policy, SeedEachBatch(cfg.seed), *feature_switch,
                 *(instantiate(c) for c in (cfg.get("callbacks") or {}).values())]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    placement = {"devices": job_devices(HydraConfig.get().job.num)} if cfg.get("gpu_per_job") else {}
    # trainer.sync_batchnorm, timm-aware and on CPU too (Lightning's drops timm's fused activations).
    plugins = [AtomicCheckpointIO(), *([TimmAwareSyncBatchNorm()] if cfg.trainer.get("sync_batchnorm") else [])]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers, plugins=plugins,
                                     sync_batchnorm=False, **placement)

    trainer.fit(module, datamodule=datamodule, ckpt_path=checkpoint_to_resume)
    fit_seconds = time.perf_counter() - started
    in_sync = {}
    if trainer.world_size > 1:  # every multi-process run proves its ranks trained one model
        parallel.check_ranks_in_sync(module)
        in_sync = {"ddp/world_size": trainer.world_size, "ddp/ranks_in_sync": True}
    # Counted now: testing re-runs the policy's setup, which freezes as at the start of training.
    trainable, total = count_parameters(module)
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    test_metrics = trainer.test(module, datamodule=datamodule, ckpt_path=best or None, verbose=False)[0]

    metrics = {
        "test/acc": test_metrics["test/acc"],
        "test/loss": test_metrics["test/loss"],
        "val/acc_best": float(module.val_acc_best.compute()),
        "model/params/trainable": trainable,
        "model/params/total": total,
        "time/fit_s": round(fit_seconds, 2),
        "epochs": trainer.current_epoch,
        "model": cfg.model.name,
        "data": HydraConfig.get().runtime.choices.get("data"),
        "strategy": policy.name,
        "seed": cfg.seed,
        "best_checkpoint": best,
        "feature_cache": bool(datamodule.feature_views),
        "status": "completed",
        **datamodule.split_sizes(),
        **in_sync,
        **getattr(policy, "report", {}),
        **{k: v for k, v in test_metrics.items() if k.count("/") == 2},  # per class: test/f1/<class>
    }
    if trainer.is_global_zero:
        log_final_hparams(trainer.loggers, hyperparameters(cfg, policy.name), {k: metrics[k] for k in ("test/acc", "val/acc_best")})
        # Strict JSON: a value that is not a finite number would make the file unreadable to JSON parsers.
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    log.info("test/acc %.4f (best val/acc %.4f) — %s", metrics["test/acc"], metrics["val/acc_best"], output_dir)
    return metrics
