"""Live performance of the served versions from feedback labels, and when it is below its floor. Pure.

The inference servers count ground truth sent to ``POST /v2/models/{name}/feedback`` per version that answered
(kultivar.serving.feedback): (predicted, actual) pairs for classifiers, error sums for regressors. Any pod counts
feedback about any version, so a version's counts are the sum over every pod of the Deployment. Over each
``spec.monitoring.performance.window`` the operator computes the live metric per served version: with
metricsSource pods from the difference of two scrapes (the first kept in status.performance.baseline, a counter
that went down read as a restarted server, as Prometheus' ``increase()`` reads it), with metricsSource prometheus
from ``increase()`` over the window (exact across pods that came and went). The stable version is judged
against the floor once it has ``minLabels`` labelled predictions in the window; fewer is reported, not judged.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kultivar.api.common import parse_duration
from kultivar.api.deployment import Performance, Retrain
from kultivar.domain.conditions import Cond, now_rfc3339, parse_time
from kultivar.domain.drift import retrain_gate, start_retraining
from kultivar.domain.metrics import Snapshot
from kultivar.domain.plan import Event
from kultivar.domain.reasons import Reason
from kultivar.domain.stats.canary import CanaryVerdict, canary_error_verdict, canary_proportion_verdict
from kultivar.domain.stats.live import RegressionSums, classification_performance, delta, regression_performance

UNDERPERFORMING = "Underperforming"
CANARY_ALPHA = 0.05  # significance of "the canary is worse than stable on outcomes"

Labelled = dict[tuple[int, str, str], float]  # (version, predicted, actual) -> count
Errors = dict[tuple[int, str], float]  # (version, "n" | "over" | "under" | "squared") -> sum


@dataclass(frozen=True)
class Feedback:
    """Feedback counts of a Deployment (cumulative, or a window's), per answering version."""

    labelled: Labelled = field(default_factory=dict)
    errors: Errors = field(default_factory=dict)

    @classmethod
    def of(cls, snapshots: Iterable[Snapshot]) -> Feedback:
        """The sum over every pod's (or version's) snapshot: feedback about a version may be counted anywhere."""
        labelled: Labelled = {}
        errors: Errors = {}
        for snap in snapshots:
            for pair, count in snap.labelled.items():
                labelled[pair] = labelled.get(pair, 0.0) + count
            for key, value in snap.errors.items():
                errors[key] = errors.get(key, 0.0) + value
        return cls(labelled, errors)

    def since(self, start: Feedback | None) -> Feedback:
        """This cumulative reading minus an earlier one, per series (a series that fell was reset)."""
        if start is None:
            return self
        return Feedback(delta(self.labelled, start.labelled), delta(self.errors, start.errors))

    def wire(self) -> str:
        return json.dumps({"labelled": sorted([v, p, a, c] for (v, p, a), c in self.labelled.items()),
                           "errors": sorted([v, k, x] for (v, k), x in self.errors.items())})

    @classmethod
    def from_wire(cls, text: str | None) -> Feedback | None:
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls({(int(v), str(p), str(a)): float(c) for v, p, a, c in data.get("labelled") or []},
                       {(int(v), str(k)): float(x) for v, k, x in data.get("errors") or []})
        except (ValueError, TypeError, AttributeError):
            return None  # a baseline this code cannot read: the window starts again


@dataclass(frozen=True)
class LiveMetric:
    """One version's live metric over a window and its sample size; ``problem`` when it cannot be computed."""

    version: int
    value: float | None
    labels: int
    problem: str | None = None

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": self.version, "labels": self.labels}
        if self.value is not None:
            out["value"] = round(self.value, 6)
        return out


def live_metric(metric: str, version: int, window: Feedback) -> LiveMetric:
    """The live ``metric`` of ``version`` from a window's feedback counts."""
    pairs: dict[tuple[Hashable, Hashable], float] = {
        (p, a): c for (v, p, a), c in window.labelled.items() if v == version and c > 0}
    n = window.errors.get((version, "n"), 0.0)
    if metric in ("mae", "rmse"):
        if n <= 0:
            problem = (f"v{version}'s feedback is classes (predicted, actual), not numbers: {metric} needs a "
                       "regressor; use accuracy, precision, recall or f1") if pairs else None
            return LiveMetric(version, None, 0, problem)
        over, under = window.errors.get((version, "over"), 0.0), window.errors.get((version, "under"), 0.0)
        errors = regression_performance(RegressionSums(n, over + under, window.errors.get((version, "squared"), 0.0),
                                                       over - under))
        return LiveMetric(version, errors.value(metric), round(n))
    if not pairs:
        problem = (f"v{version}'s feedback is numbers (a regressor): {metric} needs a classifier; use mae or "
                   "rmse") if n > 0 else None
        return LiveMetric(version, None, 0, problem)
    perf = classification_performance(pairs)
    return LiveMetric(version, perf.value(metric), round(perf.n))


def gap(performance: Performance, value: float) -> float:
    """How far ``value`` is on the wrong side of the floor (positive: below it), in the metric's units."""
    return performance.floor - value if performance.higher_is_better else value - performance.floor


@dataclass
class PerformanceDecision:
    status: dict[str, Any]  # the new status.performance
    evaluated: bool  # a window closed and was judged now
    below: bool | None  # the Underperforming condition: None is Unknown (not judged)
    reason: Reason | None  # None: the window is open, the condition stays as it was
    message: str
    requeue_after: float
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)


def performance_since(performance: Performance | None, previous: Mapping[str, Any] | None,
                      version: int | None) -> datetime | None:
    """Where the open performance window began (None: a new window starts now: first check, another stable
    version, another metric or window length)."""
    prev = previous or {}
    if performance is None or version is None or prev.get("version") != version \
            or prev.get("metric") != performance.metric or prev.get("window") != performance.window:
        return None
    return parse_time(prev.get("windowStart"))


def performance_due(performance: Performance | None, previous: Mapping[str, Any] | None, version: int | None,
                    now: datetime) -> bool:
    """Whether this reconcile must read the feedback counters: a window to open, or one that has closed."""
    if performance is None or version is None:
        return False
    started = performance_since(performance, previous, version)
    return started is None or now >= started + parse_duration(performance.window)


def performance_due_in(performance: Performance | None, previous: Mapping[str, Any] | None, version: int | None,
                       now: datetime) -> float | None:
    """Seconds until the open window closes (None: none is open)."""
    started = performance_since(performance, previous, version)
    if performance is None or started is None:
        return None
    return max(0.0, (started + parse_duration(performance.window) - now).total_seconds())


def check_performance(performance: Performance, previous: Mapping[str, Any] | None, stable: int,
                      versions: Iterable[int], counts: Feedback, now: datetime, windowed: bool = False
                      ) -> PerformanceDecision:
    """Advance the performance window; when it has closed, compute the live metric of every served version and
    judge the stable one against the floor.

    counts: cumulative (a scrape: the window is their difference from the baseline kept at its start) or, when
    windowed, already the window's counts (Prometheus increase() since performance_since(); no baseline kept).
    """
    window = parse_duration(performance.window)
    prev = dict(previous or {})
    stamp = now_rfc3339(now)
    started = performance_since(performance, prev, stable)
    # Status is merge-patched: None removes a baseline left from before (e.g. the source was pods).
    head = {"checkedAt": stamp, "metric": performance.metric, "floor": performance.floor,
            "window": performance.window, "version": stable, "windowStart": stamp,
            **({} if windowed else {"baseline": counts.wire()})}
    if started is None:
        status = {**head, "versions": [], "belowFloor": False, "since": None}
        return PerformanceDecision(status, False, None, Reason.MEASURING,
                                   f"performance window of {performance.window} started for v{stable}; waiting for "
                                   "feedback labels", window.total_seconds())
    remaining = (started + window - now).total_seconds()
    if remaining > 0:
        below = bool(prev.get("belowFloor")) if prev.get("versions") else None
        return PerformanceDecision(prev, False, below, None, "performance window open", remaining)

    window_counts = counts if windowed else counts.since(Feedback.from_wire(prev.get("baseline")))
    served = sorted({stable, *versions})
    metrics = {v: live_metric(performance.metric, v, window_counts) for v in served}
    judged = metrics[stable]
    status = {**head, "versions": [m.wire() for m in metrics.values()]}
    was_below = bool(prev.get("belowFloor"))
    metric = performance.metric
    if judged.problem is not None:
        status.update(belowFloor=False, since=None)
        return PerformanceDecision(status, True, None, Reason.METRIC_MISMATCH, judged.problem,
                                   window.total_seconds())
    if judged.value is None or judged.labels < performance.minLabels:
        status.update(belowFloor=False, since=None)
        shown = "" if judged.value is None else f" ({metric} {judged.value:.4f})"
        return PerformanceDecision(status, True, None, Reason.TOO_FEW_LABELS,
                                   f"{judged.labels} labelled predictions of v{stable} in the last "
                                   f"{performance.window}{shown}, {performance.minLabels} needed to judge {metric}",
                                   window.total_seconds())
    distance = gap(performance, judged.value)
    below = distance > 0
    side = "below" if performance.higher_is_better else "above"
    numbers = (f"live {metric} of v{stable} is {judged.value:.4f} on {judged.labels} labelled predictions in the "
               f"last {performance.window}")
    if below:
        message = f"{numbers}: {distance:.4f} {side} the floor {performance.floor:g}"
        events = [] if was_below else [("Warning", "PerformanceBelowFloor", message)]
        status.update(belowFloor=True, since=(prev.get("since") or stamp) if was_below else stamp)
        return PerformanceDecision(status, True, True, Reason.BELOW_FLOOR, message, window.total_seconds(), events)
    message = f"{numbers}, within the floor {performance.floor:g} by {-distance:.4f}"
    events = [("Normal", "PerformanceRecovered", message)] if was_below else []
    status.update(belowFloor=False, since=None)
    return PerformanceDecision(status, True, False, Reason.AT_OR_ABOVE_FLOOR, message, window.total_seconds(),
                               events)


@dataclass
class PerformancePlan:
    """What live performance monitoring does in one reconcile of a Deployment."""

    status: dict[str, Any]  # status fields: performance, and lastRetrain when a run starts
    condition: Cond | None  # the Underperforming condition (None: leave it as it is)
    events: list[Event]
    requeue_after: float
    create_run: dict[str, Any] | None = None
    refresh_dataset: str | None = None


def plan_performance(deployment: dict[str, Any], performance: Performance, retrain: Retrain, stable: int,
                     versions: Iterable[int], counts: Feedback, source_run: dict[str, Any] | None,
                     run_active: bool, owner_ref: dict[str, Any], now: datetime, windowed: bool = False
                     ) -> PerformancePlan:
    """Advance the performance window and, when the stable version is judged below its floor, start one
    retraining run (trigger performance) within the cooldown and daily cap it shares with drift.

    run_active: a retraining run of this Deployment is still going (or another finding starts one now)."""
    status = deployment.get("status") or {}
    decision = check_performance(performance, status.get("performance"), stable, versions, counts, now, windowed)
    condition = None if decision.reason is None else Cond(UNDERPERFORMING, decision.below, decision.reason,
                                                         decision.message)
    out = PerformancePlan({"performance": decision.status}, condition, [Event(*e) for e in decision.events],
                          decision.requeue_after)
    if not (decision.evaluated and decision.below):
        return out
    last = status.get("lastRetrain") or {}
    verdict = retrain_gate(retrain, last, run_active, now, "performance", decision.message)
    if not verdict.retrain:
        out.events.append(Event("Normal", verdict.reason, verdict.message))
        return out
    if source_run is None:
        out.events.append(Event("Warning", "RetrainSourceMissing", f"{decision.message}, but the TrainingRun behind "
                                f"v{stable} no longer exists; create a TrainingRun by hand"))
        return out
    started = start_retraining(deployment, source_run, last, owner_ref, now, "performance", decision.message)
    out.status["lastRetrain"] = started.last_retrain
    out.events.append(started.event)
    out.create_run, out.refresh_dataset = started.run, started.refresh_dataset
    return out


def _sums(window: Feedback, version: int) -> RegressionSums:
    over, under = window.errors.get((version, "over"), 0.0), window.errors.get((version, "under"), 0.0)
    return RegressionSums(window.errors.get((version, "n"), 0.0), over + under,
                          window.errors.get((version, "squared"), 0.0), over - under)


def _correct(window: Feedback, version: int) -> tuple[float, float]:
    pairs = [(p, a, c) for (v, p, a), c in window.labelled.items() if v == version]
    return sum(c for p, a, c in pairs if p == a), sum(c for _, _, c in pairs)


def canary_outcome(performance: Performance, window: Feedback, canary: int, stable: int,
                   alpha: float = CANARY_ALPHA) -> CanaryVerdict:
    """Whether the canary answered significantly worse than stable in this step, from the feedback on either's
    answers: classifiers by the one-sided two-proportion z-test on their shares of correct predictions (whatever
    performance.metric, since precision, recall and F1 are no proportions), regressors by Welch's one-sided t-test
    on their absolute errors (MAE). Fewer than performance.minLabels labelled predictions on either side is
    inconclusive, never a pass."""
    if performance.higher_is_better:
        (c_ok, c_n), (s_ok, s_n) = _correct(window, canary), _correct(window, stable)
        return canary_proportion_verdict(c_ok, c_n, s_ok, s_n, metric="accuracy", alpha=alpha,
                                         min_samples=performance.minLabels)
    return canary_error_verdict(_sums(window, canary), _sums(window, stable), alpha=alpha,
                                min_samples=performance.minLabels)
