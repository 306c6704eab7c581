"""Time estimates and the runner's progress lines.

The estimate of a run is its remaining training budget plus what a run costs beyond
its budget (start-up, the last validation, the trainer's own test decoding) plus the
runner's evaluation. A budget in updates is turned into minutes at the pace of the runs
finished so far (a fixed guess before the first). The overheads start from fixed guesses
and follow the runs measured so far, so the ETA gets better as the experiment goes; with
``converge`` it is an upper bound (the update cap).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from mtkit.experiment.budget import Budget
from mtkit.experiment.overrides import override_values
from mtkit.experiment.spec import ExperimentSpec

START_MINUTES = 0.5  # per training run beyond its budget: start-up, last validation, test
EVAL_MINUTES = 0.5  # greedy + beam-5 decoding of a test set of about 1000 sentences
DECODE_MINUTES_PER_BEAM = 0.03  # per beam entry, for about 1000 test sentences on 2 cores
# beam 5 over one extra test split, such as concat's 2,283 lines of 1 to 5 sentences
EXTRA_TEST_MINUTES = 2.0


def eval_minutes(spec: ExperimentSpec) -> float:
    """A guess of one model's evaluation: decode_minutes, or the test and extra splits."""
    if spec.decode_only:
        return decode_minutes(spec)
    return EVAL_MINUTES + EXTRA_TEST_MINUTES * len(spec.extra_tests)


def decode_minutes(spec: ExperimentSpec) -> float:
    """A guess of one model's decoding time over all conditions of a decoding-only experiment."""
    total = 0.0
    for overrides in spec.conditions.values():
        beam = override_values(overrides).get("decode.beam_size", 5)
        total += 0.05 + DECODE_MINUTES_PER_BEAM * (beam if isinstance(beam, int) else 5)
    return total


@dataclass
class Estimator:
    """Minutes left, from the statuses of the runs still to do."""

    budget: Budget
    eval_minutes: float
    start_minutes: float = START_MINUTES
    seconds_per_step: float | None = None  # measured on the runs trained so far
    _starts: list[float] = field(default_factory=list)
    _evals: list[float] = field(default_factory=list)
    _paces: list[float] = field(default_factory=list)

    def training_minutes(self) -> float:
        """One whole run's training time under the budget."""
        return self.budget.guess_minutes(self.seconds_per_step)

    def run_minutes(self, status: str, elapsed: float = 0.0, done_steps: int = 0) -> float:
        """Minutes a run still needs; ``elapsed`` minutes and ``done_steps`` already trained."""
        if status in ("done", "waiting", "skipped"):  # waiting: another experiment trains
            return 0.0  # it; skipped: another runner (--runs)
        if status == "evaluate":
            return self.eval_minutes
        if self.budget.minutes is not None:
            left = max(self.budget.minutes - elapsed, 0.0)
        else:
            share = 1.0 - min(done_steps / max(self.budget.steps or 1, 1), 1.0)
            left = self.training_minutes() * share
        return left + self.start_minutes + self.eval_minutes

    def observe_training(self, wall_minutes: float, trained_minutes: float, steps: int) -> None:
        """A finished training child: its pace, and what it took beyond its training."""
        self._starts.append(max(wall_minutes - trained_minutes, 0.1))
        self.start_minutes = sum(self._starts) / len(self._starts)
        if steps > 0 and trained_minutes > 0:
            self._paces.append(60 * trained_minutes / steps)
            self.seconds_per_step = sum(self._paces) / len(self._paces)

    def observe_evaluation(self, wall_minutes: float) -> None:
        self._evals.append(wall_minutes)
        self.eval_minutes = sum(self._evals) / len(self._evals)


def duration(minutes: float) -> str:
    """``45 min`` or ``2 h 05 min``."""
    whole = max(0, round(minutes))
    return f"{whole // 60} h {whole % 60:02d} min" if whole >= 60 else f"{whole} min"


def eta(minutes_left: float) -> str:
    """``ETA 14:32 (45 min left)``, local time."""
    clock = time.strftime("%H:%M", time.localtime(time.time() + 60 * minutes_left))
    return f"ETA {clock} ({duration(minutes_left)} left)"


def counter(position: int, total: int) -> str:
    width = len(str(total))
    return f"[{position:>{width}}/{total}]"


def action(status: str, budget: Budget, elapsed: float, steps: int, decode_only: bool) -> str:
    """What happens to a run now, for its progress line."""
    evaluation = "decoding every condition" if decode_only else "evaluating"
    if status == "done":
        return "done, kept"
    if status == "evaluate":
        return f"trained; {evaluation}"
    if status == "resume":
        if budget.minutes is not None:
            return f"training, resuming at {elapsed:.1f} of {budget.minutes:g} min"
        return f"training, resuming at update {steps} of {budget.short()}"
    return f"training (budget {budget.short()})"
