"""Train one transfer-learning experiment (or a sweep with -m). See README.md.

python src/train.py                                   # digits × efficientnet_lite0 × head_only
python src/train.py model=resnet18 strategy=head_only
python src/train.py -m model=small_cnn,efficientnet_lite0 strategy=scratch,head_only

Only light modules load before a run is really built: `--help`, `--cfg job`, a mistyped key and a bad
value answer before torch and Lightning are imported (run/pipeline.py imports them).
"""

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from transferlab import console
from transferlab.errors import TransferlabError, run_app
from transferlab.run import resolvers, sweeps
from transferlab.run.checks import check_values
from transferlab.run.job import Job
from transferlab.run.results import run_facts, write_json

log = logging.getLogger("transferlab")


def prepare_process(verbose: bool = False) -> None:
    """What this process needs before Hydra composes: the config's resolvers, upstream noise quieted
    (unless verbose=true). Again in main: a launcher's job process (joblib, submitit) may not run this
    file's `__main__` block."""
    resolvers.register()
    console.quiet_upstream(verbose)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """Returns `optimized_metric` (monitor/best: the validation score that chose the checkpoint) for
    sweepers. In a sweep a job that fails returns NaN rather than raising: the other jobs run, and the
    sweep's summary (run/sweeps.py) lists it and sets the exit status."""
    prepare_process(cfg.get("verbose", False))
    sweeping = HydraConfig.get().mode == RunMode.MULTIRUN
    job = Job.from_hydra()
    try:
        check_values(cfg)  # the rules of options.py: a bad value answers before torch loads
    except TransferlabError as error:
        refused = run_facts(cfg, job.choices, "failed", error=str(error), config_digest=sweeps.config_digest(cfg))
        write_json(job.output_dir / "metrics.json", refused)
        log.error("%s", error)
        if sweeping:
            return float("nan")
        sys.exit(1)
    from transferlab.distributed import launch
    from transferlab.run.pipeline import RunStopped, train

    launch.install()  # the DDP launcher's child command, before Lightning starts any rank
    retries = int(cfg.get("sweep", {}).get("retries", 0)) if sweeping else 0
    for attempt in range(retries + 1):
        try:
            value = train(cfg, job).get(cfg.optimized_metric)
            return float("nan") if value is None else value
        except (TransferlabError, RunStopped) as error:  # the user's to fix: running again changes nothing
            log.error("%s", error)
            if sweeping:
                return float("nan")
            sys.exit(error.exit_status if isinstance(error, RunStopped) else 1)
        except Exception as error:  # noqa: BLE001 - perhaps transient: out of memory, a lost worker
            if attempt < retries:
                log.warning(
                    "%s: %s; running the job again (%d of %d)", type(error).__name__, error, attempt + 2, retries + 1
                )
                continue
            if not sweeping:
                raise
            log.error("%s: %s", type(error).__name__, error)
            return float("nan")
    return float("nan")


if __name__ == "__main__":
    prepare_process()
    run_app(main, on_refusal=sweeps.remove_unstarted_sweep)
    if "transferlab.distributed.launch" in sys.modules:  # a run was built (not --help, not a refusal)
        from transferlab.distributed import launch

        # Reached after a clean end only: a failed rank exits without waiting on peers that may be gone.
        launch.leave_process_group()  # a torchrun or Slurm rank's group (transferlab's own launches tear theirs down)
