"""An experiment's results as plain files, side by side in its output folder.

- ``results.csv``: one row per run, with the overrides it really trained with (its
  ``console.log``);
- ``table.md``: conditions × metrics as mean ± sample sd over seeds, the sacreBLEU
  signatures, the budget and the data; the "Differences" of the compared pairs (Welch's
  95% interval over seeds, the verdict against the paper's sign, paired tests per seed
  pair, val ppl at matched updates: :mod:`mtkit.experiment.statistics`); and the
  conditions whose outputs barely depend on the input (the "generic output" regime of an
  undertrained model), where no comparison of source-side ideas means anything;
- ``comparisons.csv``: the same comparisons, one row each, for summaries across experiments;
- ``hypotheses/``: every run's test-set output, to rerun the paired tests.
"""

from __future__ import annotations

import csv
import io
import math
import shlex
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtkit.cli.io import check_output, write_text
from mtkit.experiment import hypotheses
from mtkit.experiment.differences import comparisons_csv, difference_table
from mtkit.experiment.evaluation import read_json
from mtkit.experiment.overrides import override_key
from mtkit.experiment.spec import Comparison, ExperimentSpec
from mtkit.experiment.statistics import Compared, compare
from mtkit.experiment.statistics import read_metrics as read_metrics

# (header, column, decimals, scale) of table.md
TRAIN_TABLE = [
    ("steps", "steps", 0, 1.0),
    ("val BLEU", "val_bleu", 1, 1.0),
    ("test BLEU greedy", "test_bleu_greedy", 1, 1.0),
    ("test BLEU beam 5", "test_bleu_beam5", 1, 1.0),
    ("chrF beam 5", "chrf_beam5", 1, 1.0),
    ("length ratio", "len_ratio", 2, 1.0),
    ("distinct %", "distinct_pct", 0, 1.0),
    ("train tok/s", "tokens_per_s", 0, 1.0),
    ("params (M)", "parameters", 2, 1e-6),
    ("padding %", "padding_pct", 1, 1.0),
]
DECODE_TABLE = [
    ("test BLEU", "test_bleu", 1, 1.0),
    ("chrF", "chrf", 1, 1.0),
    ("length ratio", "len_ratio", 3, 1.0),
    ("words / output", "out_words", 1, 1.0),
    ("distinct %", "distinct_pct", 0, 1.0),
    ("decode s", "decode_s", 1, 1.0),
]
GENERIC_DISTINCT_PCT = 50.0  # below this share of distinct outputs, a model ignores its input
GENERIC_BLEU = 10.0
# What the runner adds to a training child's command line for its own bookkeeping.
RUNNER_KEYS = ("hydra.run.dir", "train.resume", "train.overwrite")


@dataclass
class RunResult:
    """One row of results.csv plus what the plots and the comparisons need: the test-set
    hypotheses (one per test sentence), the run's name (``<condition>-seed<k>``, the
    condition alone for a given checkpoint) and its run directory (None without one)."""

    condition: str
    row: dict[str, Any]
    hypotheses: list[str]
    signatures: dict[str, str] = field(default_factory=dict)
    name: str = ""
    run_dir: Path | None = None


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if not math.isnan(v)]


def training_info(run_dir: Path) -> dict[str, Any]:
    """steps, minutes, stop reason, best val BLEU and mean train tok/s of a finished run."""
    summary = read_json(run_dir / "summary.json") or {}
    metrics = read_metrics(run_dir)
    bleus = _finite([m.get("val_bleu", math.nan) for m in metrics])
    speeds = _finite([m.get("tokens_per_s", math.nan) for m in metrics])
    return {
        "steps": summary.get("steps"),
        "minutes": summary.get("minutes"),
        "stop_reason": summary.get("stop_reason"),
        "val_bleu": max(bleus) if bleus else None,
        "tokens_per_s": round(sum(speeds) / len(speeds)) if speeds else None,
    }


def read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []


def write_results(path: Path, columns: Sequence[str], results: Sequence[RunResult]) -> None:
    """results.csv, written atomically (never over a folder, a device or a named pipe)."""
    handle = io.StringIO(newline="")
    writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    for result in results:
        writer.writerow({c: "" if result.row.get(c) is None else result.row[c] for c in columns})
    write_text(check_output(path, ""), handle.getvalue(), "")


def by_condition(spec: ExperimentSpec, results: Sequence[RunResult]) -> dict[str, list[RunResult]]:
    """Results grouped by condition in the file's order; conditions without runs left out."""
    groups: dict[str, list[RunResult]] = {name: [] for name in spec.conditions}
    for result in results:
        groups.setdefault(result.condition, []).append(result)
    return {name: group for name, group in groups.items() if group}


def values(group: Sequence[RunResult], column: str) -> list[float]:
    found = [r.row.get(column) for r in group]
    return _finite([float(v) for v in found if isinstance(v, (int, float))])


def mean_std(numbers: Sequence[float], decimals: int, scale: float = 1.0) -> str:
    """``30.2 ± 0.4`` (sample std over seeds), ``30.2`` for one value, ``–`` for none."""
    if not numbers:
        return "–"
    scaled = [n * scale for n in numbers]
    mean = statistics.fmean(scaled)
    if len(scaled) < 2:
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f} ± {statistics.stdev(scaled):.{decimals}f}"


def table_rows(spec: ExperimentSpec, results: Sequence[RunResult]) -> list[str]:
    """The markdown table: one row per condition, one column per metric."""
    layout = DECODE_TABLE if spec.decode_only else TRAIN_TABLE
    header = ["condition", "runs", *(h for h, _, _, _ in layout)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, group in by_condition(spec, results).items():
        cells = [f"`{name}`", str(len(group))]
        cells += [mean_std(values(group, c), d, s) for _, c, d, s in layout]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def key_metric(spec: ExperimentSpec) -> tuple[str, str]:
    return (
        ("test_bleu", "test BLEU")
        if spec.decode_only
        else ("test_bleu_beam5", "test BLEU (beam 5)")
    )


def comparisons(
    spec: ExperimentSpec, results: Sequence[RunResult], references: Sequence[str] = ()
) -> list[Compared]:
    """The statistics of each compared pair (``spec.compare``, else every condition
    against the first, no direction claimed); pairs without scores on both sides left out."""
    groups = by_condition(spec, results)
    names = list(groups)
    pairs = spec.compare or [Comparison(name, names[0]) for name in names[1:]]
    found = []
    for pair in pairs:
        runs = (groups.get(pair.condition, []), groups.get(pair.baseline, []))
        metric = pair.metric or key_metric(spec)[0]
        compared = compare(spec.name, pair, metric, runs, references, not spec.decode_only)
        if compared is not None:
            found.append(compared)
    return found


def metric_labels(spec: ExperimentSpec) -> dict[str, str]:
    """results.csv column -> how table.md names it."""
    layout = DECODE_TABLE if spec.decode_only else TRAIN_TABLE
    return {**{column: header for header, column, _, _ in layout}, **dict([key_metric(spec)])}


def regime_warnings(spec: ExperimentSpec, results: Sequence[RunResult]) -> list[str]:
    """Conditions still in the generic-output regime (outputs that ignore the input)."""
    column = key_metric(spec)[0]
    lines = []
    for name, group in by_condition(spec, results).items():
        distinct, score = values(group, "distinct_pct"), values(group, column)
        if not distinct or not score:
            continue
        if (
            statistics.fmean(distinct) < GENERIC_DISTINCT_PCT
            or statistics.fmean(score) < GENERIC_BLEU
        ):
            lines.append(
                f"- `{name}`: {statistics.fmean(distinct):.0f}% distinct outputs, BLEU "
                f"{statistics.fmean(score):.1f}: its outputs barely depend on the input; "
                "comparisons with it say little (train longer or use a smaller model)."
            )
    return lines


def write_table(
    path: Path,
    spec: ExperimentSpec,
    results: Sequence[RunResult],
    notes: Sequence[str],
    references: Sequence[str],
) -> None:
    """table.md (title, claim, table, signatures, budget and data, differences, warnings),
    and beside it comparisons.csv and hypotheses/. ``references``: the test split's, as
    the runs were scored against, aligned with every run's hypotheses."""
    signatures = results[0].signatures if results else {}
    lines = [f"# Experiment `{spec.name}`", "", f"{spec.citation}", "", f"Paper: {spec.claim}", ""]
    lines += table_rows(spec, results)
    lines += ["", "Mean ± sample standard deviation over seeds (one row of results.csv per run)."]
    for name, signature in signatures.items():
        lines.append(f"{name} signature: `{signature}`")
    lines += ["", *notes]
    compared = comparisons(spec, results, references)
    if compared:
        table = difference_table(compared, metric_labels(spec), not spec.decode_only)
        lines += ["", "Differences:", "", *table]
    warnings = regime_warnings(spec, results)
    if warnings:
        lines += ["", "Generic-output regime:", "", *warnings]
    write_text(check_output(path, ""), "\n".join(lines) + "\n", "")
    write_text(check_output(path.parent / "comparisons.csv", ""), comparisons_csv(compared), "")
    outputs = {r.name or r.condition: r.hypotheses for r in results if r.hypotheses}
    example = next((c.paired_runs[0] for c in compared if c.paired_runs), None)
    hypotheses.write_hypotheses(path.parent / hypotheses.FOLDER, spec, outputs, example)


def effective_overrides(spec: ExperimentSpec, run_dir: Path | None) -> list[str] | None:
    """The overrides of the last training command in ``run_dir/console.log`` (the line
    ``$ python -m mtkit.train ...``), without the runner's bookkeeping (run dir, resume,
    overwrite) and with the corpora folder shown as ``${corpora}``; None without one."""
    if run_dir is None:
        return None
    commands = [line[2:] for line in read_lines(run_dir / "console.log") if line.startswith("$ ")]
    if not commands:
        return None
    words = shlex.split(commands[-1])
    start = words.index("mtkit.train") + 1 if "mtkit.train" in words else 0
    kept = [w for w in words[start:] if override_key(w) not in RUNNER_KEYS]
    return [spec.shown(w) for w in kept]


def training_result(
    spec: ExperimentSpec, condition: str, seed: int, run_dir: Path, evaluation: dict[str, Any]
) -> RunResult:
    """The results.csv row of a trained and evaluated run."""
    beam = evaluation["beam5"]
    row = {
        "experiment": spec.name,
        "condition": condition,
        "seed": seed,
        **training_info(run_dir),
        "test_bleu_greedy": evaluation["greedy"]["bleu"],
        "test_bleu_beam5": beam["bleu"],
        "chrf_beam5": beam["chrf"],
        "len_ratio": beam["len_ratio"],
        "distinct_pct": beam["distinct_pct"],
        "parameters": evaluation["parameters"],
        "padding_pct": evaluation["padding_pct"],
        "overrides": " ".join(
            effective_overrides(spec, run_dir) or map(spec.shown, spec.conditions[condition])
        ),
    }
    signatures = {"BLEU": beam["bleu_signature"], "chrF": beam["chrf_signature"]}
    hyps = read_lines(run_dir / "hyp.beam5.txt")
    return RunResult(condition, row, hyps, signatures, run_dir.name, run_dir)


def decode_results(
    spec: ExperimentSpec,
    seed: int | None,
    run_dir: Path | None,
    model_dir: Path,
    evaluations: dict[str, dict[str, Any]],
) -> list[RunResult]:
    """The results.csv rows of one model decoded under every condition."""
    base = training_info(run_dir) if run_dir is not None else {}
    trained = effective_overrides(spec, run_dir) or []
    seed_part = run_dir.name[run_dir.name.rfind("-seed") :] if run_dir is not None else ""
    results = []
    for name, found in evaluations.items():
        row = {
            "experiment": spec.name,
            "condition": name,
            "seed": seed,
            "steps": base.get("steps"),
            "minutes": base.get("minutes"),
            "val_bleu": base.get("val_bleu"),
            "parameters": found.get("parameters"),
            "test_bleu": found["bleu"],
            "chrf": found["chrf"],
            "len_ratio": found["len_ratio"],
            "out_words": found["out_words"],
            "distinct_pct": found["distinct_pct"],
            "decode_s": found["decode_s"],
            "overrides": " ".join([*trained, *map(spec.shown, spec.conditions[name])]),
        }
        signatures = {"BLEU": found["bleu_signature"], "chrF": found["chrf_signature"]}
        hyps = read_lines(model_dir / "decode" / f"{name}.txt")
        results.append(RunResult(name, row, hyps, signatures, name + seed_part, run_dir))
    return results
