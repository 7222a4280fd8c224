"""Training throughput per speed switch, and what Lightning costs over a plain PyTorch loop.

    python benchmarks/gpu_recipes.py                     # CUDA GPU: ResNet-50, 224 px, batch 256 (refuses without one)
    python benchmarks/gpu_recipes.py --device cpu        # CPU-sized: resnet18, 112 px, batch 32, 2 + 15 steps (about 2 min on 2 cores)
    python benchmarks/gpu_recipes.py --device cpu --model resnet18 --size 112 --batch-size 32 --steps 10

Sizes not given on the command line come from the device's preset (PRESETS); the first
line printed says what will run and, where a run was measured, about how long.

1. Images/s of one training step (forward, backward, SGD step) on batches already on
   the device, for each switch transferlab exposes: `precision` 32-true (and TF32 on
   Ampere or newer), `channels_last`, `bf16-mixed`, `16-mixed`, `compile.enabled`;
   cuDNN autotuning (`trainer.benchmark`) is on for all GPU rows. Printed next to
   NVIDIA's published single-GPU figure for ResNet-50 v1.5 on the same GPU class,
   where NVIDIA published one.
2. The same model, data and step through `lightning.Trainer` with transferlab's
   `ImageClassifier` (its metrics included) and through a plain loop that computes
   the same loss and accuracy, alternated twice each; the best of each is kept.

The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from transferlab.classifier.module import ImageClassifier
from transferlab.models.backbones import create_backbone

# NVIDIA DeepLearningExamples, PyTorch/Classification/ConvNets/resnet50v1.5/README.md, "Training
# performance results" (pytorch-21.03 NGC container, DALI data loading, one GPU):
# (full precision img/s, mixed precision img/s)
NVIDIA_RESNET50_TRAINING = {
    "A100": {"tf32": 938, "mixed": 2470, "source": "DGX A100 80GB, 1 GPU"},
    "V100": {"fp32": 367, "mixed": 1200, "source": "DGX-1 V100 16GB, 1 GPU"},
}

# Defaults per device type: the GPU recipe, and a CPU-sized one (hours on a CPU otherwise).
PRESETS = {
    "cuda": {"model": "resnet50", "size": 224, "batch_size": 256, "warmup": 10, "steps": 50},
    "cpu": {"model": "resnet18", "size": 112, "batch_size": 32, "warmup": 2, "steps": 15},
}
# Measured with the CPU preset on an idle 2-core CPU (benchmarks/README.md): about 27 img/s over all rows.
CPU_RESNET18_112PX_IMG_PER_S = 27

SWITCHES = {  # name: (precision, channels_last, tf32, compile)
    "32-true": ("32-true", False, False, False),
    "32-true+channels_last": ("32-true", True, False, False),
    "32-true+tf32+channels_last": ("32-true", True, True, False),
    "bf16-mixed+channels_last": ("bf16-mixed", True, False, False),
    "16-mixed+channels_last": ("16-mixed", True, False, False),
    "bf16-mixed+channels_last+compile": ("bf16-mixed", True, False, True),
}


def autocast(device: torch.device, precision: str):
    if precision == "32-true":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(model: str, num_classes: int, channels_last: bool) -> ImageClassifier:
    optimizer = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.01, "momentum": 0.9}
    backbone = create_backbone(model, pretrained=False)  # throughput does not depend on the weights
    return ImageClassifier({"name": model}, num_classes, optimizer, channels_last=channels_last, backbone=backbone)


def step_throughput(args, device: torch.device, switch: str) -> float:
    """Images/s of training steps on one batch resident on the device (no data loading)."""
    precision, channels_last, tf32, compiled = SWITCHES[switch]
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    module = build(args.model, 1000, channels_last).to(device).train()
    if compiled:
        module.backbone.compile()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "16-mixed")
    images = torch.randn(args.batch_size, 3, args.size, args.size, device=device)
    labels = torch.randint(0, 1000, (args.batch_size,), device=device)
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            synchronize(device)
            started = time.perf_counter()
        with autocast(device, precision):
            loss = F.cross_entropy(module(images), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    synchronize(device)
    return args.steps * args.batch_size / (time.perf_counter() - started)


class SyntheticBatches(Dataset):
    """Whole batches (images, labels), a few distinct ones repeated: no collation cost on either side."""

    def __init__(self, count: int, batch_size: int, size: int, num_classes: int, pin: bool) -> None:
        generator = torch.Generator().manual_seed(0)
        self.pool = [
            (
                torch.randn(batch_size, 3, size, size, generator=generator),
                torch.randint(0, num_classes, (batch_size,), generator=generator),
            )
            for _ in range(4)
        ]
        if pin:
            self.pool = [(images.pin_memory(), labels.pin_memory()) for images, labels in self.pool]
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        return self.pool[index % len(self.pool)]


class StepClock(L.Callback):
    """Starts the clock at the first timed batch, stops it when training ends."""

    def __init__(self, device: torch.device, warmup: int) -> None:
        self.device, self.warmup, self.started, self.seconds = device, warmup, 0.0, 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            synchronize(self.device)
            self.started = time.perf_counter()

    def on_train_end(self, trainer, module) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self.started


def lightning_throughput(args, device: torch.device, precision: str, loader: DataLoader) -> float:
    module = build(args.model, 10, channels_last=True)
    clock = StepClock(device, args.warmup)
    trainer = L.Trainer(
        accelerator=device.type,
        devices=1,
        precision=precision,
        max_steps=args.warmup + args.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        benchmark=device.type == "cuda",
        callbacks=[clock],
    )
    trainer.fit(module, train_dataloaders=loader)
    return args.steps * args.batch_size / clock.seconds


def plain_throughput(args, device: torch.device, precision: str, loader: DataLoader) -> float:
    """What a hand-written loop does: the same model, loss, accuracy and optimizer step."""
    module = build(args.model, 10, channels_last=True).to(device).train()
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "16-mixed")
    correct = seen = 0
    for step, (images, labels) in enumerate(loader):
        if step == args.warmup:
            synchronize(device)
            started = time.perf_counter()
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with autocast(device, precision):
            logits = module(images)
            loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        correct += (logits.argmax(1) == labels).sum()
        seen += len(labels)
    _ = float(correct) / seen  # the accuracy a loop would report (one sync, at the end)
    synchronize(device)
    return args.steps * args.batch_size / (time.perf_counter() - started)


def published_figure(device: torch.device) -> tuple[str | None, dict | None]:
    if device.type != "cuda":
        return None, None
    name = torch.cuda.get_device_name(device)
    return name, next((figures for key, figures in NVIDIA_RESNET50_TRAINING.items() if key in name), None)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with the device's preset for every size not given. Without a CUDA GPU, a run
    on the GPU (the default) is refused with one line that says how to run the CPU-sized one."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default; refused without a CUDA GPU) or cpu")
    parser.add_argument("--model", help="preset: resnet50 on cuda, resnet18 on cpu")
    parser.add_argument("--size", type=int, help="preset: 224 on cuda, 112 on cpu")
    parser.add_argument("--batch-size", type=int, help="preset: 256 on cuda, 32 on cpu")
    parser.add_argument("--warmup", type=int, help="preset: 10 on cuda, 2 on cpu")
    parser.add_argument("--steps", type=int, help="timed steps per row; preset: 50 on cuda, 15 on cpu")
    parser.add_argument("--switches", nargs="*", default=None, help=f"of {', '.join(SWITCHES)}")
    args = parser.parse_args(argv)
    device_type = torch.device(args.device).type
    if device_type == "cuda" and not torch.cuda.is_available():
        cpu = PRESETS["cpu"]
        sys.exit(
            f"error: gpu_recipes.py measures training on a CUDA GPU ({PRESETS['cuda']['model']}, "
            f"{PRESETS['cuda']['size']} px, batch {PRESETS['cuda']['batch_size']}) and this machine has none; for a "
            f"CPU-sized run ({cpu['model']}, {cpu['size']} px, batch {cpu['batch_size']}, about 2 min on 2 cores): "
            f"python benchmarks/gpu_recipes.py --device cpu"
        )
    for key, value in PRESETS["cuda" if device_type == "cuda" else "cpu"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def plan(args: argparse.Namespace, device: torch.device, switches: list[str]) -> str:
    """What this run will do, and about how long it takes where that was measured."""
    steps = args.warmup + args.steps
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    text = (
        f"gpu_recipes: {args.model}, {args.size} px, batch {args.batch_size} on {where}: "
        f"{len(switches)} switch{'es' if len(switches) != 1 else ''} "
        f"({', '.join(switches)}) x ({args.warmup} warm-up + {args.steps} timed steps), then a plain loop and "
        f"Lightning alternated twice (4 x {steps} steps)"
    )
    if device.type == "cpu" and args.model == "resnet18":
        images = args.batch_size * steps * (len(switches) + 4) * (args.size / 112) ** 2
        estimate = f"about {max(1, round(images / CPU_RESNET18_112PX_IMG_PER_S / 60))} min on an idle 2-core CPU"
    elif device.type == "cuda" and all(getattr(args, key) == value for key, value in PRESETS["cuda"].items()):
        estimate = (
            "not measured on a GPU yet; from NVIDIA's published ResNet-50 rates, a few minutes on an "
            "A100-class GPU, longer on older ones (compile adds a minute or two)"
        )
    else:
        estimate = f"no measured time for {args.model} at these sizes; each row prints as it finishes"
    return f"{text}; time: {estimate}"


def main() -> None:
    args = parse()
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    torch.backends.cudnn.benchmark = on_gpu
    switches = args.switches or [
        s for s in SWITCHES if on_gpu or ("tf32" not in s and "16-mixed" not in s and "compile" not in s)
    ]
    print(plan(args, device, switches), flush=True)

    throughput = {}
    for switch in switches:
        throughput[switch] = round(step_throughput(args, device, switch), 1)
        print(
            f"{switch:36s} {throughput[switch]:9.1f} img/s  ({throughput[switch] / next(iter(throughput.values())):.2f}×)"
        )

    precision = "bf16-mixed" if on_gpu else "32-true"
    loader = DataLoader(
        SyntheticBatches(args.warmup + args.steps, args.batch_size, args.size, 10, on_gpu), batch_size=None
    )
    plain, lightning = [], []
    for _ in range(2):  # alternated, so that drift (clocks, heat) hits both alike
        plain.append(plain_throughput(args, device, precision, loader))
        lightning.append(lightning_throughput(args, device, precision, loader))
    overhead = max(plain) / max(lightning) - 1
    print(
        f"plain loop {max(plain):.1f} img/s, Lightning {max(lightning):.1f} img/s: Lightning overhead {overhead:+.1%}"
    )

    gpu_name, published = published_figure(device)
    if on_gpu:
        print(f"NVIDIA's published ResNet-50 v1.5 figure for {gpu_name}: {published or 'none for this GPU class'}")
    print(
        json.dumps(
            {
                "benchmark": "gpu_recipes",
                "device": gpu_name or f"cpu ({torch.get_num_threads()} threads)",
                "model": args.model,
                "size": args.size,
                "batch_size": args.batch_size,
                "steps": args.steps,
                "img_per_s": throughput,
                "speedup_vs_first": {k: round(v / next(iter(throughput.values())), 2) for k, v in throughput.items()},
                "lightning_precision": precision,
                "plain_img_per_s": round(max(plain), 1),
                "lightning_img_per_s": round(max(lightning), 1),
                "lightning_overhead": round(overhead, 4),
                "nvidia_published_img_per_s": published,
            }
        )
    )


if __name__ == "__main__":
    main()
