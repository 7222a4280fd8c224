"""What a run prints: upstream noise filtered in one place, one line per epoch, the progress bar's rule.

- `quiet_upstream(verbose)`: every script calls it once, before Lightning runs. It hides the warnings
  and Lightning info lines that say nothing a user of this project can act on; each filter below says
  why hiding it is safe. Filters match one message (and its category or logger), never a whole
  category or library. `verbose=true` on the command line keeps them all.
- `ConsoleFormatter`: the console's format (conf/hydra/default.yaml): a message alone, a warning or an
  error prefixed with its level; train.log keeps timestamps and logger names.
- `EpochLine`: a callback (conf/callbacks/default.yaml) that logs one line per epoch through the
  `transferlab` logger, so Hydra's job logging puts it on the console and in the run's train.log:
      epoch 2/2  train loss 0.713 acc 0.796  val loss 0.512 acc 0.864  lr 1.5e-03  2.2 s
- `stdout_is_terminal()`: whether the progress bar is on (conf/trainer/default.yaml). In a file or a
  CI log a bar is a wall of redrawn lines; the epoch lines say the same there.
- `Progress`: a long step's count, rate and time left (a scan, a decode, a feature pass, an epoch): a
  bar in a terminal, and a plain line at every tenth for train.log and for output that is not a
  terminal. `HideProgressOnTerminal` (conf/hydra/default.yaml) keeps those lines off a terminal's
  console, where the bar says the same.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import warnings

log = logging.getLogger(__name__)

# (message regex, category, module regex of the code the warning points at).
# The module regex matches from the start of the module name, so "lightning\.pytorch" is the package.
_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    # Frozen backbones are in eval mode on purpose (frozen BatchNorm keeps its pretrained
    # statistics; src/transferlab/strategies/base.py), so "N modules in eval mode at the start of training"
    # is true of every strategy that freezes, and intended. Matched in Lightning's code only.
    (r"Found \d+ module\(s\) in eval mode at the start of training", UserWarning, r"lightning\.pytorch"),
    # Lightning's own pytree helper (lightning/pytorch/utilities/_pytree.py) uses torch's LeafSpec,
    # which recent torch deprecates: between Lightning and torch, printed on every fit and test,
    # nothing a user can change; this project never uses LeafSpec itself (a use here still warns).
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, r"lightning\.pytorch\.utilities\._pytree"),
    # Lightning's step-level logging interval against a short epoch: the epoch's train loss and accuracy
    # are logged per epoch all the same (the epoch lines and TensorBoard's train/* curves).
    (
        r"The number of training batches \(\d+\) is smaller than the logging interval",
        UserWarning,
        r"lightning\.pytorch",
    ),
    # A resumed run writes into its own checkpoints/ folder on purpose (its last.ckpt is what it resumes).
    (r"Checkpoint directory .* exists and is not empty", UserWarning, r"lightning\.pytorch"),
    # A non-finite loss: torchmetrics drops it from the epoch's mean; the divergence line
    # (callbacks/stops.py) says what happened and stops the run.
    (r"Encountered `nan` values in tensor", UserWarning, r"torchmetrics"),
    # src/export.py asks for the TorchScript-based ONNX exporter (dynamo=False; the newer one needs
    # the onnxscript package, not a dependency) and checks every export against the checkpoint.
    (r"You are using the legacy TorchScript-based ONNX export", DeprecationWarning, ""),
    # format=torchscript is torch.jit by definition: the advice to switch to torch.export is for
    # export.py's authors (tests/test_review.py fails when torch.jit goes), not for its user.
    (r"`torch\.jit\.\w+` is deprecated\. Please switch to", FutureWarning, r"torch\.jit"),
)

# Lightning's info lines (rank_zero_info) that are noise here (verbose=true shows them). Kept: why fit
# stopped, and any line not named here.
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
            # Said by transferlab's own lines: the device in "training N epochs on cpu", the tested
            # checkpoint in metrics.json (best_checkpoint).
            r"GPU available: ",
            # Said by the epoch lines (the last one's "epoch N/N") and "early stopping after epoch …".
            r"`Trainer.fit` stopped: `max_epochs=\d+` reached",
            # Said by transferlab's own line on how the run stopped and how to resume it.
            r"(\[rank: \d+\] )?Received SIGTERM: ",
            r"Loaded model weights from the checkpoint at ",
        )
    )
)
# rank_zero_info logs through one of these, whichever Lightning package was imported last.
_LIGHTNING_INFO_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.trainer.connectors.signal_connector",  # "Received SIGTERM"
)


class _DropLightningNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _LIGHTNING_INFO_DROPPED.match(record.getMessage())


_DROP = _DropLightningNoise()


def quiet_upstream(verbose: bool = False) -> None:
    """Install the filters above (verbose: remove them); calling it again changes nothing."""
    if verbose:
        for name in _LIGHTNING_INFO_LOGGERS:
            logging.getLogger(name).removeFilter(_DROP)
        return
    for message, category, module in _WARNINGS:
        # filterwarnings replaces an identical filter rather than adding a second one.
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name in _LIGHTNING_INFO_LOGGERS:
        logging.getLogger(name).addFilter(_DROP)  # a filter already there is not added twice


def stdout_is_terminal() -> bool:
    """The progress bar's default: on in a terminal, off when stdout is a file, a pipe or a CI log."""
    isatty = getattr(sys.stdout, "isatty", None)
    return bool(isatty and isatty())


class ConsoleFormatter(logging.Formatter):
    """`message` for information, `warning: message` and `error: message` for the rest: a console line
    reads as a sentence (train.log keeps the timestamp and the logger's name)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prefix = f"{record.levelname.lower()}: "
        return text if record.levelno <= logging.INFO or text.startswith(prefix) else prefix + text


class HideProgressOnTerminal(logging.Filter):
    """On the console handler: a progress line (`extra={"progress": True}`) is dropped when stdout is a
    terminal, where a bar shows the same; train.log and piped output keep it."""

    def __init__(self) -> None:
        super().__init__()
        self.terminal = stdout_is_terminal()  # as the job started: a live bar later swaps sys.stdout

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self.terminal and getattr(record, "progress", False))


def duration(seconds: float) -> str:
    """`42 s`, `3 min 5 s`, `1 h 12 min`."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


class Progress:
    """Count, rate and time left of a step of `total` units: a tqdm bar on a terminal (`bar=True`), and a
    line through `logger` at every tenth once the step has run `quiet_s` seconds (short steps stay silent):
        feature pass train: 2,100/7,000 images (30 %), 18.2 images/s, 4 min 29 s left
    """

    def __init__(
        self,
        what: str,
        total: int,
        unit: str = "images",
        logger: logging.Logger | None = None,
        bar: bool = True,
        quiet_s: float = 5.0,
    ) -> None:
        self.what, self.total, self.unit, self.quiet_s = what, max(int(total), 0), unit, quiet_s
        self.logger = logger or log
        self.done, self.next_tenth, self.started = 0, 1, time.perf_counter()
        self.bar = None
        if bar and self.total and stdout_is_terminal():
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=what, unit=unit[:3], leave=False, dynamic_ncols=True)

    def update(self, count: int = 1) -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(count)
        if not self.total or self.done >= self.total:
            return
        tenth = self.done * 10 // self.total
        if tenth < self.next_tenth:
            return
        self.next_tenth = tenth + 1
        elapsed = time.perf_counter() - self.started
        if elapsed >= self.quiet_s:
            self.logger.info("%s", self.line(elapsed), extra={"progress": True})

    def line(self, elapsed: float) -> str:
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = f", {duration((self.total - self.done) / rate)} left" if rate > 0 else ""
        return (
            f"{self.what}: {self.done:,}/{self.total:,} {self.unit} ({100 * self.done // self.total} %), "
            f"{rate:.1f} {self.unit}/s{left}"
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
