"""Is a difference between two conditions real? ``comparisons.csv`` and table.md's
"Differences", after Clark et al. (2011), Better Hypothesis Testing for Statistical
Machine Translation.

Each compared pair (``condition`` − ``baseline`` on one results.csv column) gets:

- mean ± sample sd of each side over seeds, the difference of the means and Welch's 95%
  interval of it (:func:`mtkit.significance.welch_interval`, over training seeds);
- a verdict against the paper's sign (:func:`mtkit.significance.verdict`): *reproduced*,
  *contradicted* or *not detected*, or *differs* where the paper claims no direction; a
  difference not detected comes with the smallest one the design could have detected
  (the interval's half-width). A side with one seed gets no interval and no verdict;
- sacreBLEU's paired bootstrap p-value per seed pair (seed k of the condition against
  seed k of the baseline on the same test sentences), a test-set check of one pair of
  models that says nothing about other seeds;
- for training experiments, the validation perplexity of each side at matched updates:
  per seed pair, at the last step that both runs logged (an optimisation-side measure
  that a wall-clock budget ending at different steps would otherwise blur).

This module computes; :mod:`mtkit.experiment.differences` writes the results down.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mtkit.experiment.spec import Comparison
from mtkit.significance import Interval, paired_test, verdict, welch_interval

SAMPLES = 1000  # bootstrap resamples per seed pair (mtkit-evaluate's default as well)
NOT_DETECTED = "not detected"
DIFFERS = "differs"  # the interval excludes 0 where the paper claims no direction
TOO_FEW = "too few seeds for an interval"


class RunLike(Protocol):
    """What a comparison reads of one run (a row of results.csv and its files)."""

    @property
    def row(self) -> dict[str, Any]: ...

    @property
    def hypotheses(self) -> list[str]: ...

    @property
    def run_dir(self) -> Path | None: ...

    @property
    def name(self) -> str: ...


@dataclass
class Compared:
    """One comparison (a row of comparisons.csv); ``difference`` = mean(condition) −
    mean(baseline), over seeds. List fields hold one entry per seed pair, in seed order."""

    experiment: str
    condition: str
    baseline: str
    metric: str
    n_condition: int
    n_baseline: int
    mean_condition: float
    mean_baseline: float
    sd_condition: float | None = None
    sd_baseline: float | None = None
    interval: Interval | None = None
    expect: int = 0
    verdict: str = TOO_FEW
    paired_metric: str = ""
    paired_seeds: list[Any] = field(default_factory=list)  # train.seed of each pair
    paired_p_values: list[float] = field(default_factory=list)
    val_ppl_condition: float | None = None
    val_ppl_baseline: float | None = None
    val_ppl_steps: list[int] = field(default_factory=list)
    paired_runs: list[tuple[str, str]] = field(default_factory=list)  # (condition, baseline)

    @property
    def difference(self) -> float:
        return self.mean_condition - self.mean_baseline


def judge(
    baseline: Sequence[float], condition: Sequence[float], expect: int
) -> tuple[Interval | None, str]:
    """Welch's interval of mean(condition) − mean(baseline) and its verdict; (None,
    TOO_FEW) when a side has fewer than 2 seeds. ``expect`` 0: *differs* or *not detected*."""
    if len(baseline) < 2 or len(condition) < 2:
        return None, TOO_FEW
    interval = welch_interval(baseline, condition)  # mean(second) − mean(first)
    if expect == 0:
        return interval, NOT_DETECTED if verdict(interval, 1) == NOT_DETECTED else DIFFERS
    return interval, verdict(interval, expect)


def paired_p_values(
    pairs: Sequence[tuple[Sequence[str], Sequence[str]]],
    references: Sequence[str],
    metric: str = "bleu",
    samples: int = SAMPLES,
) -> tuple[str, list[float]]:
    """sacreBLEU's paired bootstrap of each (baseline, system) pair of hypothesis lists
    against ``references``: (the metric's sacreBLEU name, one p-value per pair). Seeded
    by sacreBLEU (``SACREBLEU_SEED``), so a rerun gives the same p-values."""
    name, found = "", []
    for baseline, system in pairs:
        [result] = paired_test(baseline, system, [references], (metric,), "bootstrap", samples)
        name = result.metric
        found.append(result.p_value)
    return name, found


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    """metrics.csv as floats ('nan' where a value is missing); [] without the file."""
    try:
        with (run_dir / "metrics.csv").open(newline="") as handle:
            return [{k: _float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    except OSError:
        return []


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _ppl_by_step(rows: Sequence[dict[str, float]]) -> dict[int, float]:
    found = {}
    for row in rows:
        step, ppl = row.get("step", math.nan), row.get("val_ppl", math.nan)
        if math.isfinite(step) and math.isfinite(ppl):
            found[int(step)] = ppl
    return found


def matched_val_ppl(
    condition: Sequence[dict[str, float]], baseline: Sequence[dict[str, float]]
) -> tuple[int, float, float] | None:
    """(step, condition's val_ppl, baseline's val_ppl) at the largest step both metrics.csv
    rows logged a validation perplexity at; None when they share no such step."""
    a, b = _ppl_by_step(condition), _ppl_by_step(baseline)
    shared = set(a) & set(b)
    if not shared:
        return None
    step = max(shared)
    return step, a[step], b[step]


def scored(runs: Sequence[RunLike], metric: str) -> list[RunLike]:
    """The runs with a finite ``metric``."""
    found = []
    for run in runs:
        value = run.row.get(metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            found.append(run)
    return found


def seed_pairs(
    condition: Sequence[RunLike], baseline: Sequence[RunLike]
) -> list[tuple[RunLike, RunLike]]:
    """(condition's run, baseline's run) of each train.seed both sides have, in the
    condition's order (seed None: the one model of a decoding-only experiment's checkpoint)."""
    theirs = {run.row.get("seed"): run for run in baseline}
    pairs = []
    for run in condition:
        seed = run.row.get("seed")
        if seed in theirs:
            pairs.append((run, theirs.pop(seed)))  # each baseline run in one pair at most
    return pairs


def compare(
    experiment: str,
    pair: Comparison,
    metric: str,
    runs: tuple[Sequence[RunLike], Sequence[RunLike]],
    references: Sequence[str],
    matched_updates: bool = True,
    samples: int = SAMPLES,
) -> Compared | None:
    """The statistics of ``pair`` on ``metric`` from the (condition, baseline) runs; None
    when a side has no score. Paired tests need hypotheses aligned with ``references``;
    ``matched_updates``: read val_ppl from each seed pair's metrics.csv (training runs)."""
    condition, baseline = scored(runs[0], metric), scored(runs[1], metric)
    if not condition or not baseline:
        return None
    found = _describe(experiment, pair, metric, condition, baseline)
    pairs = seed_pairs(condition, baseline)
    _add_paired(found, pairs, references, samples)
    if matched_updates:
        _add_val_ppl(found, pairs)
    return found


def _describe(
    experiment: str,
    pair: Comparison,
    metric: str,
    condition: Sequence[RunLike],
    baseline: Sequence[RunLike],
) -> Compared:
    """Means, sds, the interval and the verdict of the two sides' scores (all their runs)."""
    a = [float(r.row[metric]) for r in condition]
    b = [float(r.row[metric]) for r in baseline]
    interval, said = judge(b, a, pair.expect)
    return Compared(
        experiment=experiment,
        condition=pair.condition,
        baseline=pair.baseline,
        metric=metric,
        n_condition=len(a),
        n_baseline=len(b),
        mean_condition=statistics.fmean(a),
        mean_baseline=statistics.fmean(b),
        sd_condition=statistics.stdev(a) if len(a) > 1 else None,
        sd_baseline=statistics.stdev(b) if len(b) > 1 else None,
        interval=interval,
        expect=pair.expect,
        verdict=said,
    )


def _add_paired(
    found: Compared,
    pairs: Sequence[tuple[RunLike, RunLike]],
    references: Sequence[str],
    samples: int,
) -> None:
    """Paired p-values of the seed pairs whose hypotheses align with ``references``."""
    size = len(references)
    tested = [
        (ours, theirs)
        for ours, theirs in pairs
        if size and len(ours.hypotheses) == len(theirs.hypotheses) == size
    ]
    hypotheses = [(theirs.hypotheses, ours.hypotheses) for ours, theirs in tested]
    metric = "chrf" if "chrf" in found.metric else "bleu"
    found.paired_metric, found.paired_p_values = paired_p_values(
        hypotheses, references, metric, samples
    )
    found.paired_seeds = [ours.row.get("seed") for ours, _ in tested]
    found.paired_runs = [(ours.name, theirs.name) for ours, theirs in tested]


def _add_val_ppl(found: Compared, pairs: Sequence[tuple[RunLike, RunLike]]) -> None:
    """Mean val_ppl of each side over the seed pairs with a shared step, and those steps."""
    matched = []
    for ours, theirs in pairs:
        if ours.run_dir is None or theirs.run_dir is None:
            continue
        match = matched_val_ppl(read_metrics(ours.run_dir), read_metrics(theirs.run_dir))
        if match is not None:
            matched.append(match)
    if matched:
        found.val_ppl_steps = [step for step, _, _ in matched]
        found.val_ppl_condition = statistics.fmean(a for _, a, _ in matched)
        found.val_ppl_baseline = statistics.fmean(b for _, _, b in matched)
