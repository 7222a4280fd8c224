"""What an epoch on cached features costs, against the arithmetic it does.

    python benchmarks/cached_epochs.py                 # the default experiment, 40 epochs (about 30 s)
    python benchmarks/cached_epochs.py --epochs 100 data=fashion_mnist

Runs the default experiment (any train.py overrides after the options) with early
stopping off, timing every epoch of the fit (training on cached features, validation,
checkpoints, logging, figures); then the floor: the same epochs' arithmetic as a plain
PyTorch loop (the head's forward, backward and optimizer step over the cached training
features, its forward over the validation features). Reports the median epoch of each
and their ratio; the last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from transferlab.run import build


class EpochTimes(L.Callback):
    """Seconds from one training epoch's start to the next's (its validation and checkpoints included)."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        now = time.perf_counter()
        if self.started is not None:
            self.seconds.append(now - self.started)
        self.started = now

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds.append(time.perf_counter() - self.started)


def arithmetic_floor(module, datamodule, epochs: int) -> float:
    """Median seconds of one epoch of the head's arithmetic alone, over the same batches."""
    head = module.head
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3)
    train, val = datamodule.cached_features.splits["train"], datamodule.cached_features.splits["val"]
    batch = datamodule.batch_size
    seconds = []
    for epoch in range(epochs):
        started = time.perf_counter()
        head.train()
        order = torch.randperm(len(train))
        for first in range(0, len(train), batch):
            features, labels = train.__getitems__([(epoch, int(i)) for i in order[first : first + batch]])
            loss = F.cross_entropy(head(features), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        head.eval()
        with torch.no_grad():
            for first in range(0, len(val), batch):
                features, _ = val.__getitems__(list(range(first, min(first + batch, len(val)))))
                head(features)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=40)
    args, overrides = parser.parse_known_args()
    print(
        f"cached_epochs: {' '.join(overrides) or 'the default experiment'}, {args.epochs} epochs on cached features "
        f"(early stopping off), then the same epochs' arithmetic in a plain loop; time: about "
        f"{max(1, round((20 + args.epochs * 0.15) / 60))} min on an idle 2-core CPU",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as scratch:
        cfg = build.run_config(
            [
                *overrides,
                f"trainer.max_epochs={args.epochs}",
                "callbacks.early_stopping=null",
                f"hydra.run.dir={scratch}",
            ],
            Path(scratch),
        )
        L.seed_everything(cfg.seed)
        run = build.experiment(cfg)
        switch = build.feature_cache(cfg).attach(run.module, run.datamodule, run.policy.frozen_backbone_epochs)
        if run.datamodule.cached_features is None:
            raise SystemExit("this configuration does not train on cached features (choose strategy=head_only)")
        timer = EpochTimes()
        trainer = build.trainer(cfg, build.callbacks(cfg, run.policy, *switch, timer), build.loggers(cfg))
        trainer.fit(run.module, datamodule=run.datamodule)
        epoch = statistics.median(timer.seconds[1:])  # the first epoch also starts the loops and loggers
        floor = arithmetic_floor(run.module, run.datamodule, args.epochs)
    figures = {
        "epochs": args.epochs,
        "epoch_s": round(epoch, 4),
        "floor_s": round(floor, 4),
        "ratio": round(epoch / floor, 1),
    }
    print(f"median cached epoch {epoch * 1000:.0f} ms; its arithmetic {floor * 1000:.1f} ms ({epoch / floor:.0f}×)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
