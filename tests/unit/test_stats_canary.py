"""Canary against stable: the two-sample tests against statsmodels and scipy, and the one-sided verdicts."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.proportion import proportions_ztest

from kultivar.domain.stats import (
    RegressionSums,
    canary_error_verdict,
    canary_proportion_verdict,
    two_proportion_ztest,
    welch_ttest_from_sums,
)


@pytest.mark.parametrize("counts", [(180, 200, 190, 200), (45, 60, 900, 1000), (5, 10, 7, 10), (400, 500, 380, 520)])
@pytest.mark.parametrize("alternative", ["two-sided", "smaller", "larger"])
def test_two_proportion_ztest_matches_statsmodels(counts: tuple[int, int, int, int], alternative: str) -> None:
    s1, n1, s2, n2 = counts
    z, p = proportions_ztest([s1, s2], [n1, n2], alternative=alternative)
    ours = two_proportion_ztest(s1, n1, s2, n2, alternative)  # type: ignore[arg-type]
    assert ours.statistic == pytest.approx(z, rel=1e-12)
    assert ours.p_value == pytest.approx(p, rel=1e-10)
    assert ours.difference == pytest.approx(s1 / n1 - s2 / n2)


@pytest.mark.parametrize("alternative", ["two-sided", "less", "greater"])
@pytest.mark.parametrize("sizes", [(40, 60), (300, 1000), (5, 8)])
def test_welch_from_sums_matches_scipy(alternative: str, sizes: tuple[int, int]) -> None:
    rng = np.random.default_rng(sizes[0])
    x = np.abs(rng.normal(0.3, 1.0, sizes[0]))
    y = np.abs(rng.normal(0.0, 2.0, sizes[1]))
    ref = sps.ttest_ind_from_stats(x.mean(), x.std(ddof=1), len(x), y.mean(), y.std(ddof=1), len(y),
                                   equal_var=False, alternative=alternative)
    raw = sps.ttest_ind(x, y, equal_var=False, alternative=alternative)
    ours = welch_ttest_from_sums((len(x), x.sum(), (x**2).sum()), (len(y), y.sum(), (y**2).sum()),
                                 {"less": "smaller", "greater": "larger"}.get(alternative, alternative))  # type: ignore[arg-type]
    assert ours.statistic == pytest.approx(ref.statistic, rel=1e-9)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-8)
    assert ours.p_value == pytest.approx(raw.pvalue, rel=1e-8)
    assert ours.df == pytest.approx(raw.df, rel=1e-9)


def test_canary_clearly_worse_is_rolled_back_only_with_enough_labels() -> None:
    few = canary_proportion_verdict(10, 40, 380, 400, min_samples=100)
    assert few.verdict == "inconclusive"  # 25 % vs 95 %, yet 40 labels is below the minimum: never a pass
    assert "too few labelled predictions" in few.message and few.result is None
    worse = canary_proportion_verdict(150, 200, 380, 400, min_samples=100)
    assert worse.verdict == "worse"
    assert worse.result is not None and worse.result.p_value < 1e-6
    assert worse.message.startswith("accuracy canary 0.75 (200 labels) vs stable 0.95 (400)")
    better = canary_proportion_verdict(195, 200, 360, 400, min_samples=100)
    assert better.verdict == "not-worse"
    slightly = canary_proportion_verdict(176, 200, 360, 400, min_samples=100)  # 0.88 vs 0.90: not significant
    assert slightly.verdict == "not-worse"
    assert slightly.result is not None and slightly.result.p_value > 0.05


def test_canary_error_verdict_welch_on_absolute_errors() -> None:
    rng = np.random.default_rng(3)

    def sums(errors: np.ndarray) -> RegressionSums:
        return RegressionSums(len(errors), float(np.abs(errors).sum()), float((errors**2).sum()), float(errors.sum()))

    stable = sums(rng.normal(0, 1.0, 500))
    assert canary_error_verdict(sums(rng.normal(0, 2.0, 300)), stable).verdict == "worse"
    assert canary_error_verdict(sums(rng.normal(0, 1.0, 300)), stable).verdict == "not-worse"
    assert canary_error_verdict(sums(rng.normal(0, 1.0, 300)), stable).result.test == "Welch t-test"  # type: ignore[union-attr]
    assert canary_error_verdict(sums(rng.normal(0, 5.0, 20)), stable).verdict == "inconclusive"


def test_degenerate_samples_do_not_crash() -> None:
    tie = two_proportion_ztest(100, 100, 200, 200, "smaller")
    assert (tie.statistic, tie.p_value) == (0.0, 0.5)
    const = welch_ttest_from_sums((10, 10.0, 10.0), (10, 20.0, 40.0), "larger")
    assert const.p_value == 1.0  # canary errors all 1, stable all 2: certainly not larger
    with pytest.raises(ValueError, match="successes"):
        two_proportion_ztest(5, 4, 1, 1)
