"""Optimizers and what changes with validation: learning rate, early stopping, teacher forcing.

Schedules are small classes with ``state_dict``/``load_state_dict`` so that an exact
resume restores them with everything else. Each keeps its own count of validations
without improvement: the learning rate watches the validation loss (the plateau of the
TensorFlow tutorial), early stopping watches ``train.early_stopping_metric``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from mtkit.config import TrainConfig


def build_optimizer(
    cfg: TrainConfig, parameters: Iterable[torch.nn.Parameter]
) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            parameters, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    beta1, beta2 = cfg.adam_betas
    return torch.optim.Adam(
        parameters, lr=cfg.lr, betas=(beta1, beta2), weight_decay=cfg.weight_decay
    )


class LearningRate:
    """Linear warmup, then constant or decay-on-plateau.

    Decay on plateau is the classic recipe of the TensorFlow translate tutorial: when the
    validation loss has not improved for ``decay_patience`` validations, multiply the rate
    by ``decay_factor`` (never below ``min_lr``).
    """

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.base = cfg.lr
        self.best_loss = math.inf
        self.plateau = 0  # validations since the loss last improved

    def at(self, step: int) -> float:
        if self.cfg.warmup_steps and step < self.cfg.warmup_steps:
            return self.base * (step + 1) / self.cfg.warmup_steps
        return self.base

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        rate = self.at(step)
        for group in optimizer.param_groups:
            group["lr"] = rate
        return rate

    def after_validation(self, val_loss: float) -> bool:
        """Record a validation loss; True when the rate was decayed."""
        if self.cfg.schedule != "plateau":
            return False
        if val_loss < self.best_loss:
            self.best_loss, self.plateau = val_loss, 0
            return False
        self.plateau += 1
        if self.plateau < self.cfg.decay_patience or self.base <= self.cfg.min_lr:
            return False
        self.base = max(self.cfg.min_lr, self.base * self.cfg.decay_factor)
        self.plateau = 0
        return True

    def state_dict(self) -> dict[str, float]:
        return {
            "base": self.base,
            "best_loss": self.best_loss,
            "plateau": float(self.plateau),
        }

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.base = float(state["base"])
        self.best_loss = float(state["best_loss"])
        # "bad_validations": the name in checkpoints written before early stopping had its own
        self.plateau = int(state.get("plateau", state.get("bad_validations", 0)))


class EarlyStopping:
    """Keeps the best value of the validation metric; stops after ``patience`` without a gain.

    BLEU improves upwards, loss and perplexity downwards. A NaN value (BLEU not computed)
    neither improves nor counts against the patience.
    """

    def __init__(self, metric: str, patience: int | None) -> None:
        self.metric = metric
        self.patience = patience
        self.best: float | None = None
        self.bad_validations = 0

    def update(self, value: float) -> bool:
        """Record a validation value; True when it is the best so far."""
        if math.isnan(value):
            return False
        better = self.best is None or (
            value > self.best if self.metric == "bleu" else value < self.best
        )
        if better:
            self.best, self.bad_validations = value, 0
        else:
            self.bad_validations += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_validations >= self.patience

    def state_dict(self) -> dict[str, float | None]:
        return {"best": self.best, "bad_validations": float(self.bad_validations)}

    def load_state_dict(self, state: dict[str, float | None]) -> None:
        best = state.get("best")
        self.best = None if best is None else float(best)
        self.bad_validations = int(state.get("bad_validations") or 0)


def teacher_forcing_ratio(cfg: TrainConfig, step: int) -> float:
    """Probability of feeding the gold token at ``step`` (Bengio et al., 2015).

    ``constant`` keeps ``train.teacher_forcing``; ``linear`` goes from it down to
    ``teacher_forcing_min`` over ``teacher_forcing_steps``; ``inverse_sigmoid`` follows
    k / (k + exp(step / k)) between the same two values. With ``teacher_forcing_span``
    the schedule is laid over that share of ``max_steps`` (:func:`schedule_shape`).
    """
    start, end = cfg.teacher_forcing, min(cfg.teacher_forcing_min, cfg.teacher_forcing)
    length, k = schedule_shape(cfg)
    if cfg.teacher_forcing_schedule == "linear":
        progress = min(1.0, step / max(1, length))
        return start - (start - end) * progress
    if cfg.teacher_forcing_schedule == "inverse_sigmoid":
        decay = k / (k + math.exp(min(step / k, 700.0)))
        return end + (start - end) * decay
    return start


def schedule_shape(cfg: TrainConfig) -> tuple[int, float]:
    """(linear length in steps, inverse-sigmoid k), fixed or laid over a share of the budget.

    With ``teacher_forcing_span = f`` and ``max_steps = N``, the span is S = f N updates:
    the linear schedule ends at S, and k solves k ln k = S / 2, the step at which
    k / (k + exp(step / k)) = 1/2, so the inverse sigmoid is half way at S / 2 and nearly
    done by S. A time budget cannot do this: its step count is not known in advance.
    """
    if cfg.teacher_forcing_span is None or cfg.max_steps is None:
        return cfg.teacher_forcing_steps, cfg.teacher_forcing_k
    span = max(1, round(cfg.teacher_forcing_span * cfg.max_steps))
    return span, _k_for_midpoint(span / 2)


def _k_for_midpoint(midpoint: float) -> float:
    """The k > e with k ln k = midpoint (bisection; k = e when the midpoint is below e)."""
    low, high = math.e, max(math.e, midpoint)
    if midpoint <= math.e:
        return math.e
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if mid * math.log(mid) < midpoint else (low, mid)
    return (low + high) / 2
