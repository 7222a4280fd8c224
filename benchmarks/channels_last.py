"""NCHW vs channels_last (NHWC) for a frozen backbone's forward pass, side by side in one process.

    python benchmarks/channels_last.py                  # efficientnet_lite0, 96 px, batch 64 (about 10 s on 2 cores)
    python benchmarks/channels_last.py --model resnet18 --size 224

On the CPU (a GPU is not used). The first line printed says what will run and about how long.

The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from transferlab.models.backbones import create_backbone

# Measured on an idle 2-core CPU (benchmarks/README.md): efficientnet_lite0 at 96 px, NCHW and channels_last.
LITE0_96PX_IMG_PER_S = {"nchw": 234, "channels_last": 346}


def plan(args) -> str:
    images = args.batch * (1 + args.repeats)
    text = (
        f"channels_last: {args.model} frozen forward pass, {args.size} px, batch {args.batch}, on the CPU "
        f"({torch.get_num_threads()} threads): 1 warm-up + {args.repeats} timed passes in NCHW, then the same "
        f"in channels_last"
    )
    if args.model == "efficientnet_lite0":
        seconds = 5 + sum(images * (args.size / 96) ** 2 / rate for rate in LITE0_96PX_IMG_PER_S.values())
        return f"{text}; time: about {seconds:.0f} s on an idle 2-core CPU"
    return f"{text}; time: not measured for {args.model} (efficientnet_lite0 at 96 px takes about 10 s)"


@torch.no_grad()
def images_per_second(model: torch.nn.Module, images: torch.Tensor, repeats: int) -> float:
    model(images)  # warm-up: kernels chosen, memory allocated
    started = time.perf_counter()
    for _ in range(repeats):
        model(images)
    return repeats * len(images) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(plan(args), flush=True)
    model = create_backbone(args.model, pretrained=False).eval()
    images = torch.randn(args.batch, 3, args.size, args.size)
    nchw = images_per_second(model, images, args.repeats)
    model = model.to(memory_format=torch.channels_last)
    nhwc = images_per_second(model, images.contiguous(memory_format=torch.channels_last), args.repeats)
    print(f"{args.model} {args.size}px: NCHW {nchw:.0f} img/s, channels_last {nhwc:.0f} img/s ({nhwc / nchw:.2f}×)")
    print(
        json.dumps(
            {
                "benchmark": "channels_last",
                "model": args.model,
                "size": args.size,
                "threads": torch.get_num_threads(),
                "nchw_img_s": round(nchw, 1),
                "channels_last_img_s": round(nhwc, 1),
                "speedup": round(nhwc / nchw, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
