"""Describe a model without training it, or list every model name.

    python src/describe.py model=vgg16_bn model.pretrained=false
    python src/describe.py model=resnet18 model.pretrained=false strategy=top_blocks
    python src/describe.py list=true        # or +list=true

Keys: conf/describe.yaml, whose defaults are the training config's: it takes every src/train.py
override and describes what training would build (src/transferlab/run/describe.py). With
model.pretrained=false it never touches the network.
"""

import sys

import hydra
from omegaconf import DictConfig

from transferlab import console
from transferlab.errors import one_line_errors, run_app
from transferlab.run import resolvers
from transferlab.run.checks import check_values


@hydra.main(version_base="1.3", config_path="../conf", config_name="describe")
@one_line_errors
def main(cfg: DictConfig) -> None:
    check_values(cfg)  # options.RULES, before torch loads
    from transferlab.run.describe import describe, list_models  # torch: only once the command line is good

    print(list_models() if cfg.list else describe(cfg))


if __name__ == "__main__":
    console.quiet_upstream()
    resolvers.register()
    # +list=true, the spelling from before conf/describe.yaml declared list, still lists (Hydra refuses
    # to append a key that exists).
    sys.argv = [argument.removeprefix("+") if argument.startswith("+list=") else argument for argument in sys.argv]
    run_app(main)
