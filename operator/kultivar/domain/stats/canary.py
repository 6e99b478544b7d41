"""Fixed-sample two-sample tests for a canary against stable on live outcomes, and the one-sided verdict.

- Accuracy-like metrics (a share of correct predictions): the pooled two-proportion z-test (e.g. Agresti,
  *Categorical Data Analysis*, 3rd ed., §3.1), as ``statsmodels.stats.proportion.proportions_ztest``. Assumes
  independent labelled predictions and enough of them for the normal approximation (``min_samples``).
- Regression: Welch's unequal-variance t-test (Welch, 1947) on per-request absolute errors, computed from the
  counters' sums (n, sum |e|, sum e^2), as ``scipy.stats.ttest_ind_from_stats(equal_var=False)``. The mean absolute
  error is the live MAE, so the test asks whether the canary's MAE is higher.

The verdict is one-sided: ``worse`` when the canary is significantly worse at ``alpha``; ``not-worse`` when the test
finds no evidence of that; ``inconclusive`` when either side has fewer than ``min_samples`` labelled predictions
(never a pass). These are fixed-sample tests: looking again at every analysis interval raises the chance of a
false ``worse`` (an unneeded rollback), never of a missed one; A/B decisions use :mod:`.sequential` instead.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from kultivar.domain.stats.live import RegressionSums

Alternative = Literal["two-sided", "smaller", "larger"]
Verdict = Literal["worse", "not-worse", "inconclusive"]


@dataclass(frozen=True)
class TestResult:
    """A two-sample test of sample 1 against sample 2; ``difference`` is estimate 1 - estimate 2."""

    test: str
    statistic: float
    p_value: float
    difference: float
    alternative: Alternative
    df: float | None = None

    def wire(self) -> dict[str, Any]:
        return asdict(self)


def _p_value(statistic: float, alternative: Alternative, df: float | None = None) -> float:
    # Imported here: scipy.stats is ~60 MiB of the operator's RSS, for life, and only a canary's analysis needs it.
    from scipy import stats as sps

    dist = sps.norm if df is None else sps.t(df)
    if alternative == "smaller":
        return float(dist.cdf(statistic))
    if alternative == "larger":
        return float(dist.sf(statistic))
    return float(2 * dist.sf(abs(statistic)))


def two_proportion_ztest(successes_1: float, n_1: float, successes_2: float, n_2: float,
                         alternative: Alternative = "two-sided") -> TestResult:
    """Pooled z-test of p1 - p2 = 0 ("smaller": H1 p1 < p2). With no variance (every outcome the same in both
    samples) the proportions are equal: statistic 0."""
    if min(n_1, n_2) <= 0 or not (0 <= successes_1 <= n_1 and 0 <= successes_2 <= n_2):
        raise ValueError("need 0 <= successes <= n and n > 0 in both samples")
    p1, p2 = successes_1 / n_1, successes_2 / n_2
    pooled = (successes_1 + successes_2) / (n_1 + n_2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_1 + 1 / n_2))
    z = (p1 - p2) / se if se > 0 else 0.0
    return TestResult("two-proportion z-test (pooled)", z, _p_value(z, alternative), p1 - p2, alternative)


def welch_ttest_from_sums(first: tuple[float, float, float], second: tuple[float, float, float],
                          alternative: Alternative = "two-sided") -> TestResult:
    """Welch's t-test of mean1 - mean2 = 0 from (n, sum, sum of squares) of each sample ("larger": H1 mean1 >
    mean2), with the Welch-Satterthwaite degrees of freedom. Each sample needs at least two values."""
    (n1, s1, q1), (n2, s2, q2) = first, second
    if min(n1, n2) < 2:
        raise ValueError("Welch's t-test needs at least two values in each sample")
    m1, m2 = s1 / n1, s2 / n2
    v1, v2 = max(0.0, (q1 - n1 * m1 * m1) / (n1 - 1)), max(0.0, (q2 - n2 * m2 * m2) / (n2 - 1))
    a, b = v1 / n1, v2 / n2
    if a + b == 0:  # both samples constant: the means are equal or certainly different
        t = 0.0 if m1 == m2 else math.copysign(math.inf, m1 - m2)
        return TestResult("Welch t-test", t, _p_value(t, alternative), m1 - m2, alternative, df=float(n1 + n2 - 2))
    t = (m1 - m2) / math.sqrt(a + b)
    df = (a + b) ** 2 / ((a * a / (n1 - 1) if a else 0.0) + (b * b / (n2 - 1) if b else 0.0))
    return TestResult("Welch t-test", t, _p_value(t, alternative, df), m1 - m2, alternative, df=df)


@dataclass(frozen=True)
class CanaryVerdict:
    verdict: Verdict
    metric: str
    canary: float | None
    stable: float | None
    n_canary: float
    n_stable: float
    alpha: float
    result: TestResult | None
    message: str

    def wire(self) -> dict[str, Any]:
        return asdict(self)


def _too_few(metric: str, n_canary: float, n_stable: float, alpha: float, min_samples: int) -> CanaryVerdict | None:
    if min(n_canary, n_stable) >= max(min_samples, 2):
        return None
    return CanaryVerdict("inconclusive", metric, None, None, n_canary, n_stable, alpha, None,
                         f"too few labelled predictions to judge {metric}: canary {n_canary:g}, stable {n_stable:g} "
                         f"(need {max(min_samples, 2)} each)")


def canary_proportion_verdict(canary_successes: float, canary_n: float, stable_successes: float, stable_n: float,
                              *, metric: str = "accuracy", alpha: float = 0.05, min_samples: int = 100
                              ) -> CanaryVerdict:
    """Whether the canary's share of correct predictions is significantly lower than stable's (one-sided)."""
    if (early := _too_few(metric, canary_n, stable_n, alpha, min_samples)) is not None:
        return early
    result = two_proportion_ztest(canary_successes, canary_n, stable_successes, stable_n, "smaller")
    canary, stable = canary_successes / canary_n, stable_successes / stable_n
    return _verdict(metric, canary, stable, canary_n, stable_n, alpha, result)


def canary_error_verdict(canary: RegressionSums, stable: RegressionSums, *, alpha: float = 0.05,
                         min_samples: int = 100) -> CanaryVerdict:
    """Whether the canary's mean absolute error is significantly higher than stable's (one-sided Welch)."""
    if (early := _too_few("mae", canary.n, stable.n, alpha, min_samples)) is not None:
        return early
    result = welch_ttest_from_sums((canary.n, canary.sum_abs_err, canary.sum_sq_err),
                                   (stable.n, stable.sum_abs_err, stable.sum_sq_err), "larger")
    return _verdict("mae", canary.sum_abs_err / canary.n, stable.sum_abs_err / stable.n, canary.n, stable.n,
                    alpha, result)


def _verdict(metric: str, canary: float, stable: float, n_canary: float, n_stable: float, alpha: float,
             result: TestResult) -> CanaryVerdict:
    worse = result.p_value <= alpha
    summary = (f"{metric} canary {canary:.4g} ({n_canary:g} labels) vs stable {stable:.4g} ({n_stable:g}), "
               f"{result.test} one-sided p={result.p_value:.3g}")
    return CanaryVerdict("worse" if worse else "not-worse", metric, canary, stable, n_canary, n_stable, alpha,
                         result, f"{summary}: {'significantly worse' if worse else 'not significantly worse'} "
                                 f"at alpha {alpha:g}")
