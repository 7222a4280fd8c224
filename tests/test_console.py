"""What a run prints: one line per epoch (console and train.log), no upstream noise, no bar in a pipe."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from transferlab.callbacks.progress import EpochLine
from transferlab.console import quiet_upstream

from conftest import ROOT, TINY, compose_config

EPOCH_LINE = re.compile(r"epoch (\d+)/(\d+)  train loss (\S+) acc (\S+)  val loss (\S+) acc (\S+)  lr (\S+)  (\S+) s$")
# TINY without its progress bar switch: these runs get the default, which follows the terminal.
TINY_DEFAULT_BAR = [option for option in TINY if not option.startswith("trainer.enable_progress_bar=")]


@pytest.fixture(scope="module")
def piped_run(colour_folder, tmp_path_factory) -> tuple[Path, str]:
    """src/train.py with stdout and stderr captured (not a terminal), every warning left visible."""
    log_dir = tmp_path_factory.mktemp("piped_run")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONWARNINGS"}
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "src" / "train.py"),
            *TINY_DEFAULT_BAR,
            f"data.root={colour_folder}",
            f"paths.log_dir={log_dir}",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (run_dir,) = log_dir.glob("runs/*/*")  # outputs/runs/<date>/<time>_<overrides>
    return run_dir, result.stdout + result.stderr


def test_a_runs_directory_and_so_its_tensorboard_run_are_named_after_its_overrides(piped_run):
    run_dir, _ = piped_run
    stamp, _, overrides = run_dir.name.partition("_")
    assert re.fullmatch(r"\d\d-\d\d-\d\d", stamp)
    # Hydra's override_dirname, sorted, with "-" and "+" for "=" and ",", "/" made "_", paths.log_dir left out:
    # a name a command line takes back unquoted (resume=DIR).
    assert overrides.startswith("data.batch_size-16+data.image_size-32+data.num_workers-0+data.root-_")
    assert not set("=,[]'\"/ ") & set(overrides)
    assert "paths.log_dir" not in overrides and len(overrides) <= 120
    assert list((run_dir / "tensorboard").glob("events.out.tfevents*"))


def test_train_log_has_one_line_per_epoch_with_that_epochs_metrics(piped_run):
    run_dir, output = piped_run
    logged = [EPOCH_LINE.search(line) for line in (run_dir / "train.log").read_text().splitlines()]
    lines = [match for match in logged if match]
    assert [(m[1], m[2]) for m in lines] == [("1", "2"), ("2", "2")]
    assert all(m[0] in output for m in lines), "the same lines are printed"

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    for column, tag in ((3, "train/loss"), (4, "train/acc"), (5, "val/loss"), (6, "val/acc")):
        per_epoch = [f"{event.value:.3f}" for event in events.Scalars(tag)]
        assert [m[column] for m in lines] == per_epoch, tag
    lr_tag = next(tag for tag in events.Tags()["scalars"] if tag.startswith("lr-"))
    assert [m[7] for m in lines] == [f"{event.value:.1e}" for event in events.Scalars(lr_tag)]
    assert float(lines[1][7]) < float(lines[0][7]), "cosine schedule: each line shows its own epoch's lr"


def test_known_upstream_noise_is_not_printed_and_the_device_is(piped_run):
    run_dir, output = piped_run
    for noise in (
        "LeafSpec",
        "in eval mode at the start of training",
        "💡 Tip",
        "litlogger",
        "litmodels",
        "TPU available",
        "Trainer already configured with model summary",
        "Restoring states from",
        # verbose=true brings these back; transferlab's own lines say the device and the checkpoint.
        "GPU available:",
        "Loaded model weights from the checkpoint at",
        "Seed set to",
        "Total params",
        "[INFO]",  # the console shows messages alone; train.log keeps time and logger
    ):
        assert noise not in output, noise
    assert re.search(r"training 2 epochs on cpu; run directory ", output)
    assert output.count(": 3 classes\n") == 1 and len(re.findall(r"^  train +[\d,]+ images", output, re.M)) == 1, (
        "the split lines, once"
    )
    assert "\r" not in output and "\r" not in (run_dir / "train.log").read_text(), "no carriage returns in logs"
    assert "[transferlab.callbacks.progress][INFO] - training 2 epochs on cpu" in (run_dir / "train.log").read_text()


def test_no_progress_bar_when_stdout_is_not_a_terminal(piped_run):
    _, output = piped_run
    assert "it/s" not in output and not re.search(r"Epoch \d+/\d+", output), (
        "Lightning's bar says 'Epoch 0/1 ━━━ … it/s'"
    )


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stdout", "override", "expected"),
    [
        (_Terminal(), [], True),
        (io.StringIO(), [], False),
        (io.StringIO(), ["trainer.enable_progress_bar=true"], True),
        (_Terminal(), ["trainer.enable_progress_bar=false"], False),
    ],
)
def test_the_progress_bar_follows_the_terminal_unless_set(
    stdout, override, expected, colour_folder, tmp_path, monkeypatch
):
    cfg = compose_config([*TINY_DEFAULT_BAR, f"data.root={colour_folder}", *override], tmp_path)
    monkeypatch.setattr(sys, "stdout", stdout)
    trainer = instantiate(cfg.trainer, logger=False)
    assert (trainer.progress_bar_callback is not None) is expected


def test_quiet_upstream_drops_only_the_named_messages():
    quiet_upstream()
    filters = list(warnings.filters)
    quiet_upstream()
    assert warnings.filters == filters, "idempotent"

    def shown(message: str, category: type[Warning], module: str) -> bool:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            quiet_upstream()
            warnings.warn_explicit(message, category, f"{module.replace('.', '/')}.py", 1, module=module)
        return bool(caught)

    eval_mode = "Found 274 module(s) in eval mode at the start of training. This may lead to unexpected behavior"
    assert not shown(eval_mode, UserWarning, "lightning.pytorch.loops.fit_loop")
    assert shown(eval_mode, UserWarning, "somebody_else")
    assert not shown(
        "`isinstance(treespec, LeafSpec)` is deprecated, use …", FutureWarning, "lightning.pytorch.utilities._pytree"
    )
    assert shown(
        "`isinstance(treespec, LeafSpec)` is deprecated, use …", FutureWarning, "transferlab.strategies.policies"
    )
    assert shown(
        "The 'train_dataloader' does not have many workers", UserWarning, "lightning.pytorch.trainer.connectors"
    )

    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    assert len(rank_zero.filters) == 1, "idempotent"
    kept = [
        message
        for message in (
            "💡 Tip: try installing [litlogger]",
            "TPU available: False, using: 0 TPU cores",
            "TPU available: True, using: 8 TPU cores",
            "GPU available: True (cuda), used: True",
            "`Trainer.fit` stopped: `max_epochs=2` reached.",
            "`Trainer.fit` stopped: `max_steps=100` reached.",
        )
        if rank_zero.filter(logging.LogRecord(rank_zero.name, logging.INFO, "", 0, message, None, None))
    ]
    assert kept == ["TPU available: True, using: 8 TPU cores", "`Trainer.fit` stopped: `max_steps=100` reached."]
    quiet_upstream(verbose=True)  # verbose=true: every line again
    try:
        assert rank_zero.filter(
            logging.LogRecord(rank_zero.name, logging.INFO, "", 0, "GPU available: False, used: False", None, None)
        )
    finally:
        quiet_upstream()


def test_verbose_brings_back_the_model_summary(colour_folder, tmp_path):
    from lightning.pytorch.callbacks import ModelSummary

    from transferlab.run import build

    for verbose, expected in ((False, False), (True, True)):
        cfg = compose_config([*TINY, f"data.root={colour_folder}", f"verbose={verbose}"], tmp_path)
        trainer = build.trainer(cfg, build.callbacks(cfg, build.policy(cfg)), [])
        assert any(isinstance(c, ModelSummary) for c in trainer.callbacks) is expected


class _Tiny(L.LightningModule):
    """Logs what ImageClassifier logs; SGD at 0.1, halved after every epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 2)

    def _step(self, batch, split: str, **options) -> torch.Tensor:
        x, y = batch
        logits = self.layer(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        self.log(f"{split}/loss", loss, on_epoch=True, **options)
        self.log(f"{split}/acc", (logits.argmax(1) == y).float().mean(), on_epoch=True, **options)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train", on_step=False)

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.5)}


def test_an_epoch_without_validation_shows_no_stale_values(caplog, tmp_path):
    data = torch.utils.data.TensorDataset(torch.randn(8, 2), torch.randint(0, 2, (8,)))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    trainer = L.Trainer(
        max_epochs=4,
        check_val_every_n_epoch=2,
        callbacks=[EpochLine()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    with caplog.at_level(logging.INFO, logger="transferlab"):
        trainer.fit(_Tiny(), loader, loader)
    lines = [record.getMessage() for record in caplog.records if record.getMessage().startswith("epoch ")]
    assert [line.split("  ")[0] for line in lines] == ["epoch 1/4", "epoch 2/4", "epoch 3/4", "epoch 4/4"]
    assert ["val loss" in line for line in lines] == [False, True, False, True]
    assert [line.split("  lr ")[1].split()[0] for line in lines] == [f"{0.1 / 2**n:.1e}" for n in range(4)]
    assert (
        lines[3].split("  ")[2]
        == f"val loss {trainer.callback_metrics['val/loss']:.3f} acc {trainer.callback_metrics['val/acc']:.3f}"
    )


def test_the_first_line_says_the_epochs_the_device_and_the_run_directory(caplog, tmp_path):
    data = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.randn(8, 2), torch.randint(0, 2, (8,))), batch_size=4
    )
    options = dict(
        callbacks=[EpochLine()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    first = L.Trainer(max_epochs=2, **options)
    with caplog.at_level(logging.INFO, logger="transferlab"):
        first.fit(_Tiny(), data, data)
        first.save_checkpoint(tmp_path / "last.ckpt")
        L.Trainer(max_epochs=3, **options).fit(_Tiny(), data, data, ckpt_path=tmp_path / "last.ckpt")
    starts = [record.getMessage() for record in caplog.records if "run directory" in record.getMessage()]
    assert starts == [
        f"training 2 epochs on cpu; run directory {tmp_path}",
        f"resuming at epoch 3 of 3 on cpu; run directory {tmp_path}",
    ]


def test_a_long_step_logs_count_rate_and_time_left_every_tenth_and_a_short_one_nothing(monkeypatch, caplog):
    from transferlab import console

    clock = iter(float(t) for t in range(0, 1000))
    monkeypatch.setattr(console.time, "perf_counter", lambda: next(clock))  # one second a call
    monkeypatch.setattr(console, "stdout_is_terminal", lambda: False)
    caplog.set_level(logging.INFO, logger="transferlab")
    progress = console.Progress("feature pass train", 200, "images", quiet_s=3.0)
    for _ in range(100):
        progress.update(2)
    progress.close()
    lines = [r.getMessage() for r in caplog.records if getattr(r, "progress", False)]
    # Calls 1, 2 (the 10 % and 20 % marks) come before 3 s: silent; then one line per tenth, never at 100 %.
    assert len(lines) == 7 and all("\r" not in line for line in lines)
    assert lines[0] == "feature pass train: 60/200 images (30 %), 20.0 images/s, 7 s left"
    assert lines[-1].startswith("feature pass train: 180/200 images (90 %)")

    caplog.clear()
    short = console.Progress("feature pass val", 10, "images", quiet_s=1e9)
    for _ in range(10):
        short.update()
    assert not caplog.records, "a step shorter than quiet_s says nothing"


def test_progress_lines_stay_off_a_terminals_console_and_go_to_the_log_file(monkeypatch):
    from transferlab import console

    line = logging.LogRecord("transferlab", logging.INFO, "", 0, "epoch 1/3: 10/100 batches", None, None)
    line.progress = True
    plain = logging.LogRecord("transferlab", logging.INFO, "", 0, "epoch 1/3  train loss 0.7", None, None)
    monkeypatch.setattr(console, "stdout_is_terminal", lambda: True)
    on_terminal = console.HideProgressOnTerminal()
    assert not on_terminal.filter(line) and on_terminal.filter(plain)
    monkeypatch.setattr(console, "stdout_is_terminal", lambda: False)
    assert console.HideProgressOnTerminal().filter(line)
    assert (
        console.duration(42) == "42 s"
        and console.duration(185) == "3 min 5 s"
        and console.duration(4320) == "1 h 12 min"
    )
