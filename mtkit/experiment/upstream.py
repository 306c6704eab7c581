"""Base models that another experiment trains: a decoding-only experiment's ``base_from``.

``base_from: {experiment: reversal, condition: attention_natural}`` makes a decoding-only
experiment train nothing. Its seed k decodes the ``best.pt`` of
``<out>/../reversal/runs/attention_natural-seed<k>`` once ``reversal`` has trained that
run to the end of reversal's own budget; until then seed k is *waiting*, left out of
the report with the command that trains it. So two experiments that need the same
converged models pay for them once, and the decoded models are the ones the other
experiment reports on.

The decodings are cached in this experiment's own ``runs/base-seed<k>/decode/`` and
stamped with the checkpoint they came from, so a model trained further is decoded again.
"""

from __future__ import annotations

from dataclasses import replace

from mtkit.errors import ConfigError
from mtkit.experiment.load import load_spec
from mtkit.experiment.runner import (
    NEW,
    RESUME,
    Options,
    Run,
    budget_of,
    plan_runs,
    run_status,
)
from mtkit.experiment.spec import ExperimentSpec, display


def source_of(spec: ExperimentSpec, options: Options) -> tuple[ExperimentSpec, Options]:
    """The experiment that trains the base models, and where its runs are."""
    assert spec.base_from is not None
    source = load_spec(spec.base_from.experiment, options.corpora, follow=False)
    where = Options(out=options.out.parent / source.name, seeds=options.seeds or spec.seeds)
    return source, where


def plan_base_runs(spec: ExperimentSpec, options: Options) -> list[Run]:
    """One run per seed: decoded here (``runs/base-seed<k>``), trained by the source."""
    assert spec.base_from is not None
    source, where = source_of(spec, options)
    runs = []
    for run in plan_runs(source, where):
        if run.condition == spec.base_from.condition:
            own = (options.out / "runs" / f"base-seed{run.index}").absolute()
            runs.append(Run("base", run.index, run.seed, run.overrides, own, run.run_dir))
    return runs


def trained(spec: ExperimentSpec, options: Options, runs: list[Run]) -> list[bool]:
    """Whether the source experiment has trained each run to the end of its own budget."""
    source, where = source_of(spec, options)
    budget = budget_of(source, where)
    found = []
    for run in runs:
        assert run.trained_in is not None
        status = run_status(replace(run, run_dir=run.trained_in), True, budget)
        found.append(status not in (NEW, RESUME))
    return found


def waiting_note(spec: ExperimentSpec, options: Options, run: Run) -> str:
    """Why a base model is not decoded yet, and the command that trains it."""
    assert spec.base_from is not None and run.trained_in is not None
    source, _ = source_of(spec, options)
    name = spec.base_from.experiment
    command = f"python -m mtkit.experiment {name}"
    if run.index > source.seeds:  # a seed the source does not train by default
        command += f" --seeds {run.index}"
    return (
        f"waiting for {display(run.trained_in)}, which experiment {source.name} has not "
        f"trained to the end of its budget yet ({command}); left out of the report"
    )


def refuse_budget(spec: ExperimentSpec, options: Options) -> None:
    """--steps/--budget/--converge cannot apply: the source experiment sets the budget."""
    if spec.base_from is None:
        return
    for flag, given in (
        ("--steps", options.steps is not None),
        ("--budget", options.minutes is not None),
        ("--converge", options.converge),
    ):
        if given:
            name = spec.base_from.experiment
            raise ConfigError(
                f"{flag}: {spec.name} decodes the models experiment {name} trains "
                f"(base_from); give {flag} to {name} instead"
            )
