"""Every benchmark runs end to end at a toy size and ends with its figures as one JSON line.
(The figures themselves are measured by hand, never asserted here.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT

TOY_RUNS = {
    "decode_cache": ["--images", "24", "--epochs", "1", "--workers", "1"],  # a worker process, as by default
    "feature_cache": ["--images", "20", "--size", "32", "--epochs", "2"],
    "channels_last": ["--size", "32", "--batch", "4", "--repeats", "1"],
    "gpu_recipes": ["--device", "cpu", "--model", "small_cnn", "--size", "32", "--batch-size", "4", "--warmup", "1", "--steps", "2"],
}
FIGURES = {  # keys each JSON line must carry
    "decode_cache": ("imagefolder_pil_epoch_s", "decode_cache_epoch_s", "decode_pass_s", "speedup"),
    "feature_cache": ("uncached_s", "cached_s", "floor_s", "speedup", "floor_ratio"),
    "channels_last": ("speedup",),
    "gpu_recipes": ("img_per_s", "speedup_vs_first", "plain_img_per_s", "lightning_img_per_s", "lightning_overhead"),
}


@pytest.mark.parametrize("name", sorted(TOY_RUNS))
def test_a_benchmark_ends_with_its_figures_as_json(name, offline_env):
    command = [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *TOY_RUNS[name]]
    result = subprocess.run(command, env=offline_env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["benchmark"] == name
    for key in FIGURES[name]:
        assert figures[key], key
    if name == "gpu_recipes":
        assert set(figures["img_per_s"]) == {"32-true", "32-true+channels_last"} and figures["nvidia_published_img_per_s"] is None
