"""Lightning callbacks of a run besides its freeze policy (strategies/): figures, checkpoints, seeding, progress."""

from transferlab.callbacks.checkpoints import AtomicCheckpointIO, LastCheckpoint
from transferlab.callbacks.figures import EvaluationFigures, SampleGrid, log_final_hparams, tensorboard
from transferlab.callbacks.progress import EpochLine
from transferlab.callbacks.seeding import SeedEachBatch

__all__ = [
    "AtomicCheckpointIO",
    "EpochLine",
    "EvaluationFigures",
    "LastCheckpoint",
    "SampleGrid",
    "SeedEachBatch",
    "log_final_hparams",
    "tensorboard",
]
