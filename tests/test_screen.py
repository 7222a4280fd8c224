"""src/screen.py: backbones ranked by strategy=auto's probe, reported in three files, and a sweep that
reuses the features the screen cached. One screen (two packaged backbones, a random one, one whose
weights are not on this machine) serves the end-to-end tests."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from transferlab.errors import TransferlabError
from transferlab.models.backbones import create_backbone
from transferlab.run.decide import decide
from transferlab.screen import report as screen_report
from transferlab.screen import screening as screen

from conftest import CLASSES, ROOT, TINY, compose_config

MODELS = "models=[efficientnet_lite0,efficientnet_lite1,small_cnn,resnet18]"


def write_tinted_images(folder: Path, per_class: int, seed: int, size: int = 40, signal: int = 30) -> None:
    """The class's colour channel a little brighter under a random colour cast per image: unlike the
    colour_folder fixture, where every probe scores 1.0, the backbones score apart."""
    rng = np.random.default_rng(seed)
    for index, name in enumerate(CLASSES):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 100, size=(size, size, 3)) + rng.integers(0, 120, size=3)
            pixels[..., index] += signal
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
            image.save(folder / name / f"{name}_{i:03d}.jpg", quality=90)


@pytest.fixture(scope="module")
def tinted_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tinted")
    for split, count, seed in (("train", 16, 0), ("val", 6, 1), ("test", 6, 2)):
        write_tinted_images(root / split, count, seed)
    return root


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    """Offline (a closed proxy, an empty torch cache: resnet18's weights are unavailable), outputs in a temporary folder."""
    home = tmp_path_factory.mktemp("screen_env")
    return {
        **os.environ,
        "TORCH_HOME": str(home / "torch_home"),
        "https_proxy": "http://127.0.0.1:9",
        "http_proxy": "http://127.0.0.1:9",
        "HF_HUB_OFFLINE": "1",
        "PYTHONWARNINGS": "ignore",
        "TRANSFERLAB_OUTPUTS": str(home / "outputs"),
    }


def run_screen(*arguments: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "src" / "screen.py"), *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def screened(tinted_folder, env, tmp_path_factory) -> dict:
    cache = tmp_path_factory.mktemp("feature_cache")
    result = run_screen(*TINY, f"data.root={tinted_folder}", f"feature_cache.dir={cache}", MODELS, "top_k=1", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = Path(env["TRANSFERLAB_OUTPUTS"]).glob("screens/*/*")
    return {
        "dir": run_dir,
        "json": json.loads((run_dir / "screen.json").read_text()),
        "stdout": result.stdout,
        "cache": cache,
        "root": tinted_folder,
    }


def test_pretrained_backbones_rank_by_probe_and_the_random_one_last(screened):
    backbones = screened["json"]["backbones"]
    assert [b["rank"] for b in backbones] == [1, 2, 3]
    pretrained = [b for b in backbones if b["weights"] == "pretrained"]
    assert {b["model"] for b in pretrained} == {"efficientnet_lite0", "efficientnet_lite1"}
    order = [(-b["probe"], b["gflops"]) for b in pretrained]
    assert order == sorted(order), "by probe; on a tie (probes are multiples of 1/16 here), the cheaper first"
    assert backbones[-1]["model"] == "small_cnn" and backbones[-1]["weights"] == "random"
    assert backbones[-1]["suggested"] is None, "a random backbone is a reference, never suggested"
    for b in backbones:
        folds = np.array(b["fold_scores"])
        assert len(folds) == 3 and b["probe_images"] == 48
        assert b["probe"] == pytest.approx(max(0.0, folds.mean()), abs=1e-4)
        assert b["probe_spread"] == pytest.approx(folds.std(ddof=1), abs=1e-4)
        assert 0.0 <= b["probe"] <= 1.0 and b["images_per_s"] > 0 and b["gflops"] > 0 and b["input_size"] == 32
    lite0 = next(b for b in backbones if b["model"] == "efficientnet_lite0")
    assert lite0["params"] == sum(
        p.numel() for p in create_backbone("efficientnet_lite0", pretrained=False).parameters()
    )
    assert lite0["native_input_size"] == 224 and lite0["features"] == 1280
    # Few images per class (16 < 100): head_only if the probe reaches 0.7, else top_blocks.
    for b in pretrained:
        assert b["suggested"] == ("head_only" if b["probe"] >= 0.7 else "top_blocks")


def test_the_probe_is_strategy_auto_s_similarity(screened, tmp_path):
    top = screened["json"]["backbones"][0]
    cfg = compose_config(
        [*TINY, f"data.root={screened['root']}", f"model={top['model']}", "strategy=auto", "feature_cache.dir=null"],
        tmp_path,
    )
    decided = decide(cfg, [], torch.device("cpu")).cfg  # what a train.py run with strategy=auto decides
    assert decided.auto["auto/similarity"] == pytest.approx(top["probe"], abs=1e-4)
    assert decided.auto["auto/choice"] == top["suggested"] and decided.strategy._target_.endswith(
        {"head_only": "HeadOnly", "top_blocks": "TopBlocks"}.get(top["suggested"], "FullFinetune")
    )


def test_a_backbone_without_weights_is_listed_with_the_file_and_the_fix(screened, env):
    (missing,) = screened["json"]["not_screened"]
    assert missing["model"] == "resnet18" and "not cached and could not be downloaded" in missing["reason"]
    assert f"at {env['TORCH_HOME']}/hub/checkpoints/resnet18-f37072fd.pth" in missing["reason"]
    markdown = (screened["dir"] / "screen.md").read_text()
    assert "## Not screened" in markdown and "**resnet18**" in markdown and "resnet18-f37072fd.pth" in markdown


def test_the_report_files(screened):
    markdown = (screened["dir"] / "screen.md").read_text()
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and line[2].isdigit()]
    names = [row.split("|")[2].strip() for row in rows]
    assert names == [
        *(b["model"] for b in screened["json"]["backbones"][:2]),
        "small_cnn (random weights: reference)",
    ]
    png = (screened["dir"] / "screen.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert screened["json"]["commands"][0] in markdown


def test_the_printed_sweep_trains_the_top_backbone_and_its_head_only_run_reads_the_cache(screened, env, tmp_path):
    top = screened["json"]["backbones"][0]
    (command,) = screened["json"]["commands"]
    assert screened["stdout"].rstrip().endswith(command)
    arguments = shlex.split(command)
    assert arguments[:3] == ["python", "src/train.py", "-m"]
    strategies = ["head_only"] + ([top["suggested"]] if top["suggested"] != "head_only" else [])
    assert arguments[-2:] == [f"model={top['model']}", f"strategy={','.join(strategies)}"]
    assert f"data.root={screened['root']}" in arguments and not any(
        a.startswith(("models=", "top_k=")) for a in arguments
    )

    cached_files = sorted(screened["cache"].glob("*.pt"))
    assert len(cached_files) == 3 + 3, "each probe's training split, then the top backbone's head_only views, val, test"
    outputs = tmp_path / "outputs"
    result = subprocess.run(
        [sys.executable, *arguments[1:]],
        env={**env, "TRANSFERLAB_OUTPUTS": str(outputs)},
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(screened["cache"].glob("*.pt")) == cached_files, "the sweep computed no new features"
    jobs = [p.parents[1] for p in outputs.glob("multirun/*/*/*/.hydra/overrides.yaml")]
    assert len(jobs) == len(strategies)
    (head_only,) = [job for job in jobs if "- strategy=head_only" in (job / ".hydra" / "overrides.yaml").read_text()]
    log = (head_only / "train.log").read_text()
    for split in ("train", "val", "test"):
        assert f"feature cache: {split} features from {screened['cache']}" in log
    assert json.loads((head_only / "metrics.json").read_text())["feature_cache"] is True


def test_ranking_ties_go_to_the_cheaper_backbone_and_many_images_suggest_full_finetune():
    def measured(model: str, probe: float, gflops: float, weights: str = "pretrained") -> screen_report.Screened:
        return screen_report.Screened(model, weights, probe, 0.0, [], 10, 1.0, None, 0.1, 1, gflops, 32, 224, 8)

    thresholds = OmegaConf.create({"many_per_class": 100, "similar": 0.7, "top_n": 2})
    candidates = [
        measured("a", 0.5, 1.0),
        measured("random", 0.99, 0.1, weights="random"),
        measured("b", 0.8, 2.0),
        measured("c", 0.8, 1.0),
    ]
    ranked = screen.rank(candidates, thresholds, images_per_class=20)
    assert [(s.model, s.rank) for s in ranked] == [("c", 1), ("b", 2), ("a", 3), ("random", 4)]
    assert [s.suggested for s in ranked] == ["head_only", "head_only", "top_blocks", None]
    ranked = screen.rank(candidates, thresholds, images_per_class=100)
    assert [(s.suggested, s.suggested_detail) for s in ranked[:3]] == [
        ("full_finetune", "backbone lr × 0.1"),
        ("full_finetune", "backbone lr × 0.1"),
        ("full_finetune", "backbone lr × 1.0"),
    ]


def test_backbones_without_a_config_or_with_overrides_get_commands_of_their_own():
    entries = [
        screen.entry("efficientnet_lite0"),
        screen.entry("densenet161"),
        screen.entry("efficientnet_lite1 data.image_size=64"),
    ]
    assert entries[1].overrides == ("model=torchvision", "model.name=densenet161")
    commands = screen.sweep_commands(["data=digits"], entries, ["head_only", "full_finetune"])
    assert commands == [
        "python src/train.py -m data=digits model=efficientnet_lite0 strategy=head_only,full_finetune",
        "python src/train.py -m data=digits model=torchvision model.name=densenet161 strategy=head_only,full_finetune",
        "python src/train.py -m data=digits model=efficientnet_lite1 data.image_size=64 strategy=head_only,full_finetune",
    ]


@pytest.mark.parametrize(
    ("models", "message"),
    [
        (OmegaConf.create({"models": []}), "models=[]: expected a list of model names"),
        (OmegaConf.create({"models": ["a", "a"]}), "models=['a', 'a']: expected distinct, non-empty model names"),
    ],
)
def test_a_bad_model_list_is_one_line(models, message):
    cfg = OmegaConf.merge({"sample_size": 10, "top_k": 1, "warm_cache": True, "strategy": {"similar": 0.7}}, models)
    with pytest.raises(TransferlabError, match=message.replace("[", r"\[").replace("]", r"\]")):
        screen.model_list(cfg)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["models=[efficientnet_lite0,resnet19]"], "Unknown model 'resnet19'. Valid names:"),
        (["top_k=0"], "top_k=0: expected an integer ≥ 1"),
        (["data.batch_size=0"], "data.batch_size=0: expected an integer ≥ 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(arguments, message, env, tmp_path):
    result = run_screen(*arguments, f"hydra.run.dir={tmp_path}", env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and message in output, output
    assert "Traceback" not in output and not (tmp_path / "screen.md").exists()


def test_backbones_within_the_first_ones_spread_are_reported_tied_with_the_cheapest_named():
    def row(model: str, probe: float, spread: float, gflops: float, weights: str = "pretrained") -> dict:
        return {
            "model": model,
            "weights": weights,
            "probe": probe,
            "probe_spread": spread,
            "gflops": gflops,
            "images_per_s": 1,
        }

    backbones = [
        row("big", 0.88, 0.05, 2.0),
        row("small", 0.85, 0.02, 0.5),  # 0.03 below: within big's ± 0.05
        row("far", 0.70, 0.02, 0.1),
        row("random", 0.87, 0.01, 0.1, weights="random"),  # references are never part of a tie
    ]
    assert [s["model"] for s in screen_report.tied_with_first(backbones)] == ["big", "small"]
    assert screen_report.tie_note(backbones)[1].startswith("**big, small are tied**")
    assert "The cheapest of them, **small**" in screen_report.tie_note(backbones)[1]
    backbones[0]["probe_spread"] = 0.01
    assert screen_report.tie_note(backbones) == [], "0.03 apart with ± 0.02 at most: told apart"
