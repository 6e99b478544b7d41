"""A/B tests that stay valid when looked at every interval: the mixture sequential probability ratio test.

Method: mSPRT always-valid p-values and confidence sequences for the difference of two proportions, with a normal
mixture over the effect (Johari, Koomen, Pekelis & Walsh, "Always Valid Inference: Continuous Monitoring of A/B
Tests", Operations Research 70(3), 2022; arXiv:1512.04922, 2015/2017; the method behind Optimizely's Stats Engine).

With d = rate_a - rate_b, its plug-in variance V = pa(1-pa)/n_a + pb(1-pb)/n_b (normal approximation) and the
mixing distribution N(0, tau^2) over the true difference, the mixture likelihood ratio against "no difference" is

    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 d^2 / (2 V (V + tau^2))).

The always-valid p-value is the running minimum of 1/Lambda over the looks, so it never increases and, under no
difference, P(p ever <= alpha) <= alpha however often and however long one looks (Ville's inequality). Inverting
Lambda < 1/alpha gives the confidence sequence d +- sqrt(2V(V+tau^2)/tau^2 * (log(1/alpha) + log((V+tau^2)/V)/2)),
intersected across looks. tau is the scale of differences one expects (default 0.05, five percentage points):
the test is valid for any tau and most powerful for effects near it.

Assumptions: independent outcomes, each variant's rate stable over time (no novelty effects), and enough samples
for the normal approximation: looks before ``min_samples`` per variant are not tested (verdict ``continue``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

METHOD = "mSPRT (Johari et al. 2022), normal mixture"
DEFAULT_TAU = 0.05

ABVerdict = Literal["continue", "a", "b"]


def msprt_statistics(successes_a: npt.ArrayLike, n_a: npt.ArrayLike, successes_b: npt.ArrayLike, n_b: npt.ArrayLike,
                     *, tau: float = DEFAULT_TAU, alpha: float = 0.05
                     ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per look (any array shape): the difference rate_a - rate_b, 1/Lambda (this look's p-value before the
    running minimum) and the half width of this look's confidence interval at ``alpha``."""
    if tau <= 0 or not 0 < alpha < 1:
        raise ValueError(f"need tau > 0 and 0 < alpha < 1, got tau={tau}, alpha={alpha}")
    sa, na, sb, nb = (np.asarray(x, dtype=np.float64) for x in (successes_a, n_a, successes_b, n_b))
    pa, pb = sa / na, sb / nb
    diff = pa - pb
    var = pa * (1 - pa) / na + pb * (1 - pb) / nb
    tau2 = tau * tau
    with np.errstate(divide="ignore", invalid="ignore"):
        log_lr = 0.5 * np.log(var / (var + tau2)) + tau2 * diff * diff / (2 * var * (var + tau2))
        # No variance (every outcome the same so far): the data cannot tell the variants apart yet.
        log_lr = np.where(var > 0, log_lr, -np.inf)
        p = np.minimum(1.0, np.exp(-log_lr))
        half = np.sqrt(2 * var * (var + tau2) / tau2 * (math.log(1 / alpha) + 0.5 * np.log((var + tau2) / var)))
    half = np.where(var > 0, half, np.inf)
    return diff, p, half


def always_valid_p_values(successes_a: npt.ArrayLike, n_a: npt.ArrayLike, successes_b: npt.ArrayLike,
                          n_b: npt.ArrayLike, *, tau: float = DEFAULT_TAU, min_samples: int = 100
                          ) -> npt.NDArray[np.float64]:
    """Always-valid p-values of cumulative counts with the looks along the last axis (vectorised over the rest).
    Looks before each variant has ``min_samples`` are not tested (p stays 1)."""
    _, p, _ = msprt_statistics(successes_a, n_a, successes_b, n_b, tau=tau)
    ready = np.minimum(np.asarray(n_a), np.asarray(n_b)) >= min_samples
    return np.asarray(np.minimum.accumulate(np.where(ready, p, 1.0), axis=-1), dtype=np.float64)


@dataclass(frozen=True)
class ABTestState:
    """What carries from one look to the next (kept in status): everything else is recomputed from the counts."""

    looks: int = 0
    p_value: float = 1.0
    low: float = -1.0  # the intersected confidence sequence of rate_a - rate_b
    high: float = 1.0
    n_a: float = 0.0
    n_b: float = 0.0
    alpha: float | None = None
    tau: float | None = None

    def wire(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any] | None) -> ABTestState:
        return cls(**{k: v for k, v in (data or {}).items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class ABTestLook:
    verdict: ABVerdict  # "a" or "b": that variant's rate is significantly higher
    rate_a: float | None
    rate_b: float | None
    n_a: float
    n_b: float
    difference: float | None  # rate_a - rate_b
    p_value: float  # always valid: non-increasing across looks
    low: float  # confidence sequence of the difference at 1 - alpha
    high: float
    alpha: float
    method: str
    state: ABTestState
    message: str

    def wire(self) -> dict[str, Any]:
        return asdict(self)


def ab_test_look(state: ABTestState | None, successes_a: float, n_a: float, successes_b: float, n_b: float, *,
                 alpha: float = 0.05, min_samples: int = 100, tau: float = DEFAULT_TAU) -> ABTestLook:
    """One look at cumulative counts since the test began (successes = correct outcomes, n = labelled ones).

    Pass the previous look's ``state`` (None at the first look). Raises ValueError when the counts go backwards or
    alpha or tau changed mid-test: the guarantee only holds for one sequence with fixed settings.
    """
    state = state or ABTestState()
    if min(n_a, n_b) < 0 or not (0 <= successes_a <= n_a and 0 <= successes_b <= n_b):
        raise ValueError("need 0 <= successes <= n for both variants")
    if n_a < state.n_a or n_b < state.n_b:
        raise ValueError(f"cumulative counts went backwards (a {state.n_a:g} -> {n_a:g}, b {state.n_b:g} -> {n_b:g}): "
                         "accumulate window deltas across counter resets")
    if (state.alpha, state.tau) not in ((None, None), (alpha, tau)):
        raise ValueError(f"alpha/tau changed during the test ({state.alpha}/{state.tau} -> {alpha}/{tau}): "
                         "start a new test")
    state = replace(state, looks=state.looks + 1, n_a=float(n_a), n_b=float(n_b), alpha=alpha, tau=tau)
    rate_a = successes_a / n_a if n_a else None
    rate_b = successes_b / n_b if n_b else None
    difference = rate_a - rate_b if rate_a is not None and rate_b is not None else None
    if min(n_a, n_b) < min_samples or difference is None:
        return ABTestLook("continue", rate_a, rate_b, n_a, n_b, difference, state.p_value, state.low, state.high,
                          alpha, METHOD, state, f"collecting samples: a {n_a:g}, b {n_b:g} of {min_samples} each")
    _, p, half = (float(x) for x in msprt_statistics(successes_a, n_a, successes_b, n_b, tau=tau, alpha=alpha))
    state = replace(state, p_value=min(state.p_value, p), low=max(state.low, difference - half),
                    high=min(state.high, difference + half))
    verdict: ABVerdict = "continue"
    if state.p_value <= alpha:
        side = difference if state.low <= 0 <= state.high else (state.low if state.low > 0 else state.high)
        verdict = "a" if side > 0 else "b"
    rates = f"a {rate_a:.4g} ({n_a:g}) vs b {rate_b:.4g} ({n_b:g})"
    bounds = f"difference {difference:+.4g}, {1 - alpha:.0%} confidence sequence [{state.low:.4g}, {state.high:.4g}]"
    message = (f"{verdict} wins: {rates}, {bounds}, always-valid p={state.p_value:.3g}" if verdict != "continue"
               else f"no winner yet: {rates}, {bounds}, always-valid p={state.p_value:.3g}")
    return ABTestLook(verdict, rate_a, rate_b, n_a, n_b, difference, state.p_value, state.low, state.high, alpha,
                      METHOD, state, message)
