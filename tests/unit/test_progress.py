"""Progress lines: the percentage of the budget done and the ETA, on a fake clock."""

from __future__ import annotations

import pytest

from mtkit.config import TrainConfig
from mtkit.training.progress import Eta, format_duration


class Clock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_step_budget_is_steps_left_times_the_recent_pace() -> None:
    clock = Clock()
    eta = Eta.for_run(TrainConfig(max_steps=400), steps_per_epoch=1000, step=0, clock=clock)
    clock.now += 50.0  # 100 steps at 0.5 s each
    assert eta.estimate(100, elapsed=50.0) == (0.25, 150.0)
    clock.now += 100.0  # the next 100 steps slower (a validation among them): 1 s each
    fraction, left = eta.estimate(200, elapsed=150.0)
    assert fraction == 0.5 and left == pytest.approx(200 * 0.75)  # 150 s for 200 steps
    assert eta.describe(200, elapsed=150.0) == " | 50% ETA 2m30s"


def test_the_pace_is_that_of_the_last_window_of_progress_lines() -> None:
    clock = Clock()
    eta = Eta(total_steps=1000, total_seconds=None, step=0, clock=clock, window=2)
    for step, seconds in ((10, 100.0), (20, 1.0), (30, 1.0)):
        clock.now += seconds
        found = eta.estimate(step, elapsed=0.0)
    assert found is not None
    assert found[1] == pytest.approx(970 * 0.1)  # the slow first interval has left the window


def test_a_time_budget_is_its_minutes_left_and_the_sooner_budget_counts() -> None:
    clock = Clock()
    minutes = Eta.for_run(TrainConfig(max_minutes=10), steps_per_epoch=50, step=0, clock=clock)
    clock.now += 30.0
    assert minutes.estimate(10, elapsed=150.0) == (0.25, 450.0)
    both = Eta.for_run(
        TrainConfig(max_minutes=10, max_epochs=2), steps_per_epoch=50, step=0, clock=clock
    )
    clock.now += 30.0  # 10 steps in 30 s: the 100 steps of 2 epochs end in 270 s, sooner
    assert both.estimate(10, elapsed=30.0) == (0.1, 270.0)
    clock.now += 1.0  # 1 more step in 1 s: the 10 minutes, 240 s away, now end sooner
    fraction, left = both.estimate(11, elapsed=360.0)
    assert (fraction, left) == (0.6, 240.0)


def test_an_epoch_budget_counts_the_steps_of_its_epochs_and_max_steps_may_end_it_sooner() -> None:
    assert Eta.for_run(TrainConfig(max_epochs=3), 40, 0).total_steps == 120
    assert Eta.for_run(TrainConfig(max_epochs=3, max_steps=100), 40, 0).total_steps == 100


def test_a_resumed_run_counts_from_its_step_and_never_goes_past_the_end() -> None:
    clock = Clock()
    eta = Eta.for_run(TrainConfig(max_steps=100), steps_per_epoch=10, step=60, clock=clock)
    clock.now += 20.0
    assert eta.estimate(80, elapsed=0.0) == (0.8, 20.0)
    clock.now += 5.0
    assert eta.estimate(120, elapsed=0.0) == (1.0, 0.0)


def test_no_budget_no_eta() -> None:
    clock = Clock()
    eta = Eta.for_run(TrainConfig(), steps_per_epoch=10, step=0, clock=clock)
    clock.now += 1.0
    assert eta.estimate(10, elapsed=1.0) is None
    assert eta.describe(20, elapsed=2.0) == ""


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.4, "0s"), (45, "45s"), (192, "3m12s"), (7500, "2h05m"), (-3, "0s")]
)
def test_durations_read_as_hours_minutes_seconds(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
