"""Seed intervals, the verdict rule and sacreBLEU's paired tests, on numbers with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mtkit.errors import ConfigError
from mtkit.significance import (
    Interval,
    detectable,
    paired_test,
    t_cdf,
    t_quantile,
    verdict,
    welch_interval,
)


@pytest.mark.parametrize(
    ("df", "quantile"),
    # two-sided 95% critical values from any t table
    [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (10, 2.228), (30, 2.042), (math.inf, 1.960)],
)
def test_t_quantiles_match_the_table(df, quantile):
    assert t_quantile(0.975, df) == pytest.approx(quantile, abs=5e-4)


@pytest.mark.parametrize("df", [1.0, 2.5, 5.88, 40.0])
def test_the_t_distribution_function_is_the_integral_of_the_density(df):
    """The continued fraction against the plain definition: the density integrated."""
    grid = np.linspace(-400, 2.0, 2_000_001)
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    density = np.exp(log_norm - (df + 1) / 2 * np.log1p(grid**2 / df))
    integral = float(np.sum((density[1:] + density[:-1]) / 2 * np.diff(grid)))
    # the tail beyond -400 is below 1e-3 only for df = 1; add it in closed form there
    if df == 1.0:
        integral += 0.5 - math.atan(400) / math.pi
    assert t_cdf(2.0, df) == pytest.approx(integral, abs=2e-5)
    assert t_cdf(-2.0, df) == pytest.approx(1 - t_cdf(2.0, df), abs=1e-12)


def test_welch_interval_by_hand():
    """a = 1..5, b = 2, 4, .., 10: difference 3, se = sqrt(2.5/5 + 10/5) = 1.5811,
    df = 2.5² / (0.5²/4 + 2²/4) = 5.8824, t_{0.975, 5.88} = 2.4589 -> 3 ± 3.8877
    (R: t.test(b, a) gives the interval [-0.888, 6.888])."""
    interval = welch_interval([1, 2, 3, 4, 5], [2, 4, 6, 8, 10])
    assert interval.difference == pytest.approx(3.0)
    assert interval.df == pytest.approx(5.8824, abs=1e-4)
    assert interval.low == pytest.approx(3 - 3.8877, abs=1e-3)
    assert interval.high == pytest.approx(3 + 3.8877, abs=1e-3)
    assert verdict(interval, +1) == "not detected"
    assert detectable(interval) == pytest.approx(3.8877, abs=1e-3)


def test_two_seeds_give_wide_intervals():
    """Two seeds a side with a 5-point gap and a 3-point seed spread: far from detected."""
    interval = welch_interval([19.3, 25.9], [17.5, 17.9])
    assert interval.df == pytest.approx(1.0, abs=0.05)
    assert interval.low < -20 and interval.high > 10
    assert verdict(interval, -1) == "not detected"


def test_the_verdict_rule():
    def at(low: float, high: float) -> Interval:
        return Interval((low + high) / 2, low, high, 0.95, 4.0)

    assert verdict(at(0.2, 1.4), +1) == "reproduced"
    assert verdict(at(0.2, 1.4), -1) == "contradicted"
    assert verdict(at(-1.4, -0.2), -1) == "reproduced"
    assert verdict(at(-0.1, 1.4), +1) == "not detected"
    with pytest.raises(ConfigError, match="expected_sign"):
        verdict(at(0.2, 1.4), 0)
    with pytest.raises(ConfigError, match=">= 2 scores per system"):
        welch_interval([1.0], [2.0, 3.0])


REFERENCES = ["the cat sat on the mat", "a dog runs in the park", "hello world", "it is a test"]


def test_paired_tests_tell_a_better_system_from_the_same_one():
    references = REFERENCES * 15
    baseline = ["the cat sat on a mat", "a dog walks in a park", "hello world", "it is test"] * 15
    for test in ("bootstrap", "randomization"):
        [better] = paired_test(baseline, references, [references], test=test, samples=300)
        assert better.system > better.baseline and better.p_value < 0.05
        assert better.metric == "BLEU" and better.test == test
        [same] = paired_test(baseline, baseline, [references], test=test, samples=300)
        assert same.system == same.baseline and same.p_value == 1.0  # nothing to test
    again = paired_test(baseline, references, [references], metrics=("bleu", "chrf"))
    assert [r.metric for r in again] == ["BLEU", "chrF2"]
    assert again[0].system_mean is not None and "bs:1000" in again[0].signature
    assert again[0] == paired_test(baseline, references, [references])[0]  # seeded: same p


def test_paired_test_refuses_unknown_names():
    with pytest.raises(ConfigError, match="unknown paired test 'perm'"):
        paired_test(["a"], ["a"], [["a"]], test="perm")
    with pytest.raises(ConfigError, match="unknown metric 'meteor'"):
        paired_test(["a"], ["a"], [["a"]], metrics=("meteor",))
