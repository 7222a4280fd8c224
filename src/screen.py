"""Which backbone for my data? Rank pretrained backbones by a linear probe on frozen features, in minutes.

    python src/screen.py data=digits 'models=[efficientnet_lite0,efficientnet_lite1,resnet50]'
    python src/screen.py data=image_folder data.root=/my/photos top_k=2 sample_size=1000

Takes train.py's overrides (data=, data.*, feature_cache.*, seed) and conf/screen.yaml's keys; writes
screen.md, screen.json and screen.png and prints the train.py sweep to run next
(src/transferlab/screen/screening.py).
"""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from transferlab import console
from transferlab.errors import one_line_errors, run_app
from transferlab.run import resolvers


@hydra.main(version_base="1.3", config_path="../conf", config_name="screen")
@one_line_errors
def main(cfg: DictConfig) -> None:
    from transferlab.screen.screening import screen  # torch: only once the command line is good

    screen(cfg, Path(cfg.paths.output_dir), list(HydraConfig.get().overrides.task))


if __name__ == "__main__":
    console.quiet_upstream()
    resolvers.register()
    run_app(main)
