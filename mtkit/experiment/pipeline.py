"""One experiment from start to finish: check, plan, train, evaluate, report.

Every override of every run is composed before the first run starts; then each run is
trained (or resumed, or kept), evaluated (or read from its cache) and reported with a
progress line and an ETA. ``results.csv``, ``table.md`` and the figures are written at
the end from whatever runs are complete, so they can be rebuilt at any time
(``--report-only``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from mtkit.config import RunConfig
from mtkit.errors import ConfigError, DataError
from mtkit.experiment import (
    by_length,
    evaluation,
    figures,
    output,
    parallel,
    planning,
    progress,
    report,
    upstream,
)
from mtkit.experiment.overrides import check_stages, compose, merge
from mtkit.experiment.runner import (
    DONE,
    NEW,
    RESUME,
    WAITING,
    Options,
    Run,
    RunFailed,
    SignalGuard,
    budget_of,
    check_selection,
    selected,
    train,
    trained_so_far,
)
from mtkit.experiment.spec import LENGTH_SPLIT_DIR, ExperimentSpec, display


@dataclass
class Session:
    """What every run of one invocation shares."""

    spec: ExperimentSpec
    options: Options
    guard: SignalGuard
    test: evaluation.TestSet
    estimator: progress.Estimator
    extras: list[evaluation.TestSet] = field(default_factory=list)  # the extra_tests


def run_experiment(spec: ExperimentSpec, options: Options, guard: SignalGuard) -> int:
    """Run (or continue) the experiment and write its report; 0, or 1 if a run failed."""
    if options.out.exists() and not options.out.is_dir():
        raise ConfigError(f"--out {display(options.out)}: exists and is not a folder")
    if spec.length_split is not None:
        spec = spec.with_length_split(options.out.absolute() / LENGTH_SPLIT_DIR)
    check_stages(spec.stages(options.overrides), display(spec.path), options.out.absolute())
    upstream.refuse_budget(spec, options)
    prepare_length_split(spec, options)
    runs = planning.plan(spec, options)
    budget = budget_of(spec, options)
    check_selection(runs, options.only, display(spec.path))
    statuses = planning.statuses_of(spec, options, runs)
    if options.dry_run:
        planning.print_plan(spec, options, runs, statuses)
        return 0
    shared = compose(merge(spec.data, spec.common, options.overrides))
    if options.parallel > 1 and not options.report_only:
        per_run = planning.estimator_for(spec, budget).run_minutes(NEW)
        failures = parallel.train_in_parallel(spec, options, guard, runs, statuses, shared, per_run)
        options = replace(options, report_only=True, only=None)
        statuses = planning.statuses_of(spec, options, runs)
        code = run_experiment_serial(spec, options, guard, runs, statuses, shared)
        for failure in failures:
            print(f"failed: {failure}", flush=True)
        return 1 if failures else code
    return run_experiment_serial(spec, options, guard, runs, statuses, shared)


def prepare_length_split(spec: ExperimentSpec, options: Options) -> None:
    """Build the folder ``${length_split}`` stands for (kept as it is when already built).

    --parallel's child runners get here too and find it built. A dry run that cannot
    build it yet (the corpus is missing) says so and still prints the plan.
    """
    if spec.length_split is None:
        return
    from mtkit.corpus.length_split import build_length_split as build

    split = spec.length_split
    data = compose(merge(spec.data, spec.common, options.overrides)).data
    folder = Path(spec.length_split_dir)
    languages = (data.src_lang, data.tgt_lang)
    try:
        _, built = build(split.source, folder, *languages, split.max_words, split.concat)
    except DataError as error:
        if not options.dry_run:
            raise
        print(f"length split: not built yet: {error}")
        return
    if built and not options.child:
        print(f"length split: built {display(folder)} from {display(split.source)}", flush=True)


def run_experiment_serial(
    spec: ExperimentSpec,
    options: Options,
    guard: SignalGuard,
    runs: list[Run],
    statuses: list[str],
    shared: RunConfig,
) -> int:
    """Every run in turn in this process (trained, evaluated), then the report."""
    with evaluation.threads(shared.train.threads):
        session = Session(
            spec,
            options,
            guard,
            evaluation.load_test_set(shared),
            planning.estimator_for(spec, budget_of(spec, options)),
            [evaluation.load_test_set(shared, split) for split in spec.extra_tests],
        )
        return _run_all(session, runs, statuses)


def _run_all(session: Session, runs: list[Run], statuses: list[str]) -> int:
    """Every run in turn, then the checkpoint's decodings (if any), then the report."""
    spec, options = session.spec, session.options
    results: list[report.RunResult] = []
    curves: list[figures.Curve] = []
    failures: list[str] = []
    finished: list[tuple[str, Path]] = []  # (condition, run dir) of the runs reported
    for position, run in enumerate(runs, start=1):
        left = sum(
            session.estimator.run_minutes(s, *trained_so_far(r.run_dir))
            for r, s in zip(runs[position - 1 :], statuses[position - 1 :], strict=True)
            if selected(r, options.only)
        )
        head = f"{progress.counter(position, len(runs))} {spec.name}/{run.label}"
        try:
            found = _one_run(session, run, statuses[position - 1], head, left)
        except RunFailed as error:
            failures.append(str(error))
            print(f"{head}: FAILED: {error}", flush=True)
            continue
        results += found
        if found:
            curves.append((run.condition, run.index, _curve(run.model_dir)))
            finished.append((run.condition, run.run_dir))
    if spec.checkpoint is not None:
        model_dir = options.out.absolute() / "checkpoint"
        found_decode = evaluation.evaluate_decoding(
            model_dir, spec.checkpoint, planning.decode_conditions(spec), session.test
        )
        results += report.decode_results(spec, None, None, model_dir, found_decode)
    if not options.child:  # --parallel's parent writes the report once all have finished
        extras = extra_outputs(session.extras, finished)
        output.write_report(spec, options, results, curves, session.test, extras)
    for failure in failures:
        print(f"failed: {failure}", flush=True)
    return 1 if failures else 0


def _one_run(
    session: Session, run: Run, status: str, head: str, minutes_left: float
) -> list[report.RunResult]:
    """Train (or resume) one run if needed and evaluate it, with its progress lines."""
    spec, estimator = session.spec, session.estimator
    if not selected(run, session.options.only) and status != DONE:
        if not session.options.child:
            print(f"{head}: not in --runs and not finished; left out of the report", flush=True)
        return []
    if session.options.child and not selected(run, session.options.only):
        return []  # a --parallel child reports only its own run
    if status == WAITING:
        print(f"{head}: {upstream.waiting_note(spec, session.options, run)}", flush=True)
        return []
    if session.options.report_only and status in (NEW, RESUME):
        print(f"{head}: not trained yet; left out of the report", flush=True)
        return []
    elapsed, steps = trained_so_far(run.run_dir)
    doing = progress.action(status, estimator.budget, elapsed, steps, spec.decode_only)
    eta = "" if session.options.report_only else f" ... {progress.eta(minutes_left)}"
    print(f"{head}: {doing}{eta}", flush=True)  # --report-only trains nothing: no ETA
    if status in (NEW, RESUME):
        _train(run, status, session.guard, estimator)
    found = _evaluate(spec, run, session.test, estimator, session.extras)
    print(f"{head}: {output.summary(spec, found)}", flush=True)
    return found


def _train(run: Run, status: str, guard: SignalGuard, estimator: progress.Estimator) -> None:
    before, before_steps = trained_so_far(run.run_dir) if status == RESUME else (0.0, 0)
    start = time.perf_counter()
    train(run, status, guard)
    info = report.training_info(run.run_dir)
    trained = float(info.get("minutes") or estimator.training_minutes()) - before
    steps = int(info.get("steps") or 0) - before_steps
    estimator.observe_training((time.perf_counter() - start) / 60, trained, steps)


def _evaluate(
    spec: ExperimentSpec,
    run: Run,
    test: evaluation.TestSet,
    estimator: progress.Estimator,
    extras: list[evaluation.TestSet],
) -> list[report.RunResult]:
    """Evaluate a trained run (cached) and turn it into result rows."""
    cached = planning.is_evaluated(spec, run)
    start = time.perf_counter()
    if spec.decode_only:
        found = evaluation.evaluate_decoding(
            run.run_dir, run.model_dir / "best.pt", planning.decode_conditions(spec), test
        )
        rows = report.decode_results(spec, run.seed, run.model_dir, run.run_dir, found)
    else:
        result = evaluation.evaluate_run(run.run_dir, run.overrides, test, extras)
        rows = [report.training_result(spec, run.condition, run.seed, run.run_dir, result)]
    if not cached:
        estimator.observe_evaluation((time.perf_counter() - start) / 60)
    return rows


def extra_outputs(
    extras: list[evaluation.TestSet], finished: list[tuple[str, Path]]
) -> list[by_length.LengthTest]:
    """Each extra test set with every reported run's beam-5 outputs on it, for the figures."""
    tests = []
    for test in extras:
        file = evaluation.extra_hypotheses(test.name)
        outputs = [(condition, report.read_lines(d / file)) for condition, d in finished]
        tests.append(by_length.LengthTest(test.name, test.sources, test.references, outputs))
    return tests


def _curve(run_dir: Path) -> list[tuple[float, float, float]]:
    return [(m["step"], m["val_bleu"], m["val_ppl"]) for m in report.read_metrics(run_dir)]
