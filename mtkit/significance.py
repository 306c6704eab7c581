"""Is a difference real? An interval over training seeds, and paired tests on one test set.

Two sources of chance make one BLEU difference between two systems unreliable (Clark et
al., 2011, Better Hypothesis Testing for Statistical Machine Translation):

- **the optimizer**: another seed gives another model. Over ``n`` seeds per system,
  :func:`welch_interval` gives a confidence interval of the difference of the mean scores
  with Welch's t (unequal variances), ``(m_b − m_a) ± t_{df} · sqrt(s_a²/n_a + s_b²/n_b)``;
- **the test set**: another sample of sentences gives another score. For one pair of
  systems on the same sentences, :func:`paired_test` runs sacreBLEU's paired bootstrap
  resampling (Koehn, 2004) or approximate randomization (Riezler & Maxwell, 2005).

:func:`verdict` reads an interval against the sign a paper reports, in three words:
*reproduced* (the interval excludes 0 with the paper's sign), *contradicted* (it excludes
0 with the other sign), *not detected* (it holds 0; :func:`detectable` says how large a
difference the design could have shown). "Not detected" is never "no difference".
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

from sacrebleu.metrics.base import Metric
from sacrebleu.significance import PairedTest, Result

from mtkit.errors import ConfigError
from mtkit.metrics import METRICS, make_metric

TESTS = {"bootstrap": "bs", "randomization": "ar"}


@dataclass(frozen=True)
class Interval:
    """``difference`` = mean(b) − mean(a), and its two-sided ``confidence`` interval."""

    difference: float
    low: float
    high: float
    confidence: float
    df: float  # Welch–Satterthwaite degrees of freedom

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def welch_interval(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Interval:
    """Welch's interval of ``mean(b) − mean(a)`` over seeds; ``a`` and ``b`` hold ≥ 2
    scores each (one per seed)."""
    if len(a) < 2 or len(b) < 2:
        raise ConfigError(
            f"a seed interval needs >= 2 scores per system; got {len(a)} and {len(b)}"
        )
    var_a, var_b = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    difference = statistics.fmean(b) - statistics.fmean(a)
    se = math.sqrt(var_a + var_b)
    if se == 0:
        return Interval(difference, difference, difference, confidence, math.inf)
    df = (var_a + var_b) ** 2 / (var_a**2 / (len(a) - 1) + var_b**2 / (len(b) - 1))
    margin = t_quantile(0.5 + confidence / 2, df) * se
    return Interval(difference, difference - margin, difference + margin, confidence, df)


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (``0.5 < p < 1``),
    by bisection on its distribution function."""
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if t_cdf(middle, df) < p else (low, middle)
    return (low + high) / 2


def t_cdf(t: float, df: float) -> float:
    """P(T ≤ t) for Student's t: ``1 − I_x(df/2, 1/2) / 2`` with ``x = df / (df + t²)``
    for t ≥ 0 (I is the regularized incomplete beta function)."""
    if math.isinf(df):
        return 0.5 * (1 + math.erf(t / math.sqrt(2)))
    tail = 0.5 * _incomplete_beta(df / 2, 0.5, df / (df + t * t))
    return 1 - tail if t >= 0 else tail


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b) by its continued fraction (Numerical Recipes, betacf), using the
    symmetry I_x(a, b) = 1 − I_{1−x}(b, a) where the fraction converges slowly."""
    if x <= 0 or x >= 1:
        return 0.0 if x <= 0 else 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x > (a + 1) / (a + b + 2):
        return 1 - _incomplete_beta(b, a, 1 - x)
    fraction, c, d = 1.0, 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > 1e-300 else 1e-300)
    fraction = d
    for m in range(1, 300):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > 1e-300 else 1e-300)
            c = 1 + numerator / c
            c = c if abs(c) > 1e-300 else 1e-300
            fraction *= c * d
        if abs(c * d - 1) < 1e-15:
            break
    return math.exp(log_front) * fraction / a


def verdict(interval: Interval, expected_sign: int) -> str:
    """*reproduced*, *contradicted* or *not detected*, for a paper that reports an effect
    of sign ``expected_sign`` (+1: b above a; −1: b below a)."""
    if expected_sign not in (1, -1):
        raise ConfigError(f"expected_sign={expected_sign!r} is not valid; expected 1 or -1")
    if interval.low > 0 or interval.high < 0:
        sign = 1 if interval.low > 0 else -1
        return "reproduced" if sign == expected_sign else "contradicted"
    return "not detected"


def detectable(interval: Interval) -> float:
    """The smallest difference this design would have detected: the interval's half-width
    (a true difference of that size puts the interval's centre one margin away from 0, so
    it excludes 0 about half of the time; twice it, most of the time)."""
    return interval.half_width


@dataclass(frozen=True)
class PairedResult:
    """One metric of a system against the baseline on the same sentences."""

    metric: str
    baseline: float
    system: float
    p_value: float
    test: str  # bootstrap | randomization
    samples: int
    signature: str
    system_mean: float | None = None  # bootstrap only: mean over resamples
    system_ci: float | None = None  # bootstrap only: half-width of its 95% interval

    def as_dict(self) -> dict[str, object]:
        fields = {k: v for k, v in self.__dict__.items() if v is not None}
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in fields.items()}


def paired_test(
    baseline: Sequence[str],
    system: Sequence[str],
    references: Sequence[Sequence[str]],
    metrics: Sequence[str] = ("bleu",),
    test: str = "bootstrap",
    samples: int = 1000,
) -> list[PairedResult]:
    """sacreBLEU's paired test of ``system`` against ``baseline`` (lines aligned with every
    reference stream in ``references``), one result per metric. The p-value is that of
    the null hypothesis "the two systems score alike"; sacreBLEU seeds its resampling
    (``SACREBLEU_SEED``, 12345 by default), so a rerun gives the same p-value.

    Two identical outputs get p = 1, and so do two outputs with the same score: sacreBLEU
    (following MultEval) counts only resampled differences strictly above the observed
    one, so a system tested against itself, or two systems that score 0 on every resample
    (BLEU of outputs that match nothing), would get its smallest p-value,
    ``1 / (samples + 1)``, where no difference was observed."""
    if test not in TESTS:
        raise ConfigError(f"unknown paired test {test!r}; expected bootstrap or randomization")
    if samples < 1:
        raise ConfigError(f"--paired-samples={samples} is not valid; expected an integer >= 1")
    unknown = [name for name in metrics if name not in METRICS]
    if unknown:
        raise ConfigError(f"unknown metric {unknown[0]!r}; expected one of {', '.join(METRICS)}")
    chosen: Mapping[str, Metric] = {name: make_metric(name) for name in metrics}
    systems: list[tuple[str, Sequence[str]]] = [("baseline", baseline), ("system", system)]
    streams = [list(stream) for stream in references]
    signatures, scores = PairedTest(
        systems, dict(chosen), streams, test_type=TESTS[test], n_samples=samples
    )()
    identical = list(baseline) == list(system)
    results = []
    for key in list(scores)[1:]:  # the first entry names the systems
        base, other = cast(list[Result], scores[key])
        equal = other.score == base.score  # no observed difference: nothing to test
        results.append(
            PairedResult(
                metric=key,
                baseline=float(base.score),
                system=float(other.score),
                p_value=1.0 if identical or equal else float(other.p_value or 0.0),
                test=test,
                samples=samples,
                signature=str(signatures[key]),
                system_mean=None if other.mean is None else float(other.mean),
                system_ci=None if other.ci is None else float(other.ci),
            )
        )
    return results
