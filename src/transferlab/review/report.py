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

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from transferlab.errors import TransferlabError
from transferlab.review import predictions
from transferlab.review.runs import Run, find_runs, read_run, run_paths, selection_score
from transferlab.review.statistics import mcnemar, seed_interval, wilson


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

    def mean_selection(self) -> float | None:
        values = [v for v in map(selection_score, self.runs) if v is not None]
        return sum(values) / len(values) if values else None

    def best_run(self) -> Run:
        """The seed with the best selection score: its checkpoint is the one to use."""
        return max(self.runs, key=lambda r: selection_score(r) if selection_score(r) is not None else -1.0)

    def interval(self) -> tuple[float, float] | None:
        """The 95 % interval of the test accuracy. One run: Wilson's over its test images. Several seeds:
        the wider of the t interval over the seeds and Wilson's over all their test predictions pooled
        (seeds that agree give a t interval of width 0, which says nothing of the test set's size)."""
        values = [v for v in (r.value("test/acc") for r in self.runs) if v is not None]
        sizes = [r.value("data/test_size") for r in self.runs if r.value("test/acc") is not None]
        if not values or not all(sizes):
            return None
        low, high = wilson(round(sum(v * n for v, n in zip(values, sizes))), int(sum(sizes)))
        if len(values) >= 2:
            summary = seed_interval(values)
            low, high = min(low, summary.low), max(high, summary.high)
        return max(low, 0.0), min(high, 1.0)  # an accuracy stays within [0, 1]

    def test_text(self) -> str:
        """Test accuracy with its 95 % interval (several seeds: mean ± std)."""
        values = [v for v in (r.value("test/acc") for r in self.runs) if v is not None]
        if not values:
            return "–"
        span = self.interval()
        shown = f" [{span[0]:.3f}, {span[1]:.3f}]" if span else ""
        if len(values) >= 2:
            summary = seed_interval(values)
            return f"{summary.mean:.4f} ± {summary.std:.4f}{shown}"
        return f"{values[0]:.4f}{shown}"


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
        listed.sort(key=lambda r: -(r.mean_selection() if r.mean_selection() is not None else -1.0))
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
    seeds = {run.metrics.get("seed") for run in pair}
    on = f"seed {seeds.pop()}: " if len(seeds) == 1 else ""
    return on + result.words(label(best, common), label(runner_up, common))


def shared_overrides(runs: list[Run]) -> frozenset[str]:
    """The overrides every completed run has: said once above the table, left out of each label."""
    every = [set(r.recipe) for r in runs if r.status == "completed"]
    return frozenset(set.intersection(*every)) if len(every) > 1 else frozenset()


def label(recipe: Recipe, common: frozenset[str] = frozenset()) -> str:
    """The recipe's own overrides (less those every run shares), or model × strategy."""
    own = [o for o in recipe.first.recipe if o not in common]
    return f"`{' '.join(own)}`" if own else f"{recipe.first.model} × {recipe.first.strategy}"


def markdown(runs: list[Run], where: Path) -> str:
    by_data = recipes(runs)
    common = shared_overrides(runs)
    completed = sum(r.status == "completed" for r in runs)
    counts = {status: sum(r.status == status for r in runs) for status in dict.fromkeys(r.status for r in runs)}
    lines = [
        f"# Sweep report: {where}",
        "",
        ", ".join(f"{n} {status}" for status, n in {"completed": completed, **counts}.items()) + ".",
        "★ = best validation score for its data set (each run's `monitor`, val/acc by default; the test split"
        " chooses nothing). Test accuracy with its 95 % interval: Wilson's over the test images (several seeds:"
        " mean ± std, and the wider of the t interval over seeds and Wilson's over their pooled predictions).",
        *([f"Every run: `{' '.join(sorted(common))}`."] if common else []),
        "",
        "| | data | recipe | seeds | val (monitor) | test acc [95 % interval] | trainable params | fit time (s) | best checkpoint (best seed) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for data, listed in by_data.items():
        for rank, recipe in enumerate(listed):
            run = recipe.best_run()
            checkpoint = run.metrics.get("best_checkpoint") or ""
            shown = f"`{os.path.relpath(checkpoint, where)}`" if checkpoint else "–"
            lines.append(
                f"| {'★' if rank == 0 else ''} | {data} | {label(recipe, common)} | {len(recipe.runs)} | "
                f"{fmt(recipe.mean_selection(), '.4f')} | {recipe.test_text()} | "
                f"{fmt(run.value('model/params/trainable'), ',.0f')} | {fmt(recipe.mean('time/fit_s'), '.1f')} | {shown} |"
            )
    comparisons = [(data, listed) for data, listed in by_data.items() if len(listed) > 1]
    if comparisons:
        lines += ["", "## Is the winner really better?", ""]
        for data, listed in comparisons:
            lines.append(f"- {data}: {paired(listed[0], listed[1], common)}.")
    others = [r for r in runs if r.status not in ("completed", "skipped")]  # skipped: the same run as another
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
    common = shared_overrides(runs)
    winners = [recipes_of_data[0] for recipes_of_data in recipes(runs).values()]
    markers = dict(zip(sorted({r.first.strategy for r in listed}), "osD^v<>pP*X"))
    figure = Figure(figsize=(7, 4.5))
    axis = figure.subplots()
    for strategy, marker in markers.items():
        mine = [r for r in listed if r.first.strategy == strategy]
        x, y = [r.mean("time/fit_s") for r in mine], [r.mean("test/acc") for r in mine]
        spans = [r.interval() or (a, a) for r, a in zip(mine, y, strict=True)]
        # max(0, …): Wilson's bound at 100 % can round to a hair below the point itself.
        errors = [
            [max(0.0, a - s[0]) for a, s in zip(y, spans, strict=True)],
            [max(0.0, s[1] - a) for a, s in zip(y, spans, strict=True)],
        ]
        axis.errorbar(x, y, yerr=errors, fmt=marker, markersize=7, capsize=3, label=strategy)
        for recipe, at in zip(mine, zip(x, y, strict=True), strict=True):
            text = ("★ " if recipe in winners else "") + label(recipe, common).strip("`")
            axis.annotate(text, at, fontsize=7, xytext=(4, 4), textcoords="offset points")
    axis.set_ylim(0, 1.05)
    longest = max((r.mean("time/fit_s") for r in listed), default=1.0) or 1.0
    axis.set_xlim(0, longest * 1.35)  # room for the labels right of the slowest recipe
    axis.set_xlabel("fit time (s)")
    axis.set_ylabel("test accuracy (95 % interval)")
    axis.set_title("Test accuracy of each recipe (★ chosen on validation)")
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
