"""Which process this is, from its environment alone (no torch, no Lightning): a rank started by a
launcher, its index, rank 0, and a run's directory name. Known before any process group exists, and
cheap, so that the config's resolvers (run/resolvers.py) can use them before anything heavy loads."""

from __future__ import annotations

import os
from datetime import datetime


def slurm_tasks() -> bool:
    """This process is one task of a Slurm step that Lightning will treat as a rank (srun, submitit)."""
    if int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return False  # what Lightning's detection needs first: answered without importing Lightning
    from lightning.fabric.plugins.environments import SLURMEnvironment

    return SLURMEnvironment.detect()


def started_externally() -> bool:
    """A rank started by a launcher (Lightning's DDP children and torchrun set LOCAL_RANK; Slurm
    starts every task), rather than the process that launches the ranks itself. Lightning's
    TorchElasticEnvironment.detect() alone would miss its own launcher's children (no TORCHELASTIC_RUN_ID)."""
    return "LOCAL_RANK" in os.environ or slurm_tasks()


def local_rank() -> int:
    """This process's index on its machine: its GPU."""
    if "LOCAL_RANK" in os.environ:
        return int(os.environ["LOCAL_RANK"])
    return int(os.environ["SLURM_LOCALID"]) if slurm_tasks() else 0


def is_global_zero() -> bool:
    """Rank 0 of the whole run (of all machines), known before any process group exists."""
    if "RANK" in os.environ:  # torchrun
        return int(os.environ["RANK"]) == 0
    if slurm_tasks():
        return int(os.environ["SLURM_PROCID"]) == 0
    return int(os.environ.get("NODE_RANK", "0")) == 0 and local_rank() == 0  # Lightning's launcher


def run_stamp() -> str:
    """A single run's directory name: its start time, or, for the tasks of one multi-task Slurm
    step (one run over several processes or nodes), the job and step ids they share."""
    if slurm_tasks():
        name = f"slurm-{os.environ.get('SLURM_JOB_ID', 'job')}.{os.environ.get('SLURM_STEP_ID', '0')}"
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))  # a requeued job starts afresh: its own dir
        return name if not restarts else f"{name}-restart{restarts}"
    return datetime.now().strftime("%Y-%m-%d/%H-%M-%S")
