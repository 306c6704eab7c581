"""The ``train`` group: six groups of keys, each checking its own values, laid out flat.

The keys stay flat in YAML and on the command line (``train.lr``, ``train.max_steps``),
so :class:`TrainConfig` is one dataclass holding every key of :data:`TRAIN_GROUPS`.
Each group still owns its keys, their defaults and their checks, and can be built on
its own (``RuntimeConfig(threads=2)``); :meth:`TrainConfig.check` runs every group's
check, then the checks that span two groups.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from mtkit.config.checks import check_choice, check_value, is_int


class TrainKeys:
    """A group of ``train.*`` keys: building one checks its values (:meth:`check`)."""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise a one-line ConfigError that names the first bad key of this group."""
        raise NotImplementedError


@dataclass
class RuntimeConfig(TrainKeys):
    """Where training computes, and what makes it repeatable."""

    seed: int = 1234  # initialisation, dropout and batch order
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N
    precision: str = "auto"  # auto | fp32 | bf16
    # CPU intra-op threads: an integer >= 1, auto (one per available core, passive OpenMP
    # waiting; mtkit.runtime.resolve_threads) or None (PyTorch's default). Typed Any
    # because OmegaConf 2.3 has no int-or-str fields; check() checks the value.
    threads: Any = "auto"
    # Data-parallel CPU training processes that python -m mtkit.train starts itself
    # (mtkit.training.launch), each training on its part of every batch: an integer from 1
    # to the cores this process may use (a larger one is a one-line error when the command
    # starts), or auto (2 on a CPU of 2 or more cores when threads=auto, else 1; see
    # mtkit.training.launch.resolve_processes).
    processes: Any = "auto"

    def check(self) -> None:
        s = "train"
        ok = self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", self.device)
        check_value(bool(ok), s, "device", self.device, "one of: auto, cpu, cuda, cuda:N")
        check_choice(s, "precision", self.precision, ("auto", "fp32", "bf16"))
        good = self.threads in (None, "auto") or (is_int(self.threads) and self.threads >= 1)
        check_value(good, s, "threads", self.threads, "an integer >= 1, auto or null")
        count = self.processes
        good = count == "auto" or (is_int(count) and count >= 1)
        check_value(good, s, "processes", count, "an integer >= 1 or auto")


@dataclass
class OptimizerConfig(TrainKeys):
    """The optimizer, gradient clipping and accumulation, and the weights' moving average."""

    optimizer: str = "adam"  # adam | sgd
    lr: float = 2e-3
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    momentum: float = 0.0  # SGD only
    weight_decay: float = 0.0
    clip_norm: float = 5.0  # gradient-norm clipping (0: off)
    # batches per update: one update on the gradient of N batches, as one N times larger
    accumulate: int = 1
    # decay of an exponential moving average of the weights, saved as ema.pt (0 or None: off)
    ema_decay: float | None = None

    def check(self) -> None:
        s = "train"
        check_choice(s, "optimizer", self.optimizer, ("adam", "sgd"))
        good = is_int(self.accumulate) and self.accumulate >= 1
        check_value(good, s, "accumulate", self.accumulate, "an integer >= 1")
        decay = self.ema_decay
        good = decay is None or decay == 0 or 0 < decay < 1
        check_value(good, s, "ema_decay", decay, "a number in (0, 1), or 0 or null for none")
        check_value(0 < self.lr < math.inf, s, "lr", self.lr, "a number > 0")
        ok = len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas)
        check_value(ok, s, "adam_betas", self.adam_betas, "[beta1, beta2], each in [0, 1)")
        for key in ("momentum", "weight_decay", "clip_norm"):
            value = getattr(self, key)
            check_value(0 <= value < math.inf, s, key, value, "a number >= 0")


@dataclass
class ScheduleConfig(TrainKeys):
    """What changes during training: the learning rate and the teacher-forcing ratio."""

    warmup_steps: int = 0  # linear warmup
    schedule: str = "plateau"  # plateau (decay when the validation loss stalls) | constant
    decay_factor: float = 0.5
    decay_patience: int = 1  # validations without improvement before a decay
    min_lr: float = 1e-5
    teacher_forcing: float = 1.0  # probability of feeding the gold previous token
    teacher_forcing_schedule: str = "constant"  # constant | linear | inverse_sigmoid
    teacher_forcing_min: float = 0.0
    teacher_forcing_steps: int = 10000  # length of the linear schedule
    teacher_forcing_k: float = 1000.0  # k of the inverse sigmoid
    # The schedule over a share of the update budget instead: linear ends, and the inverse
    # sigmoid is half way, at span * train.max_steps (overrides teacher_forcing_steps and _k).
    teacher_forcing_span: float | None = None

    def check(self) -> None:
        s = "train"
        check_choice(s, "schedule", self.schedule, ("constant", "plateau"))
        schedules = ("constant", "linear", "inverse_sigmoid")
        check_choice(s, "teacher_forcing_schedule", self.teacher_forcing_schedule, schedules)
        for key in ("warmup_steps", "decay_patience"):
            value = getattr(self, key)
            check_value(value >= 0, s, key, value, "an integer >= 0")
        ok = 0.0 < self.decay_factor <= 1.0
        check_value(ok, s, "decay_factor", self.decay_factor, "a number in (0, 1]")
        check_value(0 <= self.min_lr < math.inf, s, "min_lr", self.min_lr, "a number >= 0")
        for key in ("teacher_forcing", "teacher_forcing_min"):
            value = getattr(self, key)
            check_value(0.0 <= value <= 1.0, s, key, value, "a number in [0, 1]")
        steps = self.teacher_forcing_steps
        check_value(steps >= 1, s, "teacher_forcing_steps", steps, "an integer >= 1")
        ok = 0 < self.teacher_forcing_k < math.inf
        check_value(ok, s, "teacher_forcing_k", self.teacher_forcing_k, "a number > 0")
        span = self.teacher_forcing_span
        if span is not None:
            ok = 0.0 < span <= 1.0
            check_value(ok, s, "teacher_forcing_span", span, "a fraction in (0, 1] or null")


@dataclass
class BudgetConfig(TrainKeys):
    """When training stops: the first budget reached, early stopping, or a diverged loss."""

    max_epochs: int | None = None
    max_steps: int | None = None
    max_minutes: float | None = None  # wall-clock budget
    early_stopping_metric: str = "bleu"  # bleu | loss | ppl (best.pt follows it)
    patience: int | None = 10  # validations without improvement before stopping (None: never)
    max_bad_steps: int = 20  # stop after this many non-finite losses in a row

    def check(self) -> None:
        s = "train"
        for key in ("max_epochs", "max_steps", "patience"):
            value = getattr(self, key)
            if value is not None:
                check_value(value >= 1, s, key, value, "an integer >= 1 or null")
        if self.max_minutes is not None:
            check_value(self.max_minutes > 0, s, "max_minutes", self.max_minutes, "a number > 0")
        metrics = ("bleu", "loss", "ppl")
        check_choice(s, "early_stopping_metric", self.early_stopping_metric, metrics)
        bad = self.max_bad_steps
        check_value(bad >= 1, s, "max_bad_steps", bad, "an integer >= 1")


@dataclass
class LoopConfig(TrainKeys):
    """How often the loop validates and logs, and what it reports."""

    valid_every: int | None = None  # steps (None: twice per epoch, at most every 2000 steps)
    valid_bleu: bool = True  # BLEU at each validation
    log_every: int = 50  # a progress line every N steps
    test_at_end: bool = True  # score best.pt on the test split when training ends
    # also write TensorBoard event files into the run directory
    tensorboard: bool = False

    def check(self) -> None:
        s = "train"
        if self.valid_every is not None:
            ok = self.valid_every >= 1
            check_value(ok, s, "valid_every", self.valid_every, "an integer >= 1 or null")
        check_value(self.log_every >= 1, s, "log_every", self.log_every, "an integer >= 1")


@dataclass
class RunDirConfig(TrainKeys):
    """The run directory: where a run restarts from, and what it may write there."""

    resume: str | None = None  # a last.pt to resume from
    # start a new run from a trained checkpoint's weights and sentencepiece models
    # (fine-tuning): optimizer, schedule and step count start afresh
    init_from: str | None = None
    # allow training into a run directory that already holds a checkpoint
    overwrite: bool = False
    # keep the last N validation checkpoints (step-XXXXXX.pt); 0 = none
    keep_checkpoints: int = 3

    def check(self) -> None:
        ok = self.keep_checkpoints >= 0
        check_value(ok, "train", "keep_checkpoints", self.keep_checkpoints, "an integer >= 0")
        if self.init_from is not None and self.resume is not None:
            expected = "null with train.resume (resume continues a run; init_from starts one)"
            check_value(False, "train", "init_from", self.init_from, expected)


@dataclass
class TrainConfig(
    RunDirConfig, LoopConfig, BudgetConfig, ScheduleConfig, OptimizerConfig, RuntimeConfig
):
    """The ``train`` group: every key of :data:`TRAIN_GROUPS`, flat (``train.lr``).

    The groups are bases only to lay their keys out as fields of one dataclass; they are
    listed last group first because a dataclass puts the fields of its last base first.
    """

    def check(self) -> None:
        for group in TRAIN_GROUPS:
            group.check(self)
        if self.teacher_forcing_span is not None and self.max_steps is None:
            expected = "null unless train.max_steps sets the update budget it is a share of"
            check_value(False, "train", "teacher_forcing_span", self.teacher_forcing_span, expected)
        if self.early_stopping_metric == "bleu" and not self.valid_bleu:
            expected = "loss or ppl when train.valid_bleu=false"
            check_value(False, "train", "early_stopping_metric", "bleu", expected)


# The groups in the order of their keys under ``train``: TrainConfig's bases, last first.
TRAIN_GROUPS: tuple[type[TrainKeys], ...] = tuple(reversed(TrainConfig.__bases__))
