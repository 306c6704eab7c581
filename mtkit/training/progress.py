"""Where a training run stands: counters, the running loss and speed, the metrics rows,
and how far it is through its budget.

:class:`Progress` is saved in ``last.pt`` (as a plain dict) for an exact resume, so
everything in it is a number, a string or a list of metric rows. :class:`Eta` only
reads the clock for the progress lines; nothing of it is saved.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from mtkit.config import TrainConfig
from mtkit.errors import TrainingError
from mtkit.metrics import perplexity

log = logging.getLogger("mtkit")


@dataclass
class Progress:
    step: int = 0  # updates (one per train.accumulate batches)
    epoch: int = 0  # 0-based; logs and metrics.csv count from 1
    batch_in_epoch: int = 0  # batches of the epoch trained on
    elapsed: float = 0.0  # seconds of training so far, over every resume
    skipped_steps: int = 0  # updates skipped because the loss was not finite
    bad_in_a_row: int = 0
    interval_loss: float = 0.0  # summed NLL since the last validation
    interval_tokens: int = 0
    interval_time: float = 0.0  # seconds spent in training steps since the last validation
    validated_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # the metrics.csv rows

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Progress:
        """From a checkpoint's dict; keys of older versions that moved elsewhere are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in state.items() if k in known})

    def record_step(
        self, nll_sum: float, tokens: int, updated: bool, seconds: float, batches: int = 1
    ) -> None:
        """Count one update, made from ``batches`` batches of the epoch (``train.accumulate``),
        and the summed NLL and target tokens of those batches."""
        self.step += 1
        self.batch_in_epoch += batches
        self.interval_time += seconds
        if updated:
            self.bad_in_a_row = 0
            self.interval_loss += nll_sum
            self.interval_tokens += tokens
        else:
            self.skipped_steps += 1
            self.bad_in_a_row += 1

    def check_skipped(self, max_bad_steps: int) -> None:
        """After a skipped update: warn, and give up after ``max_bad_steps`` in a row."""
        log.warning(
            "step %d: loss is not finite; update skipped (%d so far)", self.step, self.skipped_steps
        )
        if self.bad_in_a_row >= max_bad_steps:
            raise TrainingError(
                f"the loss was NaN/inf for {self.bad_in_a_row} steps in a row "
                f"(step {self.step}); lower train.lr or use train.precision=fp32"
            )

    def next_epoch(self) -> None:
        self.epoch += 1
        self.batch_in_epoch = 0

    @property
    def train_loss(self) -> float:
        """Mean token NLL since the last validation (NaN before any token)."""
        return self.interval_loss / self.interval_tokens if self.interval_tokens else math.nan

    def tokens_per_second(self, world: int) -> float:
        """Target tokens per second of training step, over all ``world`` processes."""
        return self.interval_tokens * world / max(self.interval_time, 1e-9)

    def step_line(self, lr: float, world: int) -> str:
        loss = self.train_loss
        return (
            f"step {self.step} epoch {self.epoch + 1} | loss {loss:.3f} "
            f"ppl {perplexity(loss):.1f} tok/s {self.tokens_per_second(world):.0f} lr {lr:.2e}"
        )

    def add_row(
        self,
        metrics: dict[str, float],
        lr: float,
        teacher_forcing: float,
        world: int,
        extra: dict[str, float] | None = None,
    ) -> dict[str, Any]:
        """Append the metrics.csv row of a validation and start a new interval.

        ``extra`` holds further columns (the moving average's scores), already rounded.
        """
        loss = self.train_loss
        row = {
            "step": self.step,
            "epoch": self.epoch + 1,
            "train_loss": round(loss, 5),
            "train_ppl": round(perplexity(loss), 3),
            "val_loss": round(metrics["val_loss"], 5),
            "val_ppl": round(metrics["val_ppl"], 3),
            "val_bleu": round(metrics["val_bleu"], 2),
            "tokens_per_s": round(self.tokens_per_second(world)),
            "lr": lr,
            "teacher_forcing": round(teacher_forcing, 4),
            "elapsed_min": round(self.elapsed / 60, 3),
            **(extra or {}),
        }
        self.history.append(row)
        self.validated_step = self.step
        self.interval_loss, self.interval_tokens, self.interval_time = 0.0, 0, 0.0
        return row


class Eta:
    """How far a run is through its budget, and the time it has left.

    A step budget (``train.max_steps``, or ``train.max_epochs`` times the steps of an
    epoch: the smaller) has ``steps left x recent seconds per step`` left, the recent
    pace being the wall-clock time over the last ``window`` progress lines (validations
    included) divided by their steps. A time budget (``train.max_minutes``) has its
    minutes less the time elapsed. With both, the one that ends sooner counts; a run
    with neither (it stops early, or on a signal) has no ETA.
    """

    def __init__(
        self,
        total_steps: int | None,
        total_seconds: float | None,
        step: int,
        clock: Callable[[], float] = time.perf_counter,
        window: int = 5,
    ) -> None:
        self.total_steps, self.total_seconds, self.clock = total_steps, total_seconds, clock
        self.marks: deque[tuple[float, int]] = deque([(clock(), step)], maxlen=window + 1)

    @classmethod
    def for_run(
        cls,
        cfg: TrainConfig,
        steps_per_epoch: int,
        step: int,
        clock: Callable[[], float] = time.perf_counter,
    ) -> Eta:
        """The budget of ``cfg``, counted from ``step`` (where this process starts)."""
        by_epochs = None if cfg.max_epochs is None else cfg.max_epochs * steps_per_epoch
        steps = [n for n in (cfg.max_steps, by_epochs) if n is not None]
        seconds = None if cfg.max_minutes is None else 60 * cfg.max_minutes
        return cls(min(steps) if steps else None, seconds, step, clock)

    def estimate(self, step: int, elapsed: float) -> tuple[float, float] | None:
        """(fraction done, seconds left) at ``step`` after ``elapsed`` seconds of training,
        or None without a budget. Each call is a mark of the recent pace."""
        now = self.clock()
        self.marks.append((now, step))
        then, before = self.marks[0]  # ``window`` progress lines ago, or the start
        ends: list[tuple[float, float]] = []  # (seconds left, fraction done) per budget
        if self.total_steps is not None and step > before:
            pace = (now - then) / (step - before)
            ends.append((max(self.total_steps - step, 0) * pace, step / self.total_steps))
        if self.total_seconds is not None:
            left = max(self.total_seconds - elapsed, 0.0)
            ends.append((left, elapsed / self.total_seconds))
        if not ends:
            return None
        left, fraction = min(ends)
        return min(fraction, 1.0), left

    def describe(self, step: int, elapsed: float) -> str:
        """``' | 25% ETA 3m12s'``, to end a progress line with ('' without a budget)."""
        found = self.estimate(step, elapsed)
        if found is None:
            return ""
        fraction, left = found
        return f" | {100 * fraction:.0f}% ETA {format_duration(left)}"


def format_duration(seconds: float) -> str:
    """``'45s'``, ``'3m12s'``, ``'2h05m'``."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
