"""Host syncs per training step: the reads of a tensor's value on the host (`.item()`, `bool()`, `float()`,
`int()`, `.tolist()`) made while Lightning runs a training batch and its callbacks (torch optimizers'
reads of their step counters, which stay on the CPU, are counted apart).

    python benchmarks/host_syncs.py                      # digits, small_cnn from scratch, 3 epochs (about 30 s on 2 cores)
    python benchmarks/host_syncs.py --epochs 1 --log-every 10

On a GPU each such read waits for every kernel queued before it: one a step keeps the GPU idle while the
host catches up. On the CPU they cost nothing visible, so this counts them instead of timing them; the
count is the same on any device. Run it against an older checkout with `PYTHONPATH=<checkout>/src` to
compare. The first line says what will run; the last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import traceback
from collections import Counter
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import open_dict

from transferlab.run import build
from transferlab.run.pipeline import train

READS = ("item", "__bool__", "__float__", "__int__", "tolist")


class CountReads(Callback):
    """Counts host reads between this callback's on_train_batch_start and on_train_batch_end (the step,
    and the batch-end hooks of the callbacks before it), by the transferlab or Lightning file that made them."""

    def __init__(self) -> None:
        self.counting, self.steps, self.by_caller, self.optimizer_counters = False, 0, Counter(), 0
        self.originals = {name: getattr(torch.Tensor, name) for name in READS}
        for name, original in self.originals.items():
            setattr(torch.Tensor, name, self.counted(name, original))

    def counted(self, name, original):
        def read(tensor, *args, **kwargs):
            if self.counting:
                stack = traceback.extract_stack()[:-1]
                if "/torch/optim/" in stack[-1].filename:  # its step counters: on the CPU on a GPU too (no sync)
                    self.optimizer_counters += 1
                    return original(tensor, *args, **kwargs)
                caller = next((f for f in reversed(stack) if "/torch/" not in f.filename), None)
                where = f"{Path(caller.filename).name}:{caller.name}" if caller else "?"
                self.by_caller[f"{where} ({name})"] += 1
            return original(tensor, *args, **kwargs)

        return read

    def on_train_batch_start(self, *args) -> None:
        self.counting = True

    def on_train_batch_end(self, *args) -> None:
        self.counting, self.steps = False, self.steps + 1

    def restore(self) -> None:
        for name, original in self.originals.items():
            setattr(torch.Tensor, name, original)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--log-every", type=int, default=50, help="trainer.log_every_n_steps (Lightning's default 50)")
    args = parser.parse_args()
    overrides = [
        "model=small_cnn",
        "strategy=scratch",
        "data.image_size=32",
        "data.batch_size=16",
        "data.num_workers=0",
        f"trainer.max_epochs={args.epochs}",
        f"trainer.log_every_n_steps={args.log_every}",
        "trainer.enable_progress_bar=false",
        "logger=none",
    ]
    about = 10 * args.epochs
    print(
        f"host_syncs: {' '.join(overrides)}; counts host reads in each training step; time: about {about} s", flush=True
    )
    counter = CountReads()
    with tempfile.TemporaryDirectory() as folder:
        cfg = build.run_config(overrides, Path(folder))
        with open_dict(cfg):
            cfg.callbacks.count_reads = {"_target_": "__main__.the_counter"}  # this one instance
        globals()["the_counter"] = lambda: counter
        try:
            train(cfg)
        finally:
            counter.restore()
    total = sum(counter.by_caller.values())
    for caller, count in counter.by_caller.most_common():
        print(f"  {count / counter.steps:6.2f} a step  {caller}")
    print(f"{total} host reads in {counter.steps} training steps: {total / counter.steps:.2f} a step")
    print(f"(besides {counter.optimizer_counters} reads of torch optimizers' step counters, kept on the CPU: no sync)")
    result = {
        "benchmark": "host_syncs",
        "steps": counter.steps,
        "log_every_n_steps": args.log_every,
        "reads": total,
        "reads_per_step": round(total / counter.steps, 3),
        "by_caller": dict(counter.by_caller),
        "optimizer_step_counter_reads": counter.optimizer_counters,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
