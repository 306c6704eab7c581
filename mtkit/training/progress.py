"""Where a training run stands: counters, the running loss and speed, and the metrics rows.

:class:`Progress` is saved in ``last.pt`` (as a plain dict) for an exact resume, so
everything in it is a number, a string or a list of metric rows.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, fields
from typing import Any

from mtkit.errors import TrainingError
from mtkit.metrics import perplexity

log = logging.getLogger("mtkit")


@dataclass
class Progress:
    step: int = 0
    epoch: int = 0  # 0-based; logs and metrics.csv count from 1
    batch_in_epoch: int = 0
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

    def record_step(self, nll_sum: float, tokens: int, updated: bool, seconds: float) -> None:
        self.step += 1
        self.batch_in_epoch += 1
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
        self, metrics: dict[str, float], lr: float, teacher_forcing: float, world: int
    ) -> dict[str, Any]:
        """Append the metrics.csv row of a validation and start a new interval."""
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
        }
        self.history.append(row)
        self.validated_step = self.step
        self.interval_loss, self.interval_tokens, self.interval_time = 0.0, 0, 0.0
        return row
