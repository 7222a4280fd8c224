"""A run killed inside or after any phase and resumed ends exactly where the run that never stopped ends.

The kill is an exception raised at the start of an epoch: what survives is the `last.ckpt` of the
epoch before, as after a SIGKILL anywhere in that epoch (checkpoints are written once per epoch,
atomically; tests/test_train.py kills a real process).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf, open_dict

from transferlab.run.pipeline import train

from conftest import TINY, compose_config

# (strategy overrides, epochs, the epochs at whose start the run is killed)
CASES = {
    "head_only": (["strategy=head_only"], 3, [1]),
    "full_finetune": (["strategy=full_finetune"], 3, [1]),
    "top_blocks_reinit": (["strategy=top_blocks", "strategy.reinit=true"], 3, [1]),
    # Frozen epochs on cached features (one view, so the cache pays off for 2 frozen epochs),
    # killed inside them and after the backbone joined.
    "two_phase": (["strategy=two_phase", "strategy.head_epochs=2", "feature_cache.views=1"], 4, [1, 3]),
    "gradual": (["strategy=gradual", "strategy.every=2", "feature_cache.views=1"], 4, [1, 3]),
    "discriminative": (["strategy=discriminative"], 3, [1]),
    "scratch": (["strategy=scratch"], 3, [1]),
    "auto": (["strategy=auto"], 3, [1]),
    # Its own per-step schedule, killed in each phase (it restarts at the unfreezing); the BatchNorm groups
    # trained while frozen change rate at the unfreezing. fine_tune(2): 3 epochs.
    "fastai_fine_tune": (["strategy=fastai_fine_tune", "strategy.epochs=2"], 3, [1, 2]),
}


class Killed(Exception):
    pass


class KillAt(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise Killed(f"killed at the start of epoch {self.epoch}")


def overrides_of(name: str, colour_folder) -> list[str]:
    strategy, epochs, _ = CASES[name]
    # last.ckpt after every epoch (not at most every 30 s): each kill resumes from the epoch it interrupted.
    every_epoch = "callbacks.last_checkpoint.every_s=0"
    return [
        *TINY,
        f"data.root={colour_folder}",
        "optimizer.lr=0.01",
        f"trainer.max_epochs={epochs}",
        every_epoch,
        *strategy,
    ]


@pytest.fixture(scope="module")
def uninterrupted(colour_folder, tmp_path_factory) -> dict[str, dict]:
    runs = {}
    for name in CASES:
        output_dir = tmp_path_factory.mktemp(f"uninterrupted-{name}")
        runs[name] = train(compose_config(overrides_of(name, colour_folder), output_dir))
    return runs


def killed_then_resumed(overrides: list[str], kill_epoch: int, run_dir) -> dict:
    cfg = compose_config(overrides, run_dir)
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")  # as Hydra saves a run's config
    with open_dict(cfg):  # not in the saved config: the resumed run is not killed again
        cfg.callbacks.kill = {"_target_": f"{__name__}.KillAt", "epoch": kill_epoch}
    with pytest.raises(Killed):
        train(cfg)
    last = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == kill_epoch - 1
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "failed"
    return train(compose_config([f"resume={run_dir}"], run_dir))


@pytest.mark.parametrize(
    "name,kill_epoch", [(name, epoch) for name, (_, _, epochs) in CASES.items() for epoch in epochs]
)
def test_a_resumed_run_ends_where_the_uninterrupted_run_ends(name, kill_epoch, uninterrupted, colour_folder, tmp_path):
    resumed = killed_then_resumed(overrides_of(name, colour_folder), kill_epoch, tmp_path)
    expected = uninterrupted[name]
    for key in ("test/acc", "test/loss", "val/acc_best", "epochs", "model/params/trainable"):
        assert resumed[key] == pytest.approx(expected[key], abs=1e-6), key
    final = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    reference = torch.load(
        expected["best_checkpoint"].replace("best.ckpt", "last.ckpt"), map_location="cpu", weights_only=False
    )["state_dict"]
    for key, tensor in reference.items():
        assert torch.allclose(final[key].float(), tensor.float(), atol=1e-6), key


class LastWritten(Callback):
    """The epoch last.ckpt holds when each epoch ends (checkpoint callbacks run after this one)."""

    instances: list[LastWritten] = []

    def __init__(self, path: str) -> None:
        self.path, self.seen = Path(path), []
        LastWritten.instances.append(self)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seen.append(torch.load(self.path, weights_only=True)["epoch"] if self.path.is_file() else None)


@pytest.mark.parametrize(("every_s", "expected"), [(0, [None, 0, 1, 2]), (3600, [None, 0, 0, 0])])
def test_last_checkpoint_is_written_at_most_every_every_s_and_always_after_the_final_epoch(
    every_s, expected, colour_folder, tmp_path
):
    overrides = [
        *TINY,
        f"data.root={colour_folder}",
        "model=small_cnn",
        "strategy=scratch",
        "trainer.max_epochs=4",
        f"callbacks.last_checkpoint.every_s={every_s}",
        "callbacks.early_stopping=null",
    ]
    cfg = compose_config(overrides, tmp_path)
    last = tmp_path / "checkpoints" / "last.ckpt"
    with open_dict(cfg):
        cfg.callbacks.recorder = {"_target_": "test_resume.LastWritten", "path": str(last)}
    train(cfg)
    assert LastWritten.instances[-1].seen == expected
    assert torch.load(last, weights_only=True)["epoch"] == 3, "the final epoch is always written"
