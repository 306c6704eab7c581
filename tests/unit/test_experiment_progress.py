"""The experiment runner's time estimates: what each run status still costs."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtkit.experiment import progress
from mtkit.experiment.budget import Budget
from mtkit.experiment.spec import ExperimentSpec


def spec(**fields: object) -> ExperimentSpec:
    base: dict[str, object] = {
        "name": "x",
        "path": Path("x.yaml"),
        "description": "",
        "citation": "",
        "claim": "",
        "data": [],
        "data_display": [],
        "conditions": {"a": [], "b": []},
    }
    return ExperimentSpec(**{**base, **fields})  # type: ignore[arg-type]


def test_each_status_costs_what_is_left_of_it() -> None:
    estimator = progress.Estimator(Budget(steps=1000), eval_minutes=2.0, seconds_per_step=0.6)
    assert estimator.run_minutes("done") == 0.0
    assert estimator.run_minutes("waiting") == 0.0  # another experiment trains it
    assert estimator.run_minutes("evaluate") == 2.0
    assert estimator.run_minutes("new") == pytest.approx(10.0 + 0.5 + 2.0)
    assert estimator.run_minutes("resume", 4.0, 600) == pytest.approx(4.0 + 0.5 + 2.0)


def test_the_pace_follows_the_runs_measured() -> None:
    estimator = progress.Estimator(Budget(steps=100), eval_minutes=0.5)
    estimator.observe_training(wall_minutes=11.0, trained_minutes=10.0, steps=200)
    estimator.observe_training(wall_minutes=22.0, trained_minutes=20.0, steps=200)
    assert estimator.seconds_per_step == pytest.approx(4.5)  # 3 s and 6 s per update
    assert estimator.start_minutes == pytest.approx(1.5)
    assert estimator.training_minutes() == pytest.approx(7.5)


def test_extra_test_splits_add_to_the_evaluation_guess() -> None:
    plain, extra = spec(), spec(extra_tests=["concat"])
    assert progress.eval_minutes(plain) == progress.EVAL_MINUTES
    assert progress.eval_minutes(extra) == progress.EVAL_MINUTES + progress.EXTRA_TEST_MINUTES


def test_decoding_guesses_grow_with_the_beam() -> None:
    small = spec(decode_only=True, conditions={"b1": ["decode.beam_size=1"]})
    large = spec(decode_only=True, conditions={"b1": ["decode.beam_size=200"]})
    assert progress.eval_minutes(small) == pytest.approx(0.05 + 0.03)
    assert progress.eval_minutes(large) == pytest.approx(0.05 + 0.03 * 200)
