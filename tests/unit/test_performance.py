"""Live performance: feedback counted by real server metrics, read from pod scrapes or Prometheus, the live metric
against scikit-learn, and the window/floor decision."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import pytest
from factories import model as model_object
from factories import obj, run
from pydantic import ValidationError
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, mean_squared_error
from test_promql import NAME, NS, evaluate, promql

from kultivar.api.deployment import DeploymentSpec, Performance
from kultivar.config import OperatorConfig
from kultivar.domain.deployment import metrics_needed, plan_deployment
from kultivar.domain.labels import DEPLOYMENT_LABEL
from kultivar.domain.metrics import Snapshot, parse
from kultivar.domain.performance import (
    UNDERPERFORMING,
    Feedback,
    canary_outcome,
    check_performance,
    live_metric,
    performance_due,
)
from kultivar.domain.rollout import Pods, RolloutInput, decide
from kultivar.domain.serving import DeploymentObserved, PerformanceObserved
from kultivar.serving.feedback import FeedbackParser
from kultivar.serving.monitoring import ServingMetrics
from kultivar.serving.payload import FeatureSpec

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


class Pod:
    """A serving pod of one version; its feedback endpoint counts feedback about any version."""

    def __init__(self, version: int, task: str = "classification") -> None:
        self.task = task
        classes = [0, 1, 2] if task == "classification" else None
        self.metrics = ServingMetrics("m", str(version), "sha256:" + "0" * 64, deployment=(NS, NAME))
        self.metrics.bind_model([FeatureSpec("x", "numeric")], task, classes, None, drift_accounting=False)
        self.parser = FeedbackParser("m", task, classes)

    def feedback(self, version: int, predicted: list[float], actual: list[float]) -> None:
        items = [{"version": version, "prediction": p, "actual": a} for p, a in zip(predicted, actual, strict=True)]
        self.metrics.count_feedback(self.parser.parse(orjson.dumps({"items": items})))

    def scrape(self) -> str:
        return self.metrics.exposition().decode()


def from_pods(texts: list[str]) -> Feedback:
    return Feedback.of(parse(t) for t in texts)


def from_prometheus(before: list[str], after: list[str], versions: list[int]) -> Feedback:
    queries = promql.queries(NS, NAME, versions, 60, feedback=True)
    assert {promql.LABELLED, "errors:n", "errors:over", "errors:under", "errors:squared"} <= set(queries)
    answers = {k: evaluate(q, before, after) for k, q in queries.items() if k not in (promql.REQUESTS,)}
    return Feedback.of(promql.snapshots(answers, versions).values())


def test_classification_live_metric_from_any_pod_equals_sklearn_on_the_labels() -> None:
    rng = np.random.default_rng(1)
    pods = [Pod(1), Pod(1), Pod(2)]
    before = [p.scrape() for p in pods]
    truth: dict[int, tuple[list[int], list[int]]] = {1: ([], []), 2: ([], [])}
    for i, pod in enumerate(pods * 4):
        version = 1 + i % 2  # feedback about either version lands on any pod
        predicted = rng.integers(0, 3, 50).tolist()
        actual = [p if rng.random() < (0.9 if version == 1 else 0.6) else int(rng.integers(0, 3)) for p in predicted]
        pod.feedback(version, predicted, actual)
        truth[version][0].extend(predicted)
        truth[version][1].extend(actual)
    after = [p.scrape() for p in pods]
    window_pods = from_pods(after).since(from_pods(before))
    window_prometheus = from_prometheus(before, after, [1, 2])
    assert window_prometheus == window_pods
    for version, (predicted, actual) in truth.items():
        acc = live_metric("accuracy", version, window_pods)
        assert acc.labels == len(actual) == 300
        assert acc.value == pytest.approx(accuracy_score(actual, predicted))
        f1 = live_metric("f1", version, window_pods)
        assert f1.value == pytest.approx(f1_score(actual, predicted, average="macro", zero_division=0))
    assert live_metric("accuracy", 3, window_pods) == live_metric("accuracy", 3, Feedback())
    assert live_metric("mae", 1, window_pods).problem is not None


def test_regression_live_metric_equals_sklearn() -> None:
    rng = np.random.default_rng(2)
    pods = [Pod(4, "regression"), Pod(5, "regression")]
    predicted, actual = rng.normal(10, 3, 200), rng.normal(10, 3, 200)
    pods[0].feedback(4, predicted[:120].tolist(), actual[:120].tolist())
    pods[1].feedback(4, predicted[120:].tolist(), actual[120:].tolist())
    window = from_pods([p.scrape() for p in pods])
    assert from_prometheus(["", ""], [p.scrape() for p in pods], [4, 5]) == window
    mae, rmse = live_metric("mae", 4, window), live_metric("rmse", 4, window)
    assert mae.labels == rmse.labels == 200
    assert mae.value == pytest.approx(mean_absolute_error(actual, predicted))
    assert rmse.value == pytest.approx(math.sqrt(mean_squared_error(actual, predicted)))
    assert live_metric("accuracy", 4, window).problem == ("v4's feedback is numbers (a regressor): accuracy needs "
                                                          "a classifier; use mae or rmse")


def test_a_restarted_pod_counts_from_zero() -> None:
    first = Feedback({(1, "0", "0"): 50.0}, {})
    assert Feedback({(1, "0", "0"): 7.0}, {}).since(first).labelled == {(1, "0", "0"): 7.0}
    assert Feedback.from_wire(first.wire()) == first
    assert Feedback.from_wire("not json") is None


def _pairs(version: int, right: int, wrong: int) -> Feedback:
    return Feedback({(version, "1", "1"): float(right), (version, "1", "0"): float(wrong)}, {})


ACCURACY = Performance(metric="accuracy", floor=0.8, minLabels=100, window="10m")


def test_window_opens_then_judges_the_stable_version_and_says_by_how_much() -> None:
    opened = check_performance(ACCURACY, None, 3, [3, 4], _pairs(3, 10, 0), T0)
    assert not opened.evaluated and opened.below is None and opened.status["windowStart"]
    assert performance_due(ACCURACY, opened.status, 3, T0 + timedelta(minutes=5)) is False
    early = check_performance(ACCURACY, opened.status, 3, [3], _pairs(3, 500, 500), T0 + timedelta(minutes=5))
    assert not early.evaluated and early.status == opened.status and early.requeue_after == 300
    assert performance_due(ACCURACY, opened.status, 3, T0 + timedelta(minutes=10))

    # 10 right before the window; in it: v3 150 right and 50 wrong (0.75), the canary v4 90 of 100 right.
    cumulative = Feedback({**_pairs(3, 160, 50).labelled, **_pairs(4, 90, 10).labelled}, {})
    closed = check_performance(ACCURACY, opened.status, 3, [3, 4], cumulative, T0 + timedelta(minutes=10))
    assert closed.evaluated and closed.below is True and closed.reason == "BelowFloor"
    assert closed.message == ("live accuracy of v3 is 0.7500 on 200 labelled predictions in the last 10m: 0.0500 "
                              "below the floor 0.8")
    assert closed.events == [("Warning", "PerformanceBelowFloor", closed.message)]
    assert closed.status["versions"] == [{"version": 3, "labels": 200, "value": 0.75},
                                         {"version": 4, "labels": 100, "value": 0.9}]
    assert closed.status["belowFloor"] and closed.status["since"] == closed.status["checkedAt"]

    # The next window: still below (no new event, since kept), then recovered.
    again = check_performance(ACCURACY, closed.status, 3, [3], Feedback({**_pairs(3, 310, 100).labelled}, {}),
                              T0 + timedelta(minutes=20))
    assert again.below is True and not again.events and again.status["since"] == closed.status["since"]
    better = check_performance(ACCURACY, again.status, 3, [3], Feedback({**_pairs(3, 500, 110).labelled}, {}),
                               T0 + timedelta(minutes=30))
    assert better.below is False and better.reason == "AtOrAboveFloor"
    assert better.events[0][:2] == ("Normal", "PerformanceRecovered") and better.status["since"] is None


def test_too_few_labels_and_the_wrong_metric_are_not_judged() -> None:
    opened = check_performance(ACCURACY, None, 3, [3], Feedback(), T0).status
    few = check_performance(ACCURACY, opened, 3, [3], _pairs(3, 0, 40), T0 + timedelta(minutes=10))
    assert few.evaluated and few.below is None and few.reason == "TooFewLabels"
    assert few.message == ("40 labelled predictions of v3 in the last 10m (accuracy 0.0000), 100 needed to judge "
                           "accuracy")
    regression = Feedback({}, {(3, "n"): 500.0, (3, "over"): 10.0, (3, "under"): 10.0, (3, "squared"): 4.0})
    mismatch = check_performance(ACCURACY, opened, 3, [3], regression, T0 + timedelta(minutes=10))
    assert mismatch.below is None and mismatch.reason == "MetricMismatch" and "use mae or rmse" in mismatch.message


def test_error_metrics_are_judged_against_the_floor_from_above() -> None:
    mae = Performance(metric="mae", floor=0.5, minLabels=10, window="1m")
    opened = check_performance(mae, None, 1, [1], Feedback(), T0, windowed=True)
    assert "baseline" not in opened.status
    window = Feedback({}, {(1, "n"): 20.0, (1, "over"): 8.0, (1, "under"): 4.0, (1, "squared"): 9.0})
    closed = check_performance(mae, opened.status, 1, [1], window, T0 + timedelta(minutes=1), windowed=True)
    assert closed.below is True and closed.message.endswith("0.1000 above the floor 0.5")


def test_a_new_stable_version_or_metric_restarts_the_window() -> None:
    opened = check_performance(ACCURACY, None, 3, [3], Feedback(), T0).status
    assert check_performance(ACCURACY, opened, 4, [4], Feedback(), T0 + timedelta(minutes=10)).reason == "Measuring"
    f1 = ACCURACY.model_copy(update={"metric": "f1"})
    assert check_performance(f1, opened, 3, [3], Feedback(), T0 + timedelta(minutes=10)).reason == "Measuring"


def test_the_floor_of_an_accuracy_like_metric_is_a_share() -> None:
    with pytest.raises(ValidationError, match="floor must be between 0 and 1"):
        Performance(metric="f1", floor=1.5)
    assert Performance(metric="rmse", floor=1.5).higher_is_better is False


# --- the Deployment planner -------------------------------------------------------------------------------------

CONFIG = OperatorConfig(store_url="file:///store", store_pvc="")
WATCHED = {"enabled": False, "performance": {"metric": "accuracy", "floor": 0.8, "minLabels": 100, "window": "10m"},
           "retrain": {"cooldown": "1h", "maxRunsPerDay": 2}}


def _registry() -> dict:
    return model_object(status={"productionVersion": 1, "versions": [
        {"version": 1, "trainingRun": "iris-run-1",
         "artifact": {"uri": "file:///store/v1/model.skops", "digest": "sha256:" + "b" * 64}}]})


def _deployment(minutes_ago: int | None, last_retrain: dict | None = None) -> dict:
    status: dict = {"stableVersion": 1}
    if minutes_ago is not None:
        start = (T0 - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
        status["performance"] = {"checkedAt": start, "metric": "accuracy", "floor": 0.8, "window": "10m",
                                 "windowStart": start, "version": 1, "versions": [], "belowFloor": False,
                                 "baseline": _pairs(1, 0, 0).wire()}
    if last_retrain:
        status["lastRetrain"] = last_retrain
    return obj("Deployment", "iris", {"modelRef": {"name": "iris"}, "monitoring": WATCHED}, status)


def _seen(dep: dict, feedback: Feedback | None = None, runs: list | None = None) -> DeploymentObserved:
    runs = [run("iris-run-1")] if runs is None else runs
    perf = None if feedback is None else PerformanceObserved(feedback, runs)
    return DeploymentObserved(obj=dep, model=_registry(), pods={1: Pods(1, 1)}, performance=perf)


def test_feedback_is_read_when_the_window_closes_from_every_pod() -> None:
    assert metrics_needed(_seen(_deployment(None)), CONFIG, T0).performance == [1]
    assert not metrics_needed(_seen(_deployment(5)), CONFIG, T0).anything
    assert metrics_needed(_seen(_deployment(10)), CONFIG, T0).performance == [1]


def test_below_the_floor_sets_the_condition_and_starts_a_performance_run() -> None:
    plan = plan_deployment(_seen(_deployment(11), _pairs(1, 120, 80)), CONFIG, T0).plan
    cond = next(c for c in plan.conditions if c.type == UNDERPERFORMING)
    assert (cond.status, cond.reason) == (True, "BelowFloor") and "0.2000 below the floor 0.8" in cond.message
    assert [r["metadata"]["name"] for r in plan.create] == ["iris-performance-1"]
    assert plan.create[0]["spec"]["trigger"] == "performance"
    assert plan.create[0]["metadata"]["labels"][DEPLOYMENT_LABEL] == "iris"
    assert plan.status["lastRetrain"]["trigger"] == "performance"
    assert plan.status["performance"]["versions"] == [{"version": 1, "labels": 200, "value": 0.6}]
    assert {e.reason for e in plan.events} >= {"PerformanceBelowFloor", "RetrainingStarted"}


def test_performance_runs_share_the_cooldown_and_daily_cap_with_drift() -> None:
    recent = (T0 - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    cooling = {"trainingRun": "iris-drift-1", "time": recent, "trigger": "drift", "recent": [recent], "count": 1}
    plan = plan_deployment(_seen(_deployment(11, cooling), _pairs(1, 120, 80)), CONFIG, T0).plan
    assert plan.create == [] and "RetrainCooldown" in {e.reason for e in plan.events}
    day = [(T0 - timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%SZ") for h in (3, 5)]
    spent = {"trainingRun": "iris-drift-2", "time": day[0], "recent": day, "count": 2}
    plan = plan_deployment(_seen(_deployment(11, spent), _pairs(1, 120, 80)), CONFIG, T0).plan
    assert plan.create == [] and "RetrainBudgetExhausted" in {e.reason for e in plan.events}
    busy = run("iris-drift-2")
    busy["metadata"]["labels"] = {DEPLOYMENT_LABEL: "iris"}
    plan = plan_deployment(_seen(_deployment(11), _pairs(1, 120, 80), [run("iris-run-1"), busy]), CONFIG, T0).plan
    assert plan.create == [] and "RetrainInProgress" in {e.reason for e in plan.events}


def test_too_few_labels_is_unknown_and_an_open_window_keeps_the_verdict() -> None:
    plan = plan_deployment(_seen(_deployment(11), _pairs(1, 10, 30)), CONFIG, T0).plan
    cond = next(c for c in plan.conditions if c.type == UNDERPERFORMING)
    assert (cond.status, cond.reason) == (None, "TooFewLabels") and plan.create == []
    dep = _deployment(4)
    dep["status"]["conditions"] = [{"type": UNDERPERFORMING, "status": "True", "reason": "BelowFloor",
                                    "message": "live accuracy ..."}]
    plan = plan_deployment(_seen(dep, _pairs(1, 0, 0)), CONFIG, T0).plan
    cond = next(c for c in plan.conditions if c.type == UNDERPERFORMING)
    assert (cond.status, cond.reason, cond.message) == (True, "BelowFloor", "live accuracy ...")
    assert plan_deployment(_seen(_deployment(4)), CONFIG, T0).plan.requeue_after == 360


# --- canaries judged on outcomes ----------------------------------------------------------------------------------



def _canary_spec(metric: str = "accuracy", floor: float = 0.5) -> DeploymentSpec:
    return DeploymentSpec.model_validate({
        "modelRef": {"name": "m"}, "replicas": 2,
        "strategy": {"type": "Canary", "canary": {"steps": [{"weight": 10, "pause": "1m"}, {"weight": 50}],
                                                  "analysis": {"minRequests": 20}}},
        "monitoring": {"performance": {"metric": metric, "floor": floor, "minLabels": 100}}})


def _traffic(labelled: dict | None = None, errors: dict | None = None) -> Snapshot:
    return Snapshot(requests={"success": 100.0}, latency={0.01: 100.0, float("inf"): 100.0},
                    predictions={"a": 50.0, "b": 50.0}, labelled=labelled or {}, errors=errors or {})


def _step(metrics: dict[int, Snapshot], s: DeploymentSpec | None = None, baseline: str | None = None):
    rollout = {"version": 2, "step": 0, "stepStartedAt": "2026-12-04T12:00:00Z", "state": "Stepping",
               "baseline": baseline}
    return decide(RolloutInput(spec=s or _canary_spec(), target=2, stable=1, rollout=rollout, rolled_back=[],
                               pods={1: Pods(2, 2), 2: Pods(1, 1)}, metrics=metrics, now=T0 + timedelta(minutes=2)))


def test_a_canary_significantly_worse_on_outcomes_is_rolled_back() -> None:
    # Feedback about either version, counted by pods of both: stable 180/200 right, canary 120/200 right.
    stable_pod = _traffic({(1, "a", "a"): 90.0, (1, "a", "b"): 10.0, (2, "a", "a"): 60.0, (2, "b", "a"): 40.0})
    canary_pod = _traffic({(1, "b", "b"): 90.0, (1, "b", "a"): 10.0, (2, "b", "b"): 60.0, (2, "a", "b"): 40.0})
    d = _step({1: stable_pod, 2: canary_pod})
    assert d.rolled_back == [2] and d.analysis["failedCheck"] == "LiveMetric"
    assert "accuracy canary 0.6 (200 labels) vs stable 0.9 (200)" in d.analysis["message"]
    assert "significantly worse at alpha 0.05" in d.analysis["message"]


def test_too_few_labels_is_inconclusive_never_a_pass() -> None:
    few = _traffic({(1, "a", "a"): 150.0, (2, "a", "a"): 30.0})
    d = _step({1: few, 2: _traffic()})
    assert d.analysis["verdict"] == "Inconclusive" and d.rollout["step"] == 0 and d.rolled_back == []
    assert "too few labelled predictions to judge accuracy: canary 30, stable 150" in d.analysis["message"]


def test_outcomes_count_from_the_step_baseline_and_a_not_worse_canary_passes() -> None:
    # An earlier step's bad labels about the canary are in the baseline: not this step's.
    before = {1: Snapshot(labelled={(2, "a", "b"): 500.0}), 2: Snapshot()}
    baseline = json.dumps({str(v): s.wire(features=False) for v, s in before.items()})
    now = {1: _traffic({(2, "a", "b"): 500.0, (1, "a", "a"): 150.0, (1, "a", "b"): 50.0}),
           2: _traffic({(2, "a", "a"): 160.0, (2, "b", "a"): 40.0})}
    d = _step(now, baseline=baseline)
    assert d.analysis["verdict"] == "Pass" and d.rollout["step"] == 1
    assert "not significantly worse" in d.analysis["message"]


def test_regression_canaries_are_judged_on_absolute_errors() -> None:
    s = _canary_spec("rmse", 10.0)
    rng = np.random.default_rng(5)
    stable_err, canary_err = rng.normal(0, 1, 300), rng.normal(1.5, 1, 300)

    def sums(version: int, e: np.ndarray) -> dict:
        return {(version, "n"): float(e.size), (version, "over"): float(e[e > 0].sum()),
                (version, "under"): float(-e[e < 0].sum()), (version, "squared"): float((e * e).sum())}

    d = _step({1: _traffic(errors=sums(1, stable_err)), 2: _traffic(errors=sums(2, canary_err))}, s)
    assert d.analysis["failedCheck"] == "LiveMetric" and "mae canary" in d.analysis["message"]
    from scipy import stats as sps

    window = Feedback({}, {**sums(1, stable_err), **sums(2, canary_err)})
    verdict = canary_outcome(s.monitoring.performance, window, 2, 1)  # type: ignore[arg-type]
    reference = sps.ttest_ind(np.abs(canary_err), np.abs(stable_err), equal_var=False, alternative="greater")
    assert verdict.result is not None and verdict.result.p_value == pytest.approx(reference.pvalue, rel=1e-6)
