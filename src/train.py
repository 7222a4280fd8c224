"""Train one transfer-learning experiment (or a sweep with -m). See README.md.

python src/train.py                                   # digits × efficientnet_lite0 × head_only
python src/train.py model=resnet18 strategy=head_only
python src/train.py -m model=small_cnn,efficientnet_lite0 strategy=scratch,head_only
"""

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from transferlab import console
from transferlab.distributed import launch
from transferlab.errors import TransferlabError, run_app
from transferlab.run import resolvers
from transferlab.run.pipeline import Job, RunStopped, train

log = logging.getLogger("transferlab")


def prepare_process(verbose: bool = False) -> None:
    """What this process needs before Lightning runs: the config's resolvers, the DDP launcher's child
    command, upstream noise quieted (unless verbose=true). Again in main: a launcher's job process
    (joblib, submitit) may not run this file's `__main__` block."""
    resolvers.register()
    launch.install()
    console.quiet_upstream(verbose)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """Returns `optimized_metric` (monitor/best: the validation score that chose the checkpoint) for sweepers."""
    prepare_process(cfg.get("verbose", False))
    try:
        return train(cfg, Job.from_hydra())[cfg.optimized_metric]
    except (TransferlabError, RunStopped) as error:
        log.error("%s", error)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the sweep goes on; Hydra reports this run as failed
        sys.exit(error.exit_status if isinstance(error, RunStopped) else 1)


if __name__ == "__main__":
    prepare_process()
    run_app(main)
