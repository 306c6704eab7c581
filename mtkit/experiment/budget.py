"""How long each run of an experiment trains: a number of updates, convergence, or minutes.

The quality verdict of an experiment compares models that had the same training, so
the default budget is a number of updates (``budget_steps``): reproducible on any
machine, and the same for a cheap and a costly variant. ``converge`` trains until the
validation loss has stopped improving for ``patience`` validations, with the update
count as a cap. A wall-clock budget (``budget_minutes``, ``--budget``) answers another
question, what a user gets from a machine in a given time; it favours cheap variants and
is not reproducible (two runs of one configuration and seed take different numbers of
steps), so it belongs to speed tables, not to verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass

from mtkit.errors import ConfigError

DEFAULT_PATIENCE = 3  # validations without a lower validation loss before a converged stop
GUESS_SECONDS_PER_STEP = 1.5  # before any run has finished: a small model on one core


@dataclass(frozen=True)
class Budget:
    """One run's training budget: ``steps`` updates (a cap when ``converge``) or ``minutes``."""

    steps: int | None = None
    minutes: float | None = None
    converge: bool = False
    patience: int = DEFAULT_PATIENCE

    def __post_init__(self) -> None:
        if (self.steps is None) == (self.minutes is None):
            raise ConfigError("budget: give a number of updates or of minutes, not both")
        if self.converge and self.steps is None:
            raise ConfigError("budget: converge needs a number of updates as its cap")

    def overrides(self) -> list[str]:
        """The training overrides the runner adds to every run."""
        if self.minutes is not None:
            return [f"train.max_minutes={self.minutes:g}", "train.max_steps=null"]
        found = [f"train.max_steps={self.steps}", "train.max_minutes=null"]
        if self.converge:
            found += ["train.early_stopping_metric=loss", f"train.patience={self.patience}"]
        return found

    def describe(self) -> str:
        """``800 updates``, ``convergence (... at most 3000 updates)`` or ``12 min``."""
        if self.minutes is not None:
            return f"{self.minutes:g} min of training per run (wall clock, `train.max_minutes`)"
        if self.converge:
            return (
                f"training to convergence: stop when the validation loss has not improved "
                f"for {self.patience} validations, at most {self.steps} updates"
            )
        return f"{self.steps} updates per run (`train.max_steps`)"

    def short(self) -> str:
        if self.minutes is not None:
            return f"{self.minutes:g} min"
        return f"<= {self.steps} updates" if self.converge else f"{self.steps} updates"

    def guess_minutes(self, seconds_per_step: float | None) -> float:
        """Minutes a run should take, for the ETA: steps at the measured pace, or the minutes."""
        if self.minutes is not None:
            return self.minutes
        pace = seconds_per_step or GUESS_SECONDS_PER_STEP
        return float(self.steps or 0) * pace / 60


def choose(spec_budget: Budget, steps: int | None, minutes: float | None, converge: bool) -> Budget:
    """The command line's ``--steps``/``--budget``/``--converge`` over the file's budget."""
    if steps is not None and minutes is not None:
        raise ConfigError("command line: give --steps or --budget, not both")
    if minutes is not None:
        if converge:
            raise ConfigError(
                "command line: --converge needs an update cap (--steps), not --budget"
            )
        return Budget(minutes=minutes)
    if steps is not None:  # a fixed number of updates, unless --converge makes it the cap
        return Budget(steps=steps, converge=converge, patience=spec_budget.patience)
    if converge:
        if spec_budget.steps is None:
            raise ConfigError("command line: --converge needs an update cap: add --steps N")
        return Budget(steps=spec_budget.steps, converge=True, patience=spec_budget.patience)
    return spec_budget
