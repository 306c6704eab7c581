"""Time estimates and the runner's progress lines.

The estimate of a run is its remaining training budget plus what a run costs beyond
its budget (start-up, the last validation, the trainer's own test decoding) plus the
runner's evaluation. The two overheads start from fixed guesses and follow the runs
measured so far, so the ETA gets better as the experiment goes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from mtkit.experiment.overrides import override_values
from mtkit.experiment.spec import ExperimentSpec

START_MINUTES = 0.5  # per training run beyond its budget: start-up, last validation, test
EVAL_MINUTES = 0.5  # greedy + beam-5 decoding of a test set of about 1000 sentences
DECODE_MINUTES_PER_BEAM = 0.03  # per beam entry, for about 1000 test sentences on 2 cores


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

    budget: float
    eval_minutes: float
    start_minutes: float = START_MINUTES
    _starts: list[float] = field(default_factory=list)
    _evals: list[float] = field(default_factory=list)

    def run_minutes(self, status: str, elapsed: float = 0.0) -> float:
        if status == "done":
            return 0.0
        if status == "evaluate":
            return self.eval_minutes
        return max(self.budget - elapsed, 0.0) + self.start_minutes + self.eval_minutes

    def observe_training(self, wall_minutes: float, trained_minutes: float) -> None:
        """A finished training child: what it took beyond the minutes it trained."""
        self._starts.append(max(wall_minutes - trained_minutes, 0.1))
        self.start_minutes = sum(self._starts) / len(self._starts)

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


def action(status: str, budget: float, elapsed: float, decode_only: bool) -> str:
    """What happens to a run now, for its progress line."""
    evaluation = "decoding every condition" if decode_only else "evaluating"
    if status == "done":
        return "done, kept"
    if status == "evaluate":
        return f"trained; {evaluation}"
    if status == "resume":
        return f"training, resuming at {elapsed:.1f} of {budget:g} min"
    return f"training (budget {budget:g} min)"
