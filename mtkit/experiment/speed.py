"""The speed side of an experiment: what each condition costs, apart from what it reaches.

Verdicts compare models after the same number of updates. How fast a condition gets
there is a separate question, the one a wall-clock budget mixes in: a cheaper variant
takes more updates per minute. This table keeps it apart: training tokens/s, seconds
per update, and the updates and minutes each condition needed to first reach a common
validation BLEU (the target), read from every run's ``metrics.csv``.

The target is 90% of the lowest condition's mean best validation BLEU, so every
condition can reach it; a run that never did is counted as "not reached".
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mtkit.experiment.statistics import read_metrics

TARGET_SHARE = 0.9  # of the lowest condition's mean best validation BLEU


@dataclass
class RunCurve:
    """One run's validations: (update, minutes, validation BLEU) rows, and its pace."""

    condition: str
    rows: list[tuple[float, float, float]]
    tokens_per_s: float

    @classmethod
    def read(cls, condition: str, run_dir: Path) -> RunCurve:
        metrics = read_metrics(run_dir)
        rows = [(m["step"], m["elapsed_min"], m["val_bleu"]) for m in metrics]
        speeds = [m["tokens_per_s"] for m in metrics if m["tokens_per_s"] > 0]
        return cls(condition, rows, statistics.fmean(speeds) if speeds else float("nan"))

    @property
    def best(self) -> float:
        return max((bleu for _, _, bleu in self.rows), default=float("nan"))

    @property
    def seconds_per_update(self) -> float:
        if not self.rows or self.rows[-1][0] <= 0:
            return float("nan")
        step, minutes, _ = self.rows[-1]
        return 60 * minutes / step

    def reached(self, target: float) -> tuple[float, float] | None:
        """(updates, minutes) at the first validation with BLEU >= target, or None."""
        for step, minutes, bleu in self.rows:
            if bleu >= target:
                return step, minutes
        return None


def target_bleu(curves: Sequence[RunCurve]) -> float:
    """90% of the lowest condition's mean best validation BLEU, to one decimal."""
    by_condition: dict[str, list[float]] = {}
    for curve in curves:
        by_condition.setdefault(curve.condition, []).append(curve.best)
    means = [statistics.fmean(v) for v in by_condition.values() if v]
    return round(TARGET_SHARE * min(means), 1) if means else float("nan")


def speed_table(curves: Sequence[RunCurve]) -> list[str]:
    """Markdown lines: per condition, pace and the updates/minutes to reach the target."""
    if not curves:
        return []
    target = target_bleu(curves)
    lines = [
        f"Speed (a separate question from the verdicts; target: validation BLEU {target:g}, "
        f"{TARGET_SHARE:.0%} of the lowest condition's mean best):",
        "",
        "| condition | train tok/s | s / update | updates to target | minutes to target |",
        "|---|---|---|---|---|",
    ]
    for condition in dict.fromkeys(c.condition for c in curves):
        group = [c for c in curves if c.condition == condition]
        hits = [hit for c in group if (hit := c.reached(target)) is not None]
        missed = len(group) - len(hits)
        updates = _mean([h[0] for h in hits], 0) + _missed(missed, len(group))
        minutes = _mean([h[1] for h in hits], 1) + _missed(missed, len(group))
        lines.append(
            f"| `{condition}` | {_mean([c.tokens_per_s for c in group], 0)} | "
            f"{_mean([c.seconds_per_update for c in group], 2)} | {updates} | {minutes} |"
        )
    lines += ["", "Means over seeds; a run's pace shares its machine with any run beside it."]
    return lines


def _mean(values: Sequence[float], decimals: int) -> str:
    finite = [v for v in values if v == v]
    return f"{statistics.fmean(finite):.{decimals}f}" if finite else "n/a"


def _missed(missed: int, total: int) -> str:
    return f" ({missed} of {total} runs never reached it)" if missed else ""
