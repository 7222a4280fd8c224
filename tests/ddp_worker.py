"""One rank of a multi-process run started by tests/test_ddp.py, as torchrun would start it.

    python tests/ddp_worker.py SPEC.json   (env: MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK, LOCAL_RANK)

SPEC: {"runs": [{"name": ..., "overrides": [...]}, ...], "out": DIR}. Each run trains through the
Hydra configs into DIR/<name> (rank 0 writes metrics.json there). Then the guard is checked on
purpose: rank 1 perturbs one parameter and `check_ranks_in_sync` must name it (DIR/guard.txt), and
the ranks report different decisions to `check_same_on_every_rank` (DIR/disagreement.txt).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))  # conftest's compose_config, as the tests use it
from transferlab.distributed import ranks  # noqa: E402
from transferlab.errors import TransferlabError  # noqa: E402
from transferlab.run.pipeline import train  # noqa: E402

from conftest import compose_config  # noqa: E402


def main(spec_path: str) -> None:
    torch.set_num_threads(1)  # two ranks share two cores
    logging.basicConfig(level=logging.INFO)  # the run's log lines (sync BN, DDP rebuilds) in the output
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"])
    for run in spec["runs"]:
        train(compose_config(run["overrides"], out / run["name"]))
    model = nn.Linear(3, 2)
    torch.manual_seed(0)
    nn.init.ones_(model.weight)
    if dist.get_rank() == 1:
        with torch.no_grad():
            model.bias[1] += 1e-6
    try:
        ranks.check_ranks_in_sync(model)
        verdict = "in sync"
    except TransferlabError as error:
        verdict = str(error)
    try:  # a decision each rank made alone (strategy=auto's), made differently
        ranks.check_same_on_every_rank("strategy=auto's choice", ["head_only", "top_blocks"][dist.get_rank()])
        disagreement = "not noticed"
    except TransferlabError as error:
        disagreement = str(error)
    if dist.get_rank() == 0:
        (out / "guard.txt").write_text(verdict)
        (out / "disagreement.txt").write_text(disagreement)
    # Ended here, together, as torch asks of a program that started a process group: left to the
    # interpreter's exit, gloo's threads were once torn down mid-flight ("terminate called without an
    # active exception", exit -6) on one rank of an otherwise passing run.
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
