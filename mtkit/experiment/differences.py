"""The comparisons of an experiment as files: ``comparisons.csv`` and table.md's "Differences".

:mod:`mtkit.experiment.statistics` computes each comparison (:class:`Compared`); this
module writes them down. ``comparisons.csv`` is for machines (the summary across
experiments is built from it): one row per comparison, numbers with 4 decimals, lists
(one entry per seed pair, in seed order) ``;``-separated, empty cells where a value does
not exist (no interval with one seed, no perplexity for decoding-only experiments). The
markdown table is for readers, with a legend that says what each verdict means; a
difference that is not detected is never worded as "no difference".
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from typing import Any

from mtkit.experiment.statistics import NOT_DETECTED, SAMPLES, Compared
from mtkit.significance import detectable

SIGNS = {1: "higher", -1: "lower", 0: "no direction claimed"}
COLUMNS = (
    "experiment",
    "condition",
    "baseline",
    "metric",
    "n_condition",
    "n_baseline",
    "mean_condition",
    "sd_condition",
    "mean_baseline",
    "sd_baseline",
    "difference",
    "ci_low",
    "ci_high",
    "expect",
    "verdict",
    "detectable",
    "paired_metric",
    "paired_seeds",
    "paired_p_values",
    "val_ppl_condition",
    "val_ppl_baseline",
    "val_ppl_steps",
)
LEGEND = [
    "Difference: mean of the condition minus mean of the baseline over seeds; 95% interval: "
    "Welch's t over training seeds (Clark et al., 2011). *reproduced* / *contradicted*: the "
    "interval excludes 0 with / against the paper's sign; *differs*: it excludes 0 where "
    "no direction is claimed; *not detected*: the interval holds 0, and this design could "
    "not have shown a true difference smaller than the interval's half-width (absence of "
    "evidence, not evidence that the two are equal).",
    f"Paired p: sacreBLEU's paired bootstrap ({SAMPLES} resamples) of seed k of the condition "
    "against seed k of the baseline on the test set (the outputs in hypotheses/); it tests "
    "one pair of models on these sentences, not the chance of the training seed.",
    "Val ppl: validation perplexity of each side at the last update both runs of a seed "
    "pair logged, mean over seed pairs.",
]


def verdict_text(row: Compared) -> str:
    """The verdict as table.md words it: a miss names the difference the design detects."""
    if row.verdict == NOT_DETECTED and row.interval is not None:
        return (
            f"not detected (this design detects differences above ±{detectable(row.interval):.2f})"
        )
    return row.verdict


def csv_row(row: Compared) -> dict[str, str]:
    """One line of comparisons.csv, keyed by :data:`COLUMNS`."""
    interval = row.interval
    values: dict[str, Any] = {
        **{k: v for k, v in row.__dict__.items() if k in COLUMNS},
        "difference": row.difference,
        "ci_low": None if interval is None else interval.low,
        "ci_high": None if interval is None else interval.high,
        "detectable": None if interval is None else detectable(interval),
    }
    return {k: _cell(values[k]) for k in COLUMNS}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else ""
    if isinstance(value, list):
        return ";".join(_cell(v) for v in value)
    return str(value)


def comparisons_csv(rows: Sequence[Compared]) -> str:
    """comparisons.csv: a header of :data:`COLUMNS` and one line per comparison."""
    handle = io.StringIO(newline="")
    writer = csv.DictWriter(handle, fieldnames=list(COLUMNS))
    writer.writeheader()
    for row in rows:
        writer.writerow(csv_row(row))
    return handle.getvalue()


def difference_table(rows: Sequence[Compared], labels: dict[str, str], training: bool) -> list[str]:
    """table.md's "Differences": one markdown row per comparison, then the legend.

    ``labels`` names metrics (results.csv column -> table header); ``training`` adds the
    validation perplexity at matched updates."""
    header = ["condition − baseline", "metric", "seeds", "condition", "baseline", "difference",
              "95% interval", "paper", "verdict", "paired p per seed"]  # fmt: skip
    header += ["val ppl at matched updates"] if training else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [
            f"`{row.condition}` − `{row.baseline}`",
            labels.get(row.metric, row.metric),
            f"{row.n_condition} / {row.n_baseline}",
            _mean_sd(row.mean_condition, row.sd_condition),
            _mean_sd(row.mean_baseline, row.sd_baseline),
            f"{row.difference:+.2f}",
            _interval(row),
            SIGNS.get(row.expect, str(row.expect)),
            verdict_text(row),
            ", ".join(f"{p:.3f}" for p in row.paired_p_values) or "–",
        ]
        cells += [_val_ppl(row)] if training else []
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, "", *(LEGEND if training else LEGEND[:-1])]


def _interval(row: Compared) -> str:
    interval = row.interval
    return "–" if interval is None else f"[{interval.low:+.2f}, {interval.high:+.2f}]"


def _mean_sd(mean: float, sd: float | None) -> str:
    return f"{mean:.2f}" if sd is None else f"{mean:.2f} ± {sd:.2f}"


def _val_ppl(row: Compared) -> str:
    if row.val_ppl_condition is None or row.val_ppl_baseline is None:
        return "–"
    steps = sorted(set(row.val_ppl_steps))
    at = f"step {steps[0]}" if len(steps) == 1 else f"steps {', '.join(map(str, steps))}"
    return f"{row.val_ppl_condition:.2f} vs. {row.val_ppl_baseline:.2f} ({at})"
