"""Schedules that change with validation: learning-rate decay, early stopping, teacher forcing."""

from __future__ import annotations

import math

import pytest

from mtkit.config import TrainConfig
from mtkit.errors import ConfigError
from mtkit.training.optim import (
    EarlyStopping,
    LearningRate,
    schedule_shape,
    teacher_forcing_ratio,
)


def test_early_stopping_on_bleu_counts_validations_without_a_gain():
    stopping = EarlyStopping("bleu", patience=2)
    assert stopping.update(10.0) and stopping.best == 10.0
    assert not stopping.update(9.0) and not stopping.should_stop
    assert not stopping.update(math.nan)  # BLEU not computed: neither a gain nor a loss
    assert stopping.bad_validations == 1
    assert stopping.update(10.5) and stopping.bad_validations == 0
    assert not stopping.update(10.5)  # equal is not better
    assert not stopping.update(3.0) and stopping.should_stop


def test_early_stopping_on_loss_goes_downwards_and_survives_a_resume():
    stopping = EarlyStopping("loss", patience=None)
    assert stopping.update(3.0) and stopping.update(2.5) and not stopping.update(2.7)
    assert not stopping.should_stop  # no patience: never stops
    restored = EarlyStopping("loss", patience=None)
    restored.load_state_dict(stopping.state_dict())
    assert (restored.best, restored.bad_validations) == (2.5, 1)


def test_learning_rate_decays_on_a_plateau_of_the_validation_loss():
    cfg = TrainConfig(lr=1.0, schedule="plateau", decay_factor=0.5, decay_patience=2, min_lr=0.2)
    rate = LearningRate(cfg)
    assert not rate.after_validation(3.0)
    assert not rate.after_validation(3.1)  # one bad validation: patience 2
    assert rate.after_validation(3.2) and rate.base == 0.5
    assert not rate.after_validation(3.3)
    assert rate.after_validation(3.4) and rate.base == 0.25
    rate.after_validation(3.5)
    assert rate.after_validation(3.6) and rate.base == 0.2  # never below min_lr
    restored = LearningRate(cfg)
    restored.load_state_dict({"base": 0.5, "best_loss": 3.0, "bad_validations": 1.0})
    assert restored.plateau == 1  # the key name of older checkpoints


def test_warmup_is_linear():
    rate = LearningRate(TrainConfig(lr=1.0, warmup_steps=4))
    assert [rate.at(s) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("constant", [1.0, 1.0, 1.0]),
        ("linear", [1.0, 0.6, 0.2]),  # from 1.0 to 0.2 over 100 steps
    ],
)
def test_teacher_forcing_schedules(schedule, expected):
    cfg = TrainConfig(
        teacher_forcing_schedule=schedule, teacher_forcing_min=0.2, teacher_forcing_steps=100
    )
    assert [round(teacher_forcing_ratio(cfg, s), 6) for s in (0, 50, 100)] == expected


def test_inverse_sigmoid_decays_from_the_start_to_the_floor():
    cfg = TrainConfig(
        teacher_forcing_schedule="inverse_sigmoid", teacher_forcing_min=0.1, teacher_forcing_k=10.0
    )
    ratios = [teacher_forcing_ratio(cfg, s) for s in (0, 20, 50, 100, 1000)]
    assert ratios == sorted(ratios, reverse=True)
    assert ratios[0] == pytest.approx(0.1 + 0.9 * 10 / 11)  # k / (k + e^0)
    assert ratios[-1] == pytest.approx(0.1)


@pytest.mark.parametrize("steps", [200, 900, 5000])
def test_a_span_lays_the_schedule_over_the_update_budget(steps):
    """linear ends at span * max_steps; the inverse sigmoid is half way at half of it."""
    linear = TrainConfig(
        teacher_forcing_schedule="linear",
        teacher_forcing_min=0.5,
        teacher_forcing_span=1.0,
        max_steps=steps,
    )
    assert teacher_forcing_ratio(linear, 0) == 1.0
    assert teacher_forcing_ratio(linear, steps // 2) == pytest.approx(0.75, abs=1e-2)
    assert teacher_forcing_ratio(linear, steps) == 0.5
    sigmoid = TrainConfig(
        teacher_forcing_schedule="inverse_sigmoid",
        teacher_forcing_min=0.0,
        teacher_forcing_span=0.5,
        max_steps=steps,
    )
    k = schedule_shape(sigmoid)[1]
    assert k * math.log(k) == pytest.approx(steps / 4)  # half way at half of 0.5 * steps
    assert teacher_forcing_ratio(sigmoid, steps // 4) == pytest.approx(0.5, abs=0.02)
    assert teacher_forcing_ratio(sigmoid, steps // 2) < 0.2


def test_a_span_needs_an_update_budget():
    with pytest.raises(ConfigError, match="teacher_forcing_span"):
        TrainConfig(teacher_forcing_span=0.5).check()
    with pytest.raises(ConfigError, match="teacher_forcing_span"):
        TrainConfig(teacher_forcing_span=1.5, max_steps=10).check()
