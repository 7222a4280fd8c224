"""What a run prints: upstream noise filtered in one place, one line per epoch, the progress bar's rule.

- `quiet_upstream()`: every script calls it once, before Lightning runs. It hides the warnings and
  Lightning info lines that say nothing a user of this project can act on; each filter below says
  why hiding it is safe. Filters match one message (and its category or logger), never a whole
  category or library.
- `EpochLine`: a callback (conf/callbacks/default.yaml) that logs one line per epoch through the
  `transferlab` logger, so Hydra's job logging puts it on the console and in the run's train.log:
      epoch 2/2  train loss 0.713 acc 0.796  val loss 0.512 acc 0.864  lr 1.5e-03  2.2 s
- `stdout_is_terminal()`: whether the progress bar is on (conf/trainer/default.yaml). In a file or a
  CI log a bar is a wall of redrawn lines; the epoch lines say the same there.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import warnings

import lightning as L

log = logging.getLogger(__name__)

# (message regex, category, module regex of the code the warning points at).
# The module regex matches from the start of the module name, so "lightning\.pytorch" is the package.
_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    # Frozen backbones are in eval mode on purpose (frozen BatchNorm keeps its pretrained
    # statistics; src/transferlab/freeze.py), so "N modules in eval mode at the start of training"
    # is true of every strategy that freezes, and intended. Matched in Lightning's code only.
    (r"Found \d+ module\(s\) in eval mode at the start of training", UserWarning, r"lightning\.pytorch"),
    # Lightning's own pytree helper (lightning/pytorch/utilities/_pytree.py) uses torch's LeafSpec,
    # which recent torch deprecates: between Lightning and torch, printed on every fit and test,
    # nothing a user can change; this project never uses LeafSpec itself (a use here still warns).
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, r"lightning\.pytorch\.utilities\._pytree"),
    # src/export.py asks for the TorchScript-based ONNX exporter (dynamo=False; the newer one needs
    # the onnxscript package, not a dependency) and checks every export against the checkpoint.
    (r"You are using the legacy TorchScript-based ONNX export", DeprecationWarning, ""),
    # format=torchscript is torch.jit by definition: the advice to switch to torch.export is for
    # export.py's authors (tests/test_review.py fails when torch.jit goes), not for its user.
    (r"`torch\.jit\.\w+` is deprecated\. Please switch to", FutureWarning, r"torch\.jit"),
)

# Lightning's info lines (rank_zero_info) that are noise here. Kept: "GPU available: …, used: …"
# (which device trains), "Seed set to …", why fit stopped, which checkpoint is tested.
_LIGHTNING_INFO_DROPPED = re.compile(
    "|".join(
        (
            # Advertising: litlogger, litmodels.
            r"💡 Tip:",
            # Accelerators that are absent (one that is present is still shown). IPU, HPU: older Lightning.
            r"(TPU|IPU|HPU) available: False",
            # Lightning saying it uses the ModelSummary of conf/callbacks/default.yaml instead of its own.
            r"Trainer already configured with model summary callbacks",
            # Said again by the next line ("Loaded model weights from …" / "Restored all states from …").
            r"Restoring states from the checkpoint path at",
        )
    )
)
# rank_zero_info logs through one of these, whichever Lightning package was imported last.
_LIGHTNING_INFO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _DropLightningNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _LIGHTNING_INFO_DROPPED.match(record.getMessage())


_DROP = _DropLightningNoise()


def quiet_upstream() -> None:
    """Install the filters above; calling it again changes nothing."""
    for message, category, module in _WARNINGS:
        # filterwarnings replaces an identical filter rather than adding a second one.
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name in _LIGHTNING_INFO_LOGGERS:
        logging.getLogger(name).addFilter(_DROP)  # a filter already there is not added twice


def stdout_is_terminal() -> bool:
    """The progress bar's default: on in a terminal, off when stdout is a file, a pipe or a CI log."""
    isatty = getattr(sys.stdout, "isatty", None)
    return bool(isatty and isatty())


class _Current:
    """Writes to whatever sys.stdout (or sys.stderr) is at the time: while Rich's progress bar is
    live, that is Rich's proxy, which prints a line above the bar instead of into it."""

    def __init__(self, name: str) -> None:
        self.name = name

    def write(self, text: str) -> int:
        return getattr(sys, self.name).write(text)

    def flush(self) -> None:
        getattr(sys, self.name).flush()


def _log_lines_above_the_bar() -> None:
    """Point the console handlers (Hydra's job logging, Lightning's own) at the current stdout or
    stderr. They hold the stream they were configured with, so without this a line logged while the
    bar is live lands inside the bar's line and the bar redraws below it."""
    for name in ("", "lightning.pytorch", "lightning.fabric"):
        for handler in logging.getLogger(name).handlers:
            if type(handler) is logging.StreamHandler:  # not FileHandler (train.log), a subclass
                for stream in ("stdout", "stderr"):
                    if handler.stream is getattr(sys, stream):
                        handler.setStream(_Current(stream))


class EpochLine(L.Callback):
    """One line per training epoch, after its validation: loss and accuracy, learning rate, seconds.

    The values are the epoch's own: validation runs before `on_train_epoch_end` (Lightning 2.x, when
    it runs every epoch), and an epoch without validation shows none rather than an older one. The
    learning rate is the first parameter group's (the head's), as it was during the epoch.
    """

    def __init__(self) -> None:
        self._started = 0.0
        self._lr: float | None = None
        self._validated = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.progress_bar_callback is not None:
            _log_lines_above_the_bar()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        first, last = trainer.current_epoch + 1, trainer.max_epochs
        if last is None or last < 0:
            span = f"training until step {trainer.max_steps}"
        elif first == 1:
            span = f"training {last} epoch{'s' * (last != 1)}"
        else:
            span = f"resuming at epoch {first} of {last}"
        device = str(trainer.strategy.root_device)
        if trainer.world_size > 1:
            device = f"{trainer.world_size} processes ({trainer.strategy.root_device.type})"
        log.info("%s on %s; run directory %s", span, device, trainer.default_root_dir)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started, self._validated = time.perf_counter(), False
        optimizers = trainer.optimizers
        self._lr = optimizers[0].param_groups[0]["lr"] if optimizers and optimizers[0].param_groups else None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated = True

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            log.info("%s", self.line(trainer))

    def line(self, trainer: L.Trainer) -> str:
        metrics = trainer.callback_metrics

        def pair(split: str) -> str:
            values = [
                f"{name} {float(metrics[f'{split}/{name}']):.3f}"
                for name in ("loss", "acc")
                if f"{split}/{name}" in metrics
            ]
            return f"{split} {' '.join(values)}" if values else ""

        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        parts = [
            f"epoch {trainer.current_epoch + 1}" + (f"/{total}" if total else ""),
            pair("train"),
            pair("val") if self._validated else "",
            f"lr {self._lr:.1e}" if self._lr is not None else "",
            f"{time.perf_counter() - self._started:.1f} s",
        ]
        return "  ".join(part for part in parts if part)
