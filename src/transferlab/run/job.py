"""What a run is given before it starts: Hydra's runtime read once (`Job`), the config of a run to
resume, and the device a job trains on. Light (torch only inside the functions that need it): src/train.py
reads its Job before a run is really built."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from transferlab.distributed import identity
from transferlab.errors import TransferlabError
from transferlab.options import saved_before

if TYPE_CHECKING:
    import torch


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
    from transferlab.models.weights import read_checkpoint  # torch: not before a run is really built

    read_checkpoint(last, "resume")  # cut short or carrying code: one error now, not a traceback in fit
    resumed = OmegaConf.load(saved)
    resumed.resume = str(run_dir)
    if OmegaConf.is_dict(resumed.get("strategy")):  # saved by an earlier version: options as it trained them
        strategy = OmegaConf.to_container(resumed.strategy, resolve=False)
        resumed.strategy = saved_before(strategy, OmegaConf.select(resumed, "trainer.max_epochs"))
    return resumed, last


def job_devices(job_number: int, gpu_count: int | None = None) -> list[int]:
    """The one GPU of a sweep's job n: n mod the number of GPUs (joblib runs jobs side by side)."""
    import torch

    count = torch.cuda.device_count() if gpu_count is None else gpu_count
    if count == 0:
        raise TransferlabError("gpu_per_job=true needs CUDA GPUs; none is visible")
    return [job_number % count]


def pre_fit_device(cfg: DictConfig, job_number: int = 0) -> torch.device:
    """The device training will use, for the passes before fit (auto's probe, the feature cache)."""
    import torch

    if not torch.cuda.is_available() or cfg.trainer.get("accelerator") not in ("auto", "gpu", "cuda"):
        return torch.device("cpu")
    if cfg.get("gpu_per_job"):
        return torch.device("cuda", job_devices(job_number)[0])
    rank = identity.local_rank()  # under DDP: this rank's GPU (LOCAL_RANK, or SLURM_LOCALID under Slurm)
    devices = cfg.trainer.get("devices")
    return torch.device("cuda", int(devices[rank]) if OmegaConf.is_list(devices) else rank)  # trainer.devices=[2,3]
