"""The sweep report (src/report.py): which recipe wins, as a table and a chart of every run.

Reads each run's metrics.json and composed config (.hydra/config.yaml); writes report.md and report.png
next to them (in the one directory given, else in the runs' common parent). Runs that failed, never
finished or whose files cannot be parsed are listed as such.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from matplotlib.figure import Figure

from transferlab.errors import TransferlabError


@dataclass
class Run:
    path: Path
    status: str  # completed, failed, unfinished, unreadable
    model: str
    data: str
    strategy: str
    metrics: dict

    def value(self, key: str) -> float | None:
        value = self.metrics.get(key)
        return float(value) if isinstance(value, (int, float)) else None


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
    return Run(
        path=path,
        status=metrics.get("status", "unfinished"),
        model=metrics.get("model") or (config.get("model") or {}).get("name", "?"),
        data=metrics.get("data") or choices.get("data", "?"),
        strategy=metrics.get("strategy") or choices.get("strategy", "?"),
        metrics=metrics,
    )


def read_yaml(path: Path) -> dict:
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path.name} is not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{path.name} holds no mapping")
    return loaded


def fmt(value: float | None, pattern: str) -> str:
    return "–" if value is None else format(value, pattern)


def markdown(runs: list[Run], where: Path) -> str:
    completed = sorted((r for r in runs if r.status == "completed"), key=lambda r: (r.data, -r.value("test/acc")))
    best = {}
    for run in completed:
        best.setdefault(run.data, run)
    lines = [
        f"# Sweep report: {where}",
        "",
        f"{len(completed)} completed, {sum(r.status == 'failed' for r in runs)} failed, "
        f"{sum(r.status == 'unfinished' for r in runs)} unfinished"
        f"{''.join(f', {n} unreadable' for n in [sum(r.status == 'unreadable' for r in runs)] if n)}. "
        "★ = best test accuracy for its data set.",
        "",
        "| | data | model | strategy | test acc | best val acc | trainable params | fit time (s) | run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in completed:
        mark = "★" if best[run.data] is run else ""
        trainable = run.value("model/params/trainable")
        lines.append(
            f"| {mark} | {run.data} | {run.model} | {run.strategy} | {fmt(run.value('test/acc'), '.4f')} | "
            f"{fmt(run.value('val/acc_best'), '.4f')} | {fmt(trainable, ',.0f')} | {fmt(run.value('time/fit_s'), '.1f')} | "
            f"`{os.path.relpath(run.path, where)}` |"
        )
    others = [r for r in runs if r.status != "completed"]
    if others:
        lines += [
            "",
            "## Failed, unfinished or unreadable",
            "",
            "| status | data | model | strategy | error | run |",
            "|---|---|---|---|---|---|",
        ]
        for run in others:
            error = str(run.metrics.get("error", "no metrics.json: killed or still running")).splitlines()[0]
            lines.append(
                f"| {run.status} | {run.data} | {run.model} | {run.strategy} | {error} | `{os.path.relpath(run.path, where)}` |"
            )
    return "\n".join(lines) + "\n"


def chart(runs: list[Run], target: Path) -> None:
    """Test accuracy against fit time, one marker shape per strategy."""
    # A metrics.json without both values (written by hand, or by an older version) has no point to plot.
    completed = [
        r for r in runs if r.status == "completed" and None not in (r.value("time/fit_s"), r.value("test/acc"))
    ]
    markers = dict(zip(sorted({r.strategy for r in completed}), "osD^v<>pP*X"))
    figure = Figure(figsize=(7, 4.5))
    axis = figure.subplots()
    for strategy, marker in markers.items():
        mine = [r for r in completed if r.strategy == strategy]
        axis.scatter(
            [r.value("time/fit_s") for r in mine],
            [r.value("test/acc") for r in mine],
            marker=marker,
            s=60,
            label=strategy,
        )
        for run in mine:
            axis.annotate(
                run.model,
                (run.value("time/fit_s"), run.value("test/acc")),
                fontsize=7,
                xytext=(4, 4),
                textcoords="offset points",
            )
    axis.set_xlabel("fit time (s)")
    axis.set_ylabel("test accuracy")
    axis.set_title("Which recipe wins")
    axis.grid(alpha=0.3)
    if markers:
        axis.legend(title="strategy", fontsize=8)
    figure.tight_layout()
    figure.savefig(target, dpi=120)


def report(runs: str | Path | Sequence[str | Path]) -> Path:
    """Write report.md and report.png for the run directories (or their parents, or glob patterns) in
    `runs`; returns report.md's path."""
    paths = run_paths(runs)
    found = [read_run(p) for p in find_runs(paths)]
    if not found:
        raise TransferlabError(f"no run directories (with .hydra/config.yaml) under {', '.join(map(str, paths))}")
    where = (
        paths[0] if len(paths) == 1 and paths[0].is_dir() else Path(os.path.commonpath([r.path.parent for r in found]))
    )
    (where / "report.md").write_text(markdown(found, where))
    chart(found, where / "report.png")
    return where / "report.md"


def run_paths(runs: str | Path | Sequence[str | Path]) -> list[Path]:
    """`runs=` as paths: one or a list, each a folder or a glob pattern (`outputs/runs/2026-11-25/*`)."""
    given = list(runs) if isinstance(runs, Sequence) and not isinstance(runs, str) else [runs]
    if not given:
        raise TransferlabError("runs=[]: name a sweep or run directory")
    return [Path(match) for text in map(str, given) for match in (sorted(glob.glob(text)) or [text])]
