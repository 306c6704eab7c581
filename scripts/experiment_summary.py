#!/usr/bin/env python
"""Every experiment's comparisons in one markdown table: the paper's effect against mtkit's.

Usage::

    python scripts/experiment_summary.py [NAME ...]              # print the table
    python scripts/experiment_summary.py --write docs/experiments.md
    python scripts/experiment_summary.py --check docs/experiments.md   # exit 1 when stale

For each ``compare`` entry of each ``conf/experiment/*.yaml`` (or, without entries, each
condition against the first, as the runner's report does), one row: the paper's effect
(``paper.effect``), mtkit's mean difference over seeds with Welch's 95% interval, the
verdict (:func:`mtkit.significance.verdict`: *reproduced*, *contradicted*, *not detected*;
*differs* where the paper claims no direction), the budget the committed runs had and
their seeds. The numbers come from ``docs/experiments/<name>/comparisons.csv`` when it
has the comparison, else from that folder's ``results.csv``; a condition without rows is
*not run*. Committed rows that ran other overrides than the file now gives their
condition are marked and listed under the table.

``--write FILE`` replaces the text between ``<!-- summary:start -->`` and
``<!-- summary:end -->`` in FILE with the table; ``--check FILE`` exits 1 when that text
is not the table this script prints now, so CI can keep the page in step with the results.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mtkit.errors import ConfigError, DataError, run_cli
from mtkit.experiment.load import load_spec
from mtkit.experiment.spec import Comparison, ExperimentSpec
from mtkit.significance import Interval, detectable, verdict, welch_interval

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- summary:start -->", "<!-- summary:end -->"
NOT_RUN, TOO_FEW = "not run", "too few seeds"
NOT_DETECTED, DIFFERS = "not detected", "differs"
LABELS = {"test_bleu_beam5": "BLEU", "test_bleu": "BLEU", "chrf_beam5": "chrF", "chrf": "chrF",
          "tokens_per_s": "tok/s", "padding_pct": "padding %",
          "len_ratio": "length ratio"}  # fmt: skip
HEADER = ["experiment", "comparison", "paper's effect", "mtkit's effect [95% interval]",
          "verdict", "budget of the results", "seeds"]  # fmt: skip
DESCRIPTION = "Every experiment's comparisons in one table: the paper's effect against mtkit's."
MINUTES = re.compile(r"^train\.max_minutes=([0-9.]+)$")
STEPS = re.compile(r"^train\.max_steps=([0-9]+)$")


@dataclass(frozen=True)
class Effect:
    """One comparison's numbers: ``difference`` = mean(condition) − mean(baseline)."""

    difference: float
    interval: Interval | None
    verdict: str
    seeds: tuple[int, int]  # scores of (condition, baseline)


@dataclass(frozen=True)
class Row:
    """One line of the summary table (cells as printed), and its notes."""

    cells: list[str]
    notes: list[str]


def read_csv(path: Path) -> list[dict[str, str]]:
    """A CSV file's rows; [] when it does not exist."""
    if not path.is_file():
        return []
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{path}: cannot read it as CSV: {error}") from None


def number(text: str | None) -> float | None:
    """A finite float, or None for an empty or non-numeric cell."""
    try:
        value = float(text) if text not in (None, "") else math.nan
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def scores(rows: Sequence[dict[str, str]], condition: str, metric: str) -> list[float]:
    """``metric`` of each run of ``condition`` (one per seed), in file order."""
    found = [number(r.get(metric)) for r in rows if r.get("condition") == condition]
    return [v for v in found if v is not None]


def judge(baseline: Sequence[float], condition: Sequence[float], expect: int) -> Effect:
    """Welch's interval of mean(condition) − mean(baseline) and its verdict."""
    seeds = (len(condition), len(baseline))
    difference = statistics.fmean(condition) - statistics.fmean(baseline)
    if min(seeds) < 2:
        return Effect(difference, None, TOO_FEW, seeds)
    interval = welch_interval(baseline, condition)
    if expect == 0:
        said = NOT_DETECTED if verdict(interval, 1) == NOT_DETECTED else DIFFERS
    else:
        said = verdict(interval, expect)
    return Effect(interval.difference, interval, said, seeds)


def from_comparisons(
    rows: Sequence[dict[str, str]], pair: Comparison, metric: str
) -> Effect | None:
    """The comparison as the runner's comparisons.csv gives it; None when it lacks it."""
    for row in rows:
        key = (row.get("condition"), row.get("baseline"), row.get("metric"))
        if key != (pair.condition, pair.baseline, metric):
            continue
        difference = number(row.get("difference"))
        if difference is None or not row.get("verdict"):
            return None
        low, high = number(row.get("ci_low")), number(row.get("ci_high"))
        interval = None if low is None or high is None else Interval(difference, low, high, 0.95, 0)
        seeds = (int(number(row.get("n_condition")) or 0), int(number(row.get("n_baseline")) or 0))
        return Effect(difference, interval, str(row["verdict"]), seeds)
    return None


def effect_text(effect: Effect) -> tuple[str, str]:
    """(the difference with its interval, the verdict) as the table prints them."""
    low, high = (effect.interval.low, effect.interval.high) if effect.interval else (0.0, 0.0)
    decimals = 0 if max(abs(effect.difference), abs(low), abs(high)) >= 100 else 2
    text = f"{effect.difference:+.{decimals}f}"
    if effect.interval is None:
        return f"{text} (no interval)", effect.verdict
    interval = f"{text} [{low:+.{decimals}f}, {high:+.{decimals}f}]"
    if effect.verdict == NOT_DETECTED:
        size = detectable(effect.interval)
        return interval, f"not detected (this design detects differences above ±{size:.2f})"
    return interval, effect.verdict


def span(values: Sequence[float], decimals: int) -> str:
    """``107–266``, or one value when all are equal."""
    low, high = f"{min(values):.{decimals}f}", f"{max(values):.{decimals}f}"
    return low if low == high else f"{low}–{high}"


def budget_text(rows: Sequence[dict[str, str]]) -> str:
    """The budget of these runs: from their overrides (the runner writes the budget's
    ``train.max_steps`` / ``train.max_minutes``), else their stop reason, else whether the
    runs of one condition took the same number of updates."""
    steps = [v for v in (number(r.get("steps")) for r in rows) if v is not None]
    minutes = [v for v in (number(r.get("minutes")) for r in rows) if v is not None]
    if not steps:
        return "–"
    updates, took = span(steps, 0), span(minutes, 0) if minutes else "?"
    words = {w for r in rows for w in (r.get("overrides") or "").split()}
    given = [float(m.group(1)) for w in words if (m := MINUTES.match(w))]
    capped = [int(m.group(1)) for w in words if (m := STEPS.match(w))]
    reasons = {r.get("stop_reason") or "" for r in rows}
    if reasons == {"max_steps"} and capped:  # every run stopped at its update cap
        return f"{updates} updates ({took} min)"
    if given or reasons == {"max_minutes"}:
        # a run stops at the first update past its minutes: the shortest run is nearest
        limit = f"{max(given):g}" if given else f"~{math.floor(min(minutes or [0.0]))}"
        return f"wall-clock {limit} min ({updates} updates)"
    if capped and "train.early_stopping_metric=loss" in words:
        return f"to convergence, ≤ {max(capped)} updates ({updates} updates, {took} min)"
    if capped or reasons == {"max_steps"} or same_steps(rows):
        return f"{updates} updates ({took} min)"
    return f"wall-clock ~{math.floor(min(minutes or [0.0]))} min ({updates} updates)"


def same_steps(rows: Sequence[dict[str, str]]) -> bool:
    """Whether every condition's runs (two or more) took one number of updates."""
    by_condition: dict[str, set[str]] = {}
    for row in rows:
        by_condition.setdefault(row.get("condition", ""), set()).add(row.get("steps", ""))
    counts = [sum(r.get("condition") == c for r in rows) for c in by_condition]
    return bool(counts) and min(counts) >= 2 and all(len(s) == 1 for s in by_condition.values())


def stale(spec: ExperimentSpec, rows: Sequence[dict[str, str]], condition: str) -> list[str]:
    """The condition's overrides (as the file gives them now) missing from its committed
    rows: those rows ran an earlier version of the condition."""
    wanted = [spec.shown(o) for o in spec.conditions.get(condition, [])]
    missing: list[str] = []
    for row in rows:
        if row.get("condition") == condition:
            words = set((row.get("overrides") or "").split())
            missing += [o for o in wanted if o not in words and o not in missing]
    return missing


def key_metric(spec: ExperimentSpec) -> str:
    return "test_bleu" if spec.decode_only else "test_bleu_beam5"


def pairs(spec: ExperimentSpec) -> list[Comparison]:
    """The file's compare entries, else every condition against the first."""
    if spec.compare:
        return list(spec.compare)
    names = list(spec.conditions)
    return [Comparison(name, names[0]) for name in names[1:]]


def summary_row(spec: ExperimentSpec, folder: Path, pair: Comparison) -> Row:
    """The table row of one comparison from ``folder``'s committed files."""
    metric = pair.metric or key_metric(spec)
    label = f"`{pair.condition}` − `{pair.baseline}`, {LABELS.get(metric, metric)}"
    results = read_csv(folder / "results.csv")
    mine = [r for r in results if r.get("condition") in (pair.condition, pair.baseline)]
    side_scores = [scores(results, name, metric) for name in (pair.condition, pair.baseline)]
    effect = from_comparisons(read_csv(folder / "comparisons.csv"), pair, metric)
    if effect is None and all(side_scores):
        effect = judge(side_scores[1], side_scores[0], pair.expect)
    notes = []
    for name in (pair.condition, pair.baseline):
        missing = " ".join(f"`{o}`" for o in stale(spec, results, name))
        if missing:
            notes.append(
                f"† `{spec.name}`: the committed `{name}` runs predate its current overrides "
                f"({missing}); their numbers are those of the earlier condition."
            )
    label += " †" if notes else ""
    paper = spec.effect or "–"
    if effect is None:
        sides = zip((pair.condition, pair.baseline), side_scores, strict=True)
        absent = [n for n, s in sides if not s]
        said = f"{NOT_RUN} ({', '.join(f'`{n}`' for n in absent)})"
        return Row([spec.name, label, paper, "–", said, "–", "–"], [])
    difference, said = effect_text(effect)
    seeds = f"{effect.seeds[0]} / {effect.seeds[1]}"
    return Row([spec.name, label, paper, difference, said, budget_text(mine), seeds], notes)


def summary(names: Sequence[str], experiments: Path, results: Path) -> str:
    """The markdown table (and its notes) of the experiments ``names``."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    notes: list[str] = []
    for name in names:
        path = experiments / f"{name}.yaml"
        # The summary reads no corpus: the experiments folder stands in for ${corpora}.
        spec = load_spec(str(path), corpora=str(experiments))
        for i, pair in enumerate(pairs(spec)):
            row = summary_row(spec, results / name, pair)
            cells = row.cells if i == 0 else ["", row.cells[1], "", *row.cells[3:]]
            lines.append("| " + " | ".join(cells) + " |")
            notes += [n for n in row.notes if n not in notes]
    return "\n".join([*lines, *(["", *notes] if notes else [])]) + "\n"


def replace_between(text: str, table: str, where: str) -> str:
    """``text`` with the part between the two marker lines replaced by ``table``."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ConfigError(f"{where}: expected a line {START} and, after it, a line {END}")
    return text[: start + len(START)] + "\n" + table + text[end:]


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("names", nargs="*", metavar="NAME", help="experiments (default: all)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--write", type=Path, metavar="FILE", help="put the table between markers")
    where.add_argument("--check", type=Path, metavar="FILE", help="exit 1 if FILE's table is stale")
    parser.add_argument("--experiments", type=Path, default=ROOT / "conf" / "experiment")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "experiments")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table, write it into a file, or check a file against it (exit status)."""
    args = parse(sys.argv[1:] if argv is None else argv)
    names = args.names or sorted(p.stem for p in args.experiments.glob("*.yaml"))
    table = summary(names, args.experiments, args.results)
    target = args.write or args.check
    if target is None:
        print(table, end="")
        return 0
    try:
        text = target.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{target}: cannot read it: {error}") from None
    updated = replace_between(text, table, str(target))
    if args.check is not None:
        if updated != text:
            print(f"{target}: the summary table is stale; run --write {target}", file=sys.stderr)
            return 1
        return 0
    target.write_text(updated, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main, "experiment_summary"))
