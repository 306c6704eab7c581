"""An experiment's figures as PNG files (matplotlib, Agg backend).

Every experiment gets ``bleu_by_length.png`` (test BLEU per source-length bucket, one
line per condition, seeds averaged: Fig. 2 of Bahdanau et al., 2015) and
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
from mtkit.experiment.overrides import override_values
from mtkit.experiment.report import RunResult, by_condition, values
from mtkit.experiment.spec import ExperimentSpec, PlotSpec
from mtkit.metrics import bleu

MIN_BUCKET = 25  # sentences a length bucket needs before its BLEU means something
LABELS = {
    "test_bleu": "test BLEU",
    "test_bleu_beam5": "test BLEU (beam 5)",
    "test_bleu_greedy": "test BLEU (greedy)",
    "tokens_per_s": "training target tokens / s",
    "len_ratio": "output / reference length (words)",
    "padding_pct": "padding (% of real tokens)",
    "parameters": "parameters",
}
Curve = tuple[str, int, list[tuple[float, float]]]  # condition, seed index, (minutes, BLEU)


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


def length_buckets(lengths: Sequence[int], uppers: Sequence[int]) -> list[tuple[str, list[int]]]:
    """Sentence indices bucketed by length; a bucket under MIN_BUCKET joins a neighbour.

    ``uppers`` are the buckets' upper bounds (``[5, 10]`` -> 1-5, 6-10, 11+). Returns
    (label, indices) pairs, the label saying the range and the number of sentences.
    """
    bounds = [
        (lo, hi) for lo, hi in zip([1, *[u + 1 for u in uppers]], [*uppers, None], strict=True)
    ]
    members: list[list[int]] = [[] for _ in bounds]
    for index, length in enumerate(lengths):
        slot = next((b for b, (_, hi) in enumerate(bounds) if hi is None or length <= hi))
        members[slot].append(index)
    minimum = min(MIN_BUCKET, max(1, len(lengths) // 4))
    while len(members) > 1 and min(len(m) for m in members) < minimum:
        small = min(range(len(members)), key=lambda b: len(members[b]))
        # join the smaller neighbour (the only one at either end)
        if small == 0 or (
            small + 1 < len(members) and len(members[small + 1]) < len(members[small - 1])
        ):
            lo = small
        else:
            lo = small - 1
        bounds[lo : lo + 2] = [(bounds[lo][0], bounds[lo + 1][1])]
        members[lo : lo + 2] = [sorted(members[lo] + members[lo + 1])]
    labels = [f"{lo}-{hi}" if hi is not None else f"{lo}+" for lo, hi in bounds]
    return [(f"{label}\n(n={len(m)})", m) for label, m in zip(labels, members, strict=True) if m]


def bleu_by_length(
    path: Path,
    spec: ExperimentSpec,
    results: Sequence[RunResult],
    sources: Sequence[str],
    references: Sequence[str],
) -> None:
    """BLEU per source-length bucket (words), one line per condition, seeds averaged."""
    plt = pyplot()
    buckets = length_buckets([len(s.split()) for s in sources], spec.length_buckets)
    groups = by_condition(spec, results)
    colour = colours(list(groups))
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for name, group in groups.items():
        usable = [r for r in group if len(r.hypotheses) == len(references)]
        if not usable:
            continue
        scores = [
            statistics.fmean(
                bleu([r.hypotheses[i] for i in idx], [references[i] for i in idx]).score
                for r in usable
            )
            for _, idx in buckets
        ]
        ax.plot(
            range(len(buckets)),
            scores,
            marker="o",
            color=colour[name],
            label=f"{name} ({len(usable)} run{'s' if len(usable) > 1 else ''})",
        )
    ax.set_xticks(range(len(buckets)), [label for label, _ in buckets], fontsize=8)
    search = "each condition's search" if spec.decode_only else "beam 5"
    ax.set_xlabel("source length in words (test sentences per bucket)")
    ax.set_ylabel(f"test BLEU ({search})")
    ax.set_title(f"{spec.name}: BLEU by source sentence length")
    _finish(fig, ax, path)


def curves(path: Path, spec: ExperimentSpec, runs: Sequence[Curve]) -> None:
    """Validation BLEU against minutes of training, every run, a colour per condition."""
    plt = pyplot()
    colour = colours(list(dict.fromkeys(name for name, _, _ in runs)))
    styles = ["-", "--", ":", "-."]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    labelled: set[str] = set()
    for name, index, points in runs:
        good = [(m, b) for m, b in points if not (math.isnan(m) or math.isnan(b))]
        if not good:
            continue
        label = None if name in labelled else name
        labelled.add(name)
        xs, ys = zip(*good, strict=True)
        ax.plot(
            xs, ys, styles[(index - 1) % len(styles)], color=colour[name], marker=".", label=label
        )
    ax.set_xlabel("minutes of training")
    ax.set_ylabel("validation BLEU (greedy)")
    ax.set_title(f"{spec.name}: validation BLEU during training (line style = seed)")
    _finish(fig, ax, path)


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
    sources: Sequence[str],
    references: Sequence[str],
) -> list[Path]:
    """Every figure of the experiment; returns the files written."""
    written = [out / "bleu_by_length.png", out / "curves.png"]
    bleu_by_length(written[0], spec, results, sources, references)
    curves(written[1], spec, runs)
    for plot in spec.plots:
        path = out / f"{plot.name}.png"
        (scatter if plot.kind == "scatter" else sweep)(path, spec, plot, results)
        written.append(path)
    return written
