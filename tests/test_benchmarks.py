"""Every benchmark says first what it will run, runs end to end at a toy size and ends with its figures
as one JSON line (the figures themselves are measured by hand, never asserted here); the GPU benchmark
refuses a machine without a GPU, and sizes its CPU run for a CPU."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from conftest import ROOT

TOY_RUNS = {
    "decode_cache": ["--images", "24", "--epochs", "1", "--workers", "1"],  # a worker process, as by default
    "feature_cache": ["--images", "20", "--size", "32", "--epochs", "2"],
    "channels_last": ["--size", "32", "--batch", "4", "--repeats", "1"],
    "host_syncs": ["--epochs", "1", "--log-every", "10"],
    "entry_points": ["--skip-run", "--repeats", "1"],
    "screen_evidence": [
        "--data",
        "digits",
        "--models",
        "efficientnet_lite0,efficientnet_lite1",
        "--extra",
        "data.subset.train=30 data.subset.val=20 data.subset.test=20 data.image_size=32 trainer.max_epochs=1",
    ],
    "gpu_recipes": [
        "--device",
        "cpu",
        "--model",
        "small_cnn",
        "--size",
        "32",
        "--batch-size",
        "4",
        "--warmup",
        "1",
        "--steps",
        "2",
    ],
}
PLANS = {  # the first line printed: what will run, with the sizes given
    "decode_cache": ("decode_cache: 24 JPEG photos", "1 worker(s): 1 timed epoch(s)"),
    "feature_cache": ("feature_cache: efficientnet_lite0 head_only on the CPU", "20 JPEGs at 32 px, 2 epochs"),
    "channels_last": ("channels_last: efficientnet_lite0 frozen forward pass, 32 px, batch 4", "1 timed passes"),
    "host_syncs": ("host_syncs: model=small_cnn strategy=scratch", "trainer.log_every_n_steps=10"),
    "entry_points": ("entry_points: help, cfg_job, typo, bad_value of src/train.py", "best of 1"),
    "screen_evidence": ("screen_evidence: digits × efficientnet_lite0, efficientnet_lite1", "4 training runs"),
    "gpu_recipes": ("gpu_recipes: small_cnn, 32 px, batch 4 on cpu", "(1 warm-up + 2 timed steps)"),
}
FIGURES = {  # keys each JSON line must carry
    "decode_cache": ("imagefolder_pil_epoch_s", "decode_cache_epoch_s", "decode_pass_s", "speedup"),
    "feature_cache": ("uncached_s", "cached_s", "floor_s", "speedup", "floor_ratio"),
    "channels_last": ("speedup",),
    "host_syncs": ("steps", "optimizer_step_counter_reads"),
    "entry_points": ("this",),
    "screen_evidence": ("data",),
    "gpu_recipes": ("img_per_s", "speedup_vs_first", "plain_img_per_s", "lightning_img_per_s", "lightning_overhead"),
}


@pytest.mark.parametrize("name", sorted(TOY_RUNS))
def test_a_benchmark_ends_with_its_figures_as_json(name, offline_env):
    command = [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *TOY_RUNS[name]]
    result = subprocess.run(command, env=offline_env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith(PLANS[name][0]) and PLANS[name][1] in lines[0] and "time: " in lines[0], lines[0]
    figures = json.loads(lines[-1])
    assert figures["benchmark"] == name
    for key in FIGURES[name]:
        assert figures[key], key
    if name == "host_syncs":  # the divergence check reads its flag every 10 steps and at the epoch's end
        assert figures["reads"] == sum(figures["by_caller"].values()) <= figures["steps"] // 10 + 1
        assert set(figures["by_caller"]) <= {"stops.py:check_steps (item)"}, figures["by_caller"]
    if name == "entry_points":
        assert set(figures["this"]) == {"help", "cfg_job", "typo", "bad_value"}
    if name == "gpu_recipes":
        assert (
            set(figures["img_per_s"]) == {"32-true", "32-true+channels_last"}
            and figures["nvidia_published_img_per_s"] is None
        )
    if name == "screen_evidence":
        digits = figures["data"]["digits"]
        models = ["efficientnet_lite0", "efficientnet_lite1"]
        assert set(digits["probe"]) == set(models) and all(0 <= p <= 1 for p in digits["probe"].values())
        assert digits["screen_time_ratio"] == pytest.approx(digits["screen_s"] / digits["runs_s"], abs=1e-3)
        # The agreement follows from the probes and the runs' test accuracies it reports beside them.
        probe = digits["probe"]
        for strategy in ("head_only", "full_finetune"):
            tests = {m: digits["runs"][strategy][m]["test"] for m in models}
            agreement = digits["agreement"][strategy]
            in_order = (probe[models[0]] - probe[models[1]]) * (tests[models[0]] - tests[models[1]]) > 0
            assert agreement["pairs_in_order"] == f"{int(in_order)}/1", strategy
            assert agreement["screen_first_is_best"] == (max(models, key=probe.get) == max(models, key=tests.get))
            assert agreement["spearman"] is None, "two backbones: no rank correlation"


def test_the_gpu_benchmark_refuses_a_machine_without_a_gpu_in_one_line(offline_env):
    env = {**offline_env, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, even on a machine with one
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_recipes.py")],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "CUDA GPU" in lines[0] and "python benchmarks/gpu_recipes.py --device cpu" in lines[0]


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_benchmark_on_a_cpu_takes_the_cpu_sizes_unless_given():
    gpu_recipes = load_benchmark("gpu_recipes")
    args = gpu_recipes.parse(["--device", "cpu"])
    assert (args.model, args.size, args.batch_size, args.warmup, args.steps) == ("resnet18", 112, 32, 2, 15)
    assert gpu_recipes.parse(["--device", "cpu", "--size", "64", "--model", "small_cnn"]).size == 64
    plan = gpu_recipes.plan(args, torch.device("cpu"), ["32-true", "32-true+channels_last"])
    assert "2 switches (32-true, 32-true+channels_last) x (2 warm-up + 15 timed steps)" in plan
    assert "time: about 2 min on an idle 2-core CPU" in plan
