"""The sweep report (src/report.py): which recipe wins, as a table and a chart of every recipe.

Reads each run's metrics.json, composed config and overrides (.hydra/), and test_predictions.csv; writes
report.md and report.png (in the one directory given, else in the runs' common parent).

- A recipe is a run's overrides less its seed: the seeds of one recipe are pooled.
- The winner of each data set is the recipe with the best **validation** accuracy; choosing on the
  test split would make its test accuracy optimistic. Test accuracy is shown beside, with its 95 %
  interval (Wilson's for one run; mean ± std and the t interval over seeds).
- The winner and the runner-up are compared image by image on the test set (exact McNemar), and the
  report says in words whether the difference is one chance could give.
- Runs that failed, diverged, were interrupted, never finished or cannot be parsed are listed as such.
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
from transferlab.review import predictions
from transferlab.review.statistics import mcnemar, seed_interval, wilson

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


@dataclass
class Recipe:
    """The completed runs of one recipe on one data set (one per seed)."""

    runs: list[Run]

    @property
    def first(self) -> Run:
        return self.runs[0]

    def mean(self, key: str) -> float | None:
        values = [v for v in (r.value(key) for r in self.runs) if v is not None]
        return sum(values) / len(values) if values else None

    def test_text(self) -> str:
        """Test accuracy with its 95 % interval."""
        values = [v for v in (r.value("test/acc") for r in self.runs) if v is not None]
        if len(values) >= 2:
            summary = seed_interval(values)
            low, high = max(summary.low, 0.0), min(summary.high, 1.0)  # an accuracy stays within [0, 1]
            return f"{summary.mean:.4f} ± {summary.std:.4f} [{low:.3f}, {high:.3f}]"
        size = self.first.value("data/test_size")
        if not values or not size:
            return fmt(values[0] if values else None, ".4f")
        low, high = wilson(round(values[0] * size), int(size))
        return f"{values[0]:.4f} [{low:.3f}, {high:.3f}]"

    def interval(self) -> tuple[float, float] | None:
        values = [v for v in (r.value("test/acc") for r in self.runs) if v is not None]
        if len(values) >= 2:
            summary = seed_interval(values)
            return max(summary.low, 0.0), min(summary.high, 1.0)
        size = self.first.value("data/test_size")
        return wilson(round(values[0] * size), int(size)) if values and size else None


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
    root = (config.get("data") or {}).get("root")
    return Run(
        path=path,
        status=metrics.get("status", "unfinished"),
        model=metrics.get("model") or (config.get("model") or {}).get("name", "?"),
        data=f"{data} ({Path(str(root)).name})" if root else data,  # image_folder (photos): which folder
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


def fmt(value: float | None, pattern: str) -> str:
    return "–" if value is None else format(value, pattern)


def recipes(runs: list[Run]) -> dict[str, list[Recipe]]:
    """Data set → its recipes, best validation accuracy first (the seeds of a recipe averaged)."""
    grouped: dict[tuple, list[Run]] = {}
    for run in runs:
        if run.status == "completed":
            key = (run.data, run.recipe or (run.model, run.strategy))
            grouped.setdefault(key, []).append(run)
    by_data: dict[str, list[Recipe]] = {}
    for (data, _), members in grouped.items():
        by_data.setdefault(data, []).append(Recipe(sorted(members, key=lambda r: r.metrics.get("seed", 0))))
    for listed in by_data.values():
        listed.sort(key=lambda r: -(r.mean("val/acc_best") if r.mean("val/acc_best") is not None else -1.0))
    return dict(sorted(by_data.items()))


def paired(best: Recipe, runner_up: Recipe, common: frozenset[str] = frozenset()) -> str:
    """The winner against the runner-up on the same test images (runs with a common seed)."""
    seeds = {r.metrics.get("seed"): r for r in runner_up.runs}
    pair = next(((r, seeds[r.metrics.get("seed")]) for r in best.runs if r.metrics.get("seed") in seeds), None)
    pair = pair or (best.first, runner_up.first)
    files = [run.path / predictions.FILE for run in pair]
    if not all(f.is_file() for f in files):
        return "no paired test: a run has no test_predictions.csv"
    first, second = (predictions.read(f) for f in files)
    if [v[0] for v in first.values()] != [v[0] for v in second.values()] or first.keys() != second.keys():
        return "no paired test: the two runs were tested on different images"
    result = mcnemar([v[1] for v in first.values()], [v[1] for v in second.values()])
    return result.words(label(best, common), label(runner_up, common))


def label(recipe: Recipe, common: frozenset[str] = frozenset()) -> str:
    """The recipe's own overrides (less those every run shares), or model × strategy."""
    own = [o for o in recipe.first.recipe if o not in common]
    return f"`{' '.join(own)}`" if own else f"{recipe.first.model} × {recipe.first.strategy}"


def markdown(runs: list[Run], where: Path) -> str:
    by_data = recipes(runs)
    every = [set(r.recipe) for r in runs if r.status == "completed"]
    common = frozenset(set.intersection(*every)) if len(every) > 1 else frozenset()
    completed = sum(r.status == "completed" for r in runs)
    counts = {status: sum(r.status == status for r in runs) for status in dict.fromkeys(r.status for r in runs)}
    lines = [
        f"# Sweep report: {where}",
        "",
        ", ".join(f"{n} {status}" for status, n in {"completed": completed, **counts}.items()) + ".",
        "★ = best validation accuracy for its data set (the test split chooses nothing). Test accuracy: one run,"
        " with the 95 % Wilson interval over its test images; several seeds, mean ± std and the 95 % t interval.",
        *([f"Every run: `{' '.join(sorted(common))}`."] if common else []),
        "",
        "| | data | recipe | seeds | val acc | test acc [95 % interval] | trainable params | fit time (s) | best checkpoint |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for data, listed in by_data.items():
        for rank, recipe in enumerate(listed):
            run = recipe.first
            checkpoint = run.metrics.get("best_checkpoint") or ""
            shown = f"`{os.path.relpath(checkpoint, where)}`" if checkpoint else "–"
            lines.append(
                f"| {'★' if rank == 0 else ''} | {data} | {label(recipe, common)} | {len(recipe.runs)} | "
                f"{fmt(recipe.mean('val/acc_best'), '.4f')} | {recipe.test_text()} | "
                f"{fmt(run.value('model/params/trainable'), ',.0f')} | {fmt(recipe.mean('time/fit_s'), '.1f')} | {shown} |"
            )
    comparisons = [(data, listed) for data, listed in by_data.items() if len(listed) > 1]
    if comparisons:
        lines += ["", "## Is the winner really better?", ""]
        for data, listed in comparisons:
            lines.append(f"- {data}: {paired(listed[0], listed[1], common)}.")
    others = [r for r in runs if r.status != "completed"]
    if others:
        lines += [
            "",
            "## Failed, diverged, interrupted, unfinished or unreadable",
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
    """Test accuracy (with its 95 % interval) against fit time, one marker shape per strategy, on an
    axis from 0 to 1: the intervals show which differences matter, the axis does not magnify them."""
    listed = [
        recipe
        for recipes_of_data in recipes(runs).values()
        for recipe in recipes_of_data
        if None not in (recipe.mean("time/fit_s"), recipe.mean("test/acc"))
    ]
    every = [set(r.recipe) for r in runs if r.status == "completed"]
    common = frozenset(set.intersection(*every)) if len(every) > 1 else frozenset()
    markers = dict(zip(sorted({r.first.strategy for r in listed}), "osD^v<>pP*X"))
    figure = Figure(figsize=(7, 4.5))
    axis = figure.subplots()
    for strategy, marker in markers.items():
        mine = [r for r in listed if r.first.strategy == strategy]
        x, y = [r.mean("time/fit_s") for r in mine], [r.mean("test/acc") for r in mine]
        spans = [r.interval() or (a, a) for r, a in zip(mine, y, strict=True)]
        errors = [[a - s[0] for a, s in zip(y, spans, strict=True)], [s[1] - a for a, s in zip(y, spans, strict=True)]]
        axis.errorbar(x, y, yerr=errors, fmt=marker, markersize=7, capsize=3, label=strategy)
        for recipe, at in zip(mine, zip(x, y, strict=True), strict=True):
            text = label(recipe, common).strip("`")
            axis.annotate(text, at, fontsize=7, xytext=(4, 4), textcoords="offset points")
    axis.set_ylim(0, 1.02)
    axis.set_xlim(left=0)
    axis.set_xlabel("fit time (s)")
    axis.set_ylabel("test accuracy (95 % interval)")
    axis.set_title("Which recipe wins")
    axis.grid(alpha=0.3)
    if markers:
        axis.legend(title="strategy", fontsize=8, loc="lower right")
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
