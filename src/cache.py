"""What the feature and decode caches hold, and how to empty them.

    python src/cache.py                       # sizes under paths.data_dir (data/, or $TRANSFERLAB_DATA)
    python src/cache.py clear=true            # delete both caches
    python src/cache.py clear=decoded_cache   # or only one of them
    python src/cache.py data_dir=/scratch/data
    python src/cache.py data=hymenoptera feature_cache.dir=/scratch/features   # any train.py override

Keys: conf/cache.yaml, whose defaults are the training config's: the caches are where a train.py run
with the same overrides keeps them (src/transferlab/caches/inventory.py).
"""

import hydra
from omegaconf import DictConfig

from transferlab.errors import one_line_errors, run_app
from transferlab.run import resolvers


@hydra.main(version_base="1.3", config_path="../conf", config_name="cache")
@one_line_errors
def main(cfg: DictConfig) -> None:
    from transferlab.caches.inventory import inventory  # torch: only once the command line is good

    print("\n".join(inventory(cfg, cfg["clear"])))  # not cfg.clear: that is the mapping's method


if __name__ == "__main__":
    resolvers.register()
    run_app(main)
