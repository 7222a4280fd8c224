"""Reading a run directory for the report: its metrics.json, composed config and overrides (.hydra/),
each file that cannot be parsed making the run "unreadable" with the reason."""

from __future__ import annotations

import glob
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from transferlab.errors import TransferlabError

# Overrides that do not change what a run trains: runs differing only in these are seeds of one recipe.
NOT_THE_RECIPE = ("seed", "resume", "paths.", "hydra.", "verbose", "trainer.enable_progress_bar")


@dataclass
class Run:
    path: Path
    status: str  # completed, failed, diverged, interrupted, unfinished, unreadable
    model: str
    data: str
    strategy: str
    metrics: dict
    recipe: tuple[str, ...] = ()  # the overrides that are not NOT_THE_RECIPE

    def value(self, key: str) -> float | None:
        value = self.metrics.get(key)
        return float(value) if isinstance(value, (int, float)) else None


def selection_score(run: Run) -> float | None:
    """What chose the run's checkpoint: its monitor's best (val/acc, val/balanced_acc, val/macro_f1)."""
    return run.value("monitor/best") if run.value("monitor/best") is not None else run.value("val/acc_best")


def find_runs(paths: list[Path]) -> list[Path]:
    """Every run directory (one holding .hydra/config.yaml) at or under `paths`."""
    found = set()
    for path in paths:
        found.update(p.parent.parent for p in path.glob("**/.hydra/config.yaml") if "resumed" not in p.parts)
    return sorted(found)


def read_run(path: Path) -> Run:
    """A run's metrics and names; a file that cannot be parsed makes the run "unreadable", with the reason."""
    try:
        hydra = read_yaml(path / ".hydra" / "hydra.yaml") if (path / ".hydra" / "hydra.yaml").is_file() else {}
        config = read_yaml(path / ".hydra" / "config.yaml")
        metrics_file = path / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        if not isinstance(metrics, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError, yaml.YAMLError) as error:
        where = getattr(error, "filename", None) or "metrics.json"
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        return Run(path, "unreadable", "?", "?", "?", {"error": f"{where}: {reason}"})
    choices = (hydra.get("hydra") or {}).get("runtime", {}).get("choices", {})
    overrides = (hydra.get("hydra") or {}).get("overrides", {}).get("task") or []
    data = metrics.get("data") or choices.get("data", "?")
    root = (config.get("data") or {}).get("csv") or (config.get("data") or {}).get("root")
    return Run(
        path=path,
        # "running" that is not running any more: killed with its machine (the report runs after the sweep).
        status={"running": "unfinished"}.get(metrics.get("status", "unfinished"), metrics.get("status", "unfinished")),
        model=metrics.get("model") or (config.get("model") or {}).get("name", "?"),
        data=f"{data} ({Path(str(root)).name})" if root else data,  # image_folder (photos), csv (labels.csv)
        strategy=metrics.get("strategy") or choices.get("strategy", "?"),
        metrics=metrics,
        recipe=tuple(sorted(o for o in overrides if not o.lstrip("+~").startswith(NOT_THE_RECIPE))),
    )


def read_yaml(path: Path) -> dict:
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path.name} is not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{path.name} holds no mapping")
    return loaded


def run_paths(runs: str | Path | Sequence[str | Path]) -> list[Path]:
    """`runs=` as paths: one or a list, each a folder or a glob pattern (`outputs/runs/2026-11-25/*`)."""
    given = list(runs) if isinstance(runs, Sequence) and not isinstance(runs, str) else [runs]
    if not given:
        raise TransferlabError("runs=[]: name a sweep or run directory")
    return [Path(match) for text in map(str, given) for match in (sorted(glob.glob(text)) or [text])]
