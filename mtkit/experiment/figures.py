"""An experiment's figures as PNG files (matplotlib, Agg backend).

Every experiment gets ``bleu_by_length.png`` (test BLEU per source-length bucket, one
line per condition, seeds averaged, with 95% bootstrap bands: Fig. 2 of Bahdanau et
al., 2015; the numbers in :mod:`mtkit.experiment.by_length` and ``bleu_by_length.csv``;
one more PNG per extra test set) and
``curves.png`` (validation BLEU against training minutes, every run). The experiment
file may declare more: ``scatter`` (one point per run, e.g. training speed against
BLEU) and ``sweep`` (a metric against a numeric override, e.g. BLEU against beam size,
one line per value of another override).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from mtkit.cli.io import check_output, write_file
from mtkit.errors import MtkitError
from mtkit.experiment.by_length import (
    BucketScore,
    LengthTest,
    score_by_length,
    write_csv,
)
from mtkit.experiment.by_length import length_buckets as length_buckets  # re-exported
from mtkit.experiment.overrides import override_values
from mtkit.experiment.report import RunResult, by_condition, values
from mtkit.experiment.spec import ExperimentSpec, PlotSpec

LABELS = {
    "test_bleu": "test BLEU",
    "test_bleu_beam5": "test BLEU (beam 5)",
    "test_bleu_greedy": "test BLEU (greedy)",
    "tokens_per_s": "training target tokens / s",
    "len_ratio": "output / reference length (words)",
    "padding_pct": "padding (% of real tokens)",
    "parameters": "parameters",
}
Curve = tuple[str, int, list[tuple[float, float, float]]]  # condition, seed, (update, BLEU, ppl)


def pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MtkitError("the plots need matplotlib: pip install 'mtkit[plots]'") from None
    return plt


def colours(names: Sequence[str]) -> dict[str, Any]:
    """One fixed colour per condition, the same in every figure of an experiment."""
    plt = pyplot()
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def bleu_by_length(
    path: Path,
    spec: ExperimentSpec,
    test: LengthTest,
    labels: Sequence[str],
    scores: Sequence[BucketScore],
) -> None:
    """Seed-mean BLEU per source-length bucket (words), a line and a 95% band per condition."""
    plt = pyplot()
    colour = colours(list(spec.conditions))
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for name in spec.conditions:
        found = [s for s in scores if s.condition == name]
        if not found:
            continue
        xs = range(len(found))
        runs = found[0].runs
        label = f"{name} ({runs} run{'s' if runs > 1 else ''})"
        ax.plot(xs, [s.bleu for s in found], marker="o", color=colour[name], label=label)
        lows, highs = [s.low for s in found], [s.high for s in found]
        ax.fill_between(xs, lows, highs, color=colour[name], alpha=0.18, linewidth=0)
    ax.set_xticks(range(len(labels)), list(labels), fontsize=8)
    search = "each condition's search" if spec.decode_only else "beam 5"
    ax.set_xlabel(f"source length in words ({test.name} sentences per bucket)")
    ax.set_ylabel(f"BLEU ({search}), mean of seeds")
    ax.set_title(
        f"{spec.name}: BLEU by source length, {test.name} split\n"
        f"(bands: 95% bootstrap intervals over the bucket's sentences)",
        fontsize=10,
    )
    _finish(fig, ax, path)


def curves(path: Path, spec: ExperimentSpec, runs: Sequence[Curve]) -> None:
    """Validation BLEU and perplexity against updates, every run, a colour per condition.

    Updates, not minutes: verdicts compare runs at equal updates, and the curves show
    whether a budget has left the fast-learning phase (the lines still climb steeply) or
    reached a plateau.
    """
    plt = pyplot()
    colour = colours(list(dict.fromkeys(name for name, _, _ in runs)))
    styles = ["-", "--", ":", "-."]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    labelled: set[str] = set()
    for name, index, points in runs:
        good = [p for p in points if not any(math.isnan(v) for v in p)]
        if not good:
            continue
        label = None if name in labelled else name
        labelled.add(name)
        steps, bleu, ppl = zip(*good, strict=True)
        style = dict(color=colour[name], marker=".", label=label)
        left.plot(steps, bleu, styles[(index - 1) % len(styles)], **style)
        right.plot(steps, ppl, styles[(index - 1) % len(styles)], **style)
    for ax, what in ((left, "validation BLEU (greedy)"), (right, "validation perplexity")):
        ax.set_xlabel("updates")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
    right.set_yscale("log")
    fig.suptitle(f"{spec.name}: validation during training (line style = seed)")
    _finish(fig, left, path)


def scatter(path: Path, spec: ExperimentSpec, plot: PlotSpec, results: Sequence[RunResult]) -> None:
    """One point per run at (x, y); each condition's mean ± std as a labelled cross."""
    plt = pyplot()
    groups = by_condition(spec, results)
    colour = colours(list(groups))
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for name, group in groups.items():
        points = [(r.row.get(plot.x), r.row.get(plot.y[0])) for r in group]
        points = [
            (float(x), float(y))
            for x, y in points
            if isinstance(x, (int, float)) and isinstance(y, (int, float))
        ]
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        ax.scatter(xs, ys, color=colour[name], alpha=0.5, s=18)
        ax.errorbar(
            statistics.fmean(xs),
            statistics.fmean(ys),
            xerr=statistics.stdev(xs) if len(xs) > 1 else None,
            yerr=statistics.stdev(ys) if len(ys) > 1 else None,
            fmt="o",
            color=colour[name],
            markersize=7,
            capsize=3,
            label=name,
        )
    if plot.log_x:
        ax.set_xscale("log")
    ax.set_xlabel(LABELS.get(plot.x, plot.x))
    ax.set_ylabel(LABELS.get(plot.y[0], plot.y[0]))
    ax.set_title(f"{spec.name}: {plot.name.replace('_', ' ')}")
    _finish(fig, ax, path)


def sweep(path: Path, spec: ExperimentSpec, plot: PlotSpec, results: Sequence[RunResult]) -> None:
    """Metrics against a numeric override, one line per ``series`` value, seeds averaged."""
    plt = pyplot()
    groups = by_condition(spec, results)
    settings = {name: override_values(spec.conditions[name]) for name in groups}
    fig, axes = plt.subplots(1, len(plot.y), figsize=(5.5 * len(plot.y), 4.2), squeeze=False)
    for ax, column in zip(axes[0], plot.y, strict=True):
        lines: dict[str, list[tuple[float, float]]] = {}
        for name, group in groups.items():
            found = values(group, column)
            if not found:
                continue
            x = settings[name].get(plot.x)
            series = str(settings[name].get(plot.series, "")) if plot.series else column
            if isinstance(x, (int, float)) and not isinstance(x, bool):
                lines.setdefault(series, []).append((float(x), statistics.fmean(found)))
            else:  # a condition without the swept key (e.g. full softmax): a reference line
                ax.axhline(statistics.fmean(found), linestyle="--", color="grey", label=name)
        for series, points in lines.items():
            xs, ys = zip(*sorted(points), strict=True)
            label = f"{plot.series.split('.')[-1]}={series}" if plot.series else None
            ax.plot(xs, ys, marker="o", label=label)
        ticks = sorted({x for points in lines.values() for x, _ in points})
        _x_axis(ax, ticks, plot.log_x)
        ax.set_xlabel(plot.x)
        ax.set_ylabel(LABELS.get(column, column))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(f"{spec.name}: {plot.name.replace('_', ' ')}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _x_axis(ax: Any, ticks: Sequence[float], log: bool) -> None:
    """Ticks at the swept values, written plainly (``50``, not ``5 x 10^1``)."""
    from matplotlib.ticker import NullLocator

    if log:
        ax.set_xscale("log")
    if ticks:
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_locator(NullLocator())


def _finish(fig: Any, ax: Any, path: Path) -> None:
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()

    def png(stream: BinaryIO) -> None:
        fig.savefig(stream, format="png", dpi=110)

    write_file(check_output(path, ""), png, "")
    pyplot().close(fig)


def write_figures(
    out: Path,
    spec: ExperimentSpec,
    results: Sequence[RunResult],
    runs: Sequence[Curve],
    tests: Sequence[LengthTest],
) -> list[Path]:
    """Every figure of the experiment; returns the files written.

    ``tests``: the test split first (``bleu_by_length.png``), then each extra test set
    (``bleu_by_length_<split>.png``); their numbers go to ``bleu_by_length.csv``.
    """
    written: list[Path] = []
    every_score: list[BucketScore] = []
    for position, test in enumerate(tests):
        name = "bleu_by_length" if position == 0 else f"bleu_by_length_{test.name}"
        labels, scores = score_by_length(spec, test)
        bleu_by_length(out / f"{name}.png", spec, test, labels, scores)
        written.append(out / f"{name}.png")
        every_score += scores
    write_csv(out / "bleu_by_length.csv", every_score)
    written += [out / "bleu_by_length.csv", out / "curves.png"]
    curves(written[-1], spec, runs)
    for plot in spec.plots:
        path = out / f"{plot.name}.png"
        (scatter if plot.kind == "scatter" else sweep)(path, spec, plot, results)
        written.append(path)
    return written
