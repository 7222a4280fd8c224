"""DDP under Hydra: the command each extra process runs.

Lightning's DDP launcher starts ranks 1..N-1 by re-running `sys.argv` with
`hydra.run.dir=<run.dir>` appended (lightning/fabric/strategies/launchers/
subprocess_script.py, `_hydra_subprocess_cmd`). Inside a Hydra multirun that
command still holds `-m` and the comma-separated sweep, so every child starts a
sweep of its own, and `run.dir` is the single-run pattern, not this job's sweep
directory (Lightning #11300, #15737). Here a child instead re-runs this job
alone: the job's own overrides, and the job's runtime output directory.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def job_command(local_rank: int) -> tuple[Sequence[str], str]:
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    hydra = HydraConfig.get()
    command = [sys.executable, os.path.abspath(sys.argv[0]), *hydra.overrides.task]
    command += [
        # Quoted: a sweep directory is named after its overrides, so it holds '=' and ','.
        f'hydra.run.dir="{hydra.runtime.output_dir}"',
        f"hydra.job.name={hydra.job.name}_rank{local_rank}",
        "hydra.output_subdir=null",  # rank 0 already saved this job's config
    ]
    return command, get_original_cwd()


def install() -> None:
    """Make Lightning's DDP launchers (Trainer's and Fabric's) start children with `job_command`.
    Both private functions are checked before either is replaced: setting a name a launcher module
    no longer has would add an attribute its code never reads, and children would run the sweep again."""
    from transferlab.internals import FABRIC_HYDRA_COMMAND, TRAINER_HYDRA_COMMAND, require

    launchers = (FABRIC_HYDRA_COMMAND, TRAINER_HYDRA_COMMAND)
    for internal in launchers:
        require(internal)
    for internal in launchers:
        setattr(internal.owner_object(), internal.name, job_command)


LAUNCHER_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def tear_down() -> None:
    """Leave the launching process as it was before a DDP run. Lightning keeps the process
    group and sets the variables above in it; the next job of a sweep, run in the same
    process, would then take itself for a child and never start its own ranks."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for name in LAUNCHER_VARIABLES:
        os.environ.pop(name, None)


def leave_process_group() -> None:
    """At the end of a process started from outside (a torchrun or srun rank): destroy the process group it
    was handed. Left to interpreter exit, NCCL's destructor may abort a rank that succeeded. Once per
    process, after its last run: a process that trains again would need the group again."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
