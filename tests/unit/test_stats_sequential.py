"""mSPRT A/B tests under repeated looks: the closed form against its definition, the false-positive rate of
"a winner at any look" in seeded A/A simulations against naive repeated z-tests, power, and the stateful API."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate
from scipy import stats as sps

from kultivar.domain.stats import ABTestState, ab_test_look, always_valid_p_values
from kultivar.domain.stats.sequential import msprt_statistics

ALPHA = 0.05


def _simulate(rate_a: float, rate_b: float, *, experiments: int = 2000, looks: int = 20, per_look: int = 100,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative successes of a and b and the (equal) sample sizes at each look, vectorised."""
    rng = np.random.default_rng(seed)
    sa = rng.binomial(per_look, rate_a, size=(experiments, looks)).cumsum(axis=1)
    sb = rng.binomial(per_look, rate_b, size=(experiments, looks)).cumsum(axis=1)
    return sa, sb, np.arange(1, looks + 1) * per_look


def _naive_any_look(sa: np.ndarray, sb: np.ndarray, n: np.ndarray) -> float:
    """Share of experiments where a fixed-sample pooled z-test says p <= alpha at some look (peeking)."""
    pooled = (sa + sb) / (2 * n)
    se = np.sqrt(pooled * (1 - pooled) * 2 / n)
    z = np.divide(sa / n - sb / n, se, out=np.zeros_like(se), where=se > 0)
    return float((2 * sps.norm.sf(np.abs(z)) <= ALPHA).any(axis=1).mean())


def test_likelihood_ratio_closed_form_equals_the_mixture_integral() -> None:
    # Lambda = integral over theta ~ N(0, tau^2) of N(d; theta, V) / N(d; 0, V), the definition in Johari et al.
    sa, na, sb, nb, tau = 230, 400, 200, 380, 0.05
    d, p, half = (float(x) for x in msprt_statistics(sa, na, sb, nb, tau=tau, alpha=ALPHA))
    pa, pb = sa / na, sb / nb
    v = pa * (1 - pa) / na + pb * (1 - pb) / nb
    sd = math.sqrt(v)

    def mixture_ratio(centre: float) -> float:
        """The mixture likelihood ratio against "the difference is centre", by numerical integration."""
        def integrand(t: float) -> float:
            return sps.norm.pdf(d, t, sd) / sps.norm.pdf(d, centre, sd) * sps.norm.pdf(t - centre, 0, tau)
        return float(integrate.quad(integrand, -1, 1)[0])

    assert p == pytest.approx(min(1.0, 1 / mixture_ratio(0.0)), rel=1e-8)
    # The interval's edges are exactly where the same ratio, centred there, reaches 1/alpha.
    for edge in (d - half, d + half):
        assert mixture_ratio(edge) == pytest.approx(1 / ALPHA, rel=1e-6)


@pytest.mark.parametrize("rate", [0.5, 0.1])
def test_aa_false_positive_rate_at_any_of_20_looks_stays_below_alpha(rate: float) -> None:
    sa, sb, n = _simulate(rate, rate, seed=int(rate * 100))
    msprt = float((always_valid_p_values(sa, n, sb, n, min_samples=100)[:, -1] <= ALPHA).mean())
    naive = _naive_any_look(sa, sb, n)
    slack = 3 * math.sqrt(ALPHA * (1 - ALPHA) / len(sa))  # three Monte-Carlo standard errors
    message = f"A/A at {rate}: mSPRT declared a winner in {msprt:.3f} of 2000, naive repeated z-tests in {naive:.3f}"
    assert msprt <= ALPHA + slack, message
    assert naive >= 2 * ALPHA, message  # peeking with a fixed-sample test inflates it (about 0.24 here)


def test_power_a_real_difference_is_detected_for_the_right_variant() -> None:
    sa, sb, n = _simulate(0.50, 0.58, experiments=500, seed=1)
    p = always_valid_p_values(sa, n, sb, n)
    detected = p[:, -1] <= ALPHA
    first = np.argmax(p <= ALPHA, axis=1)
    right_side = (sa[np.arange(len(sa)), first] < sb[np.arange(len(sb)), first])[detected]
    assert detected.mean() >= 0.9, f"power {detected.mean():.3f}"
    assert right_side.all()


def test_stateful_looks_agree_with_the_vectorised_p_values_and_never_increase() -> None:
    sa, sb, n = _simulate(0.5, 0.56, experiments=5, looks=15, per_look=60, seed=4)
    vectorised = always_valid_p_values(sa, n, sb, n, min_samples=100)
    for e in range(5):
        state: ABTestState | None = None
        previous = 1.0
        for look in range(15):
            result = ab_test_look(state, sa[e, look], n[look], sb[e, look], n[look], min_samples=100)
            state = ABTestState.from_wire(result.state.wire())  # survives a trip through status
            assert result.p_value == pytest.approx(vectorised[e, look], rel=1e-12)
            assert result.p_value <= previous
            previous = result.p_value
            if n[look] < 100:
                assert result.verdict == "continue" and "collecting samples" in result.message
            if result.verdict != "continue":
                assert result.p_value <= ALPHA
                assert not result.low <= 0 <= result.high  # the confidence sequence excludes no difference
                assert result.verdict == ("b" if result.high < 0 else "a")


def test_winner_message_and_bad_sequences() -> None:
    result = ab_test_look(None, 300, 1000, 420, 1000)
    assert result.verdict == "b"
    assert result.difference == pytest.approx(-0.12)
    assert result.high < 0
    assert result.message.startswith("b wins: a 0.3 (1000) vs b 0.42 (1000), difference -0.12")
    assert result.method.startswith("mSPRT")
    with pytest.raises(ValueError, match="went backwards"):
        ab_test_look(result.state, 100, 500, 100, 500)
    with pytest.raises(ValueError, match="alpha/tau changed"):
        ab_test_look(result.state, 400, 1200, 500, 1200, alpha=0.1)
    equal = ab_test_look(None, 500, 1000, 500, 1000)
    assert equal.verdict == "continue" and equal.p_value == 1.0
