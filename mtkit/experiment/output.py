"""The experiment folder's report: results.csv, table.md (with the speed table), the figures.

Written at the end of every invocation from the runs complete so far, so a report can be
rebuilt at any time (``--report-only``) and always matches the run folders.
"""

from __future__ import annotations

from mtkit.experiment import by_length, evaluation, figures, report, speed
from mtkit.experiment.overrides import merge
from mtkit.experiment.runner import Options, budget_of
from mtkit.experiment.spec import ExperimentSpec, display


def summary(spec: ExperimentSpec, found: list[report.RunResult]) -> str:
    row = found[0].row
    trained = (
        f"{row.get('steps')} steps in {row.get('minutes')} min, val BLEU {row.get('val_bleu')}"
    )
    if spec.decode_only:
        scores = ", ".join(f"{r.condition} {r.row['test_bleu']}" for r in found)
        return f"{trained}; test BLEU {scores}"
    return (
        f"{trained}; test BLEU {row['test_bleu_greedy']} greedy / {row['test_bleu_beam5']} beam 5"
    )


def notes(spec: ExperimentSpec, options: Options, test: evaluation.TestSet) -> list[str]:
    """The lines under the table: budget, seeds, data, overrides, how runs were evaluated."""
    seeds = options.seeds or spec.seeds
    shared = " ".join(spec.shown(o) for o in merge(spec.data, spec.common, options.overrides))
    seed_values = ", ".join(str(spec.seed + k) for k in range(seeds))
    lines = [
        f"Budget: {budget_of(spec, options).describe()}; "
        f"{seeds} seed{'s' if seeds > 1 else ''} per condition (`train.seed` {seed_values}).",
        f"Data and shared settings: `{shared}`; test split: {len(test)} sentences.",
    ]
    if spec.checkpoint is not None:
        lines[0] = f"Checkpoint: `{spec.checkpoint.name}` (not trained here)."
    if spec.decode_only:
        lines.append("Each condition decodes the test split with best.pt (CPU, fp32).")
    else:
        lines.append(
            "Test scores: best.pt on the test split (CPU, fp32), greedy and beam 5 with the "
            "checkpoint's length normalisation; train tok/s: mean over validations."
        )
    return lines


def write_report(
    spec: ExperimentSpec,
    options: Options,
    results: list[report.RunResult],
    curves: list[figures.Curve],
    test: evaluation.TestSet,
    extras: list[by_length.LengthTest] | None = None,
) -> None:
    """results.csv, table.md and the figures, from the runs complete so far."""
    out = options.out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    report.write_results(out / "results.csv", spec.columns, results)
    lines = notes(spec, options, test) + speed_lines(spec, results)
    report.write_table(out / "table.md", spec, results, lines, test.references)
    main = by_length.LengthTest(
        test.name, test.sources, test.references, [(r.condition, r.hypotheses) for r in results]
    )
    written = figures.write_figures(out, spec, results, curves, [main, *(extras or [])])
    names = ", ".join(p.name for p in written)
    print(f"wrote {display(out)}/: results.csv ({len(results)} rows), table.md, {names}")


def speed_lines(spec: ExperimentSpec, results: list[report.RunResult]) -> list[str]:
    """The speed table of a training experiment (none for decoding-only ones)."""
    if spec.decode_only:
        return []
    curves = [speed.RunCurve.read(r.condition, r.run_dir) for r in results if r.run_dir]
    lines = speed.speed_table(curves)
    return ["", *lines] if lines else []
