"""What `src/screen.py` measures per backbone, and how it is reported: screen.md's table and screen.png."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Entry:
    """One item of `models`: a model config or backbone name, then overrides of its own."""

    text: str
    name: str
    overrides: tuple[str, ...]
    sweepable: bool  # a plain model config: it joins the printed sweep's model=a,b,c


@dataclass
class Screened:
    model: str
    weights: str  # "pretrained" or "random"
    probe: float
    probe_spread: float
    fold_scores: list[float]
    probe_images: int
    images_per_s: float
    pass_seconds: float | None  # None: the probe's features came from the feature cache
    probe_fit_seconds: float  # the cross-validated logistic regression
    params: int
    gflops: float | None
    input_size: int
    native_input_size: int
    features: int
    rank: int = 0
    suggested: str | None = None
    suggested_detail: str = ""


@dataclass
class NotScreened:
    model: str
    reason: str
    details: list[str] = field(default_factory=list)  # the error's further lines: file, url, where to put it


def markdown(report: dict) -> str:
    t = report["thresholds"]
    many = report.get("images_per_class", 0) >= t["many_per_class"]
    lines = [
        f"# Backbone screen: {report['data']}",
        "",
        f"{report.get('train_images', '?')} training images in {report.get('classes', '?')} classes "
        f"({report.get('images_per_class', '?')} per class: {'many' if many else 'few'}, ≥ {t['many_per_class']} is many); "
        f"linear probe on {report.get('probe_images', '?')} of them (seed {report.get('seed', '?')}), on {report['device']}.",
        "",
        "| rank | backbone | probe | ± | suggested | images/s | GFLOPs | params | input |",
        "|---:|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for s in report["backbones"]:
        name = s["model"] if s["weights"] == "pretrained" else f"{s['model']} (random weights: reference)"
        suggested = f"{s['suggested']} ({s['suggested_detail']})" if s["suggested_detail"] else s["suggested"] or "—"
        flops = "—" if s["gflops"] is None else f"{s['gflops']:.3g}"
        lines.append(
            f"| {s['rank']} | {name} | {s['probe']:.3f} | {s['probe_spread']:.3f} | {suggested} | "
            f"{s['images_per_s']:.0f} | {flops} | {s['params'] / 1e6:.1f} M | {s['input_size']} px |"
        )
    lines += [
        "",
        "probe: cross-validated accuracy of a linear probe on frozen features, chance-corrected (0: chance, "
        "1: perfect), as strategy=auto measures similarity; ±: its standard deviation over the folds. "
        f"suggested: the notes' decision table (probe ≥ {t['similar']}: similar). images/s: the frozen forward "
        "pass on this machine; GFLOPs: per image at the input size. Probes closer than their ± are not told "
        "apart by this sample (a larger sample_size narrows it).",
    ]
    lines += tie_note(report["backbones"])
    lines += reference_note(report["backbones"])
    if report["not_screened"]:
        lines += ["", "## Not screened", ""]
        for s in report["not_screened"]:
            lines.append(f"- **{s['model']}**: {s['reason']}")
            lines += [f"  - {detail}" for detail in s["details"]]
    lines += ["", "## Next", "", "```bash", *report["commands"], "```", ""]
    return "\n".join(lines)


def tied_with_first(backbones: list[dict]) -> list[dict]:
    """The pretrained backbones whose probe is within the first one's, or their own, ± of it."""
    pretrained = [s for s in backbones if s["weights"] == "pretrained"]
    if not pretrained:
        return []
    first = pretrained[0]
    return [s for s in pretrained if first["probe"] - s["probe"] <= max(first["probe_spread"], s["probe_spread"])]


def tie_note(backbones: list[dict]) -> list[str]:
    tied = tied_with_first(backbones)
    if len(tied) < 2:
        return []
    cheapest = min(tied, key=lambda s: (s["gflops"] is None, s["gflops"] or 0.0, -s["images_per_s"]))
    return [
        "",
        f"**{', '.join(s['model'] for s in tied)} are tied**: their probes differ by less than their ±, so this "
        f"sample does not tell them apart, and full training on such data often ranks them differently from run to "
        f"run. The cheapest of them, **{cheapest['model']}**, is as good a start as any.",
    ]


def reference_note(backbones: list[dict]) -> list[str]:
    pretrained = [s for s in backbones if s["weights"] == "pretrained"]
    random = [s for s in backbones if s["weights"] != "pretrained"]
    if not pretrained or not random or max(r["probe"] for r in random) < pretrained[0]["probe"]:
        return []
    best = max(random, key=lambda s: s["probe"])
    return [
        "",
        f"**{best['model']} with random weights probes {best['probe']:.3f}, as well as or better than every "
        f"pretrained backbone (best {pretrained[0]['probe']:.3f})**: pretrained features add little to a linear "
        "head on this data; fine-tuning (full_finetune) or training from scratch may do better than head_only.",
    ]


def plot(ranked: list[Screened], path: Path) -> None:
    """Probe against cost: GFLOPs per image (any machine) and seconds per 1,000 images (this one)."""
    from matplotlib.figure import Figure  # no pyplot: drawn to a PNG, never shown (no backend chosen)
    from matplotlib.ticker import NullFormatter

    figure = Figure(figsize=(11, 4.5))
    axes = figure.subplots(1, 2, sharey=True)
    costs = (
        ("GFLOPs per image", lambda s: s.gflops),
        ("seconds per 1,000 images (frozen pass)", lambda s: 1000 / s.images_per_s),
    )
    for axis, (label, cost) in zip(axes, costs):
        for s in ranked:
            if cost(s) is None:
                continue
            pretrained = s.weights == "pretrained"
            axis.errorbar(
                cost(s),
                s.probe,
                yerr=s.probe_spread,
                fmt="o" if pretrained else "x",
                color="C0" if pretrained else "grey",
                capsize=3,
            )
            axis.annotate(
                f"{s.rank}. {s.model}", (cost(s), s.probe), textcoords="offset points", xytext=(5, 4), fontsize=8
            )
        values = [cost(s) for s in ranked if cost(s)]
        if values and max(values) > 10 * min(values):  # a log axis only where costs span orders of magnitude
            axis.set_xscale("log")
            axis.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on a short span
        axis.set_xlabel(label)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("linear probe (chance-corrected)")
    figure.suptitle("Backbone screen: probe against cost (grey ×: random weights)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
