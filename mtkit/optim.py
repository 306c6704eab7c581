"""Optimizers and the schedules that change during training: learning rate, teacher forcing.

Schedules are small classes with ``state_dict``/``load_state_dict`` so that an exact
resume restores them with everything else.
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
        self.bad_validations = 0

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
            self.best_loss, self.bad_validations = val_loss, 0
            return False
        self.bad_validations += 1
        if self.bad_validations < self.cfg.decay_patience or self.base <= self.cfg.min_lr:
            return False
        self.base = max(self.cfg.min_lr, self.base * self.cfg.decay_factor)
        self.bad_validations = 0
        return True

    def state_dict(self) -> dict[str, float]:
        return {
            "base": self.base,
            "best_loss": self.best_loss,
            "bad_validations": float(self.bad_validations),
        }

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.base = float(state["base"])
        self.best_loss = float(state["best_loss"])
        self.bad_validations = int(state["bad_validations"])


def teacher_forcing_ratio(cfg: TrainConfig, step: int) -> float:
    """Probability of feeding the gold token at ``step`` (Bengio et al., 2015).

    ``constant`` keeps ``train.teacher_forcing``; ``linear`` goes from it down to
    ``teacher_forcing_min`` over ``teacher_forcing_steps``; ``inverse_sigmoid`` follows
    k / (k + exp(step / k)) between the same two values.
    """
    start, end = cfg.teacher_forcing, min(cfg.teacher_forcing_min, cfg.teacher_forcing)
    if cfg.teacher_forcing_schedule == "linear":
        progress = min(1.0, step / max(1, cfg.teacher_forcing_steps))
        return start - (start - end) * progress
    if cfg.teacher_forcing_schedule == "inverse_sigmoid":
        k = cfg.teacher_forcing_k
        decay = k / (k + math.exp(min(step / k, 700.0)))
        return end + (start - end) * decay
    return start
