"""Planning an experiment: its runs, what each still needs, and the --dry-run plan.

A run's status comes from the files in its folder (:func:`mtkit.experiment.runner.run_status`),
or, for the base models of a ``base_from`` experiment, from the other experiment's runs
(:mod:`mtkit.experiment.upstream`). The plan prints every run with its overrides and
status, and the time the rest should take.
"""

from __future__ import annotations

from typing import Any

from mtkit.experiment import evaluation, progress, upstream
from mtkit.experiment.budget import Budget
from mtkit.experiment.overrides import merge, override_values
from mtkit.experiment.runner import (
    DONE,
    EVALUATE,
    NEW,
    RESUME,
    SKIPPED,
    WAITING,
    Options,
    Run,
    budget_of,
    plan_runs,
    run_status,
    selected,
    trained_so_far,
)
from mtkit.experiment.spec import ExperimentSpec, display


def decode_conditions(spec: ExperimentSpec) -> dict[str, dict[str, Any]]:
    """Decoding-only conditions as search settings: ``decode.beam_size=5`` -> beam_size 5."""
    if not spec.decode_only:
        return {}
    return {
        name: {key.removeprefix("decode."): v for key, v in override_values(overrides).items()}
        for name, overrides in spec.conditions.items()
    }


def is_evaluated(spec: ExperimentSpec, run: Run) -> bool:
    if spec.decode_only:
        checkpoint = run.model_dir / "best.pt"
        return evaluation.decoding_cached(run.run_dir, decode_conditions(spec), checkpoint)
    return (run.run_dir / evaluation.EVAL_FILE).is_file()


def plan(spec: ExperimentSpec, options: Options) -> list[Run]:
    """The runs: trained here, or (``base_from``) by another experiment and decoded here."""
    if spec.base_from is not None:
        return upstream.plan_base_runs(spec, options)
    return plan_runs(spec, options)


def statuses_of(spec: ExperimentSpec, options: Options, runs: list[Run]) -> list[str]:
    """Each run's status (runner.run_status); ``waiting`` for a base_from model not ready."""
    if spec.base_from is None:
        budget = budget_of(spec, options)
        return [run_status(run, is_evaluated(spec, run), budget) for run in runs]
    ready = upstream.trained(spec, options, runs)
    return [
        (DONE if is_evaluated(spec, run) else EVALUATE) if ok else WAITING
        for run, ok in zip(runs, ready, strict=True)
    ]


def print_plan(
    spec: ExperimentSpec, options: Options, runs: list[Run], statuses: list[str]
) -> None:
    """--dry-run: the runs with their overrides and status, and the time it should take
    (for the runs ``--runs`` selects; the others are ``skipped`` unless they are done)."""
    statuses = [
        status if status == DONE or selected(run, options.only) else SKIPPED
        for run, status in zip(runs, statuses, strict=True)
    ]
    budget = budget_of(spec, options)
    estimator = estimator_for(spec, budget)
    print(f"experiment {spec.name} ({display(spec.path)}): {spec.citation}")
    print(f"output: {display(options.out)}")
    shared = merge(spec.data, spec.common, options.overrides)
    print(f"shared overrides: {' '.join(spec.shown(o) for o in shared)}")
    if spec.checkpoint is not None:
        print(f"checkpoint: {display(spec.checkpoint)} (no training)")
    for position, (run, status) in enumerate(zip(runs, statuses, strict=True), start=1):
        own = spec.base if spec.decode_only else spec.conditions[run.condition]
        shown = (
            f"best.pt of {display(run.trained_in)}"
            if run.trained_in is not None
            else " ".join(spec.shown(o) for o in [*own, f"train.seed={run.seed}"])
        )
        print(f"  {progress.counter(position, len(runs))} {run.label:<28} {status:<8} {shown}")
    if spec.decode_only:
        models = max(len(runs), 1)
        print(f"decoding: {len(spec.conditions)} conditions x {models} model(s)")
    if spec.base_from is not None:
        _print_decoding_estimate(spec, estimator, statuses)
        return
    left = sum(
        estimator.run_minutes(s, *trained_so_far(r.run_dir))
        for r, s in zip(runs, statuses, strict=True)
    )
    if spec.checkpoint is not None:
        left += estimator.eval_minutes
    to_train = sum(s in (NEW, RESUME) for s in statuses)
    skipped = statuses.count(SKIPPED)
    others = f", {skipped} skipped by --runs" if skipped else ""
    print(
        f"estimated time: {progress.duration(left)} ({to_train} of {len(runs)} runs to train"
        f"{others}, "
        f"{budget.short()} (about {progress.duration(estimator.training_minutes())}) "
        f"+ about {estimator.start_minutes:g} min start-up each, "
        f"evaluation about {estimator.eval_minutes:.1f} min per model); {progress.eta(left)}"
    )


def _print_decoding_estimate(
    spec: ExperimentSpec, estimator: progress.Estimator, statuses: list[str]
) -> None:
    """A base_from plan: decoding time for the models ready, the others waiting."""
    assert spec.base_from is not None
    ready = statuses.count(EVALUATE)
    left = ready * estimator.eval_minutes
    print(
        f"estimated time: {progress.duration(left)} ({ready} model(s) to decode, about "
        f"{estimator.eval_minutes:.1f} min each; {statuses.count(WAITING)} waiting for "
        f"experiment {spec.base_from.experiment} to train them); {progress.eta(left)}"
    )


def estimator_for(spec: ExperimentSpec, budget: Budget) -> progress.Estimator:
    return progress.Estimator(budget, progress.eval_minutes(spec))
