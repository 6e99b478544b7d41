"""A/B tests that decide (spec.strategy.abTest.decision): the Deployment planner looks at the feedback labels every
analysis interval (metrics_needed -> observe -> plan_deployment) and reports a winner once the mSPRT says so."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from factories import model, obj
from pydantic import ValidationError
from statuscheck import stored_status

from kultivar.api.deployment import ABTestDecision, ABTestStrategy, DeploymentSpec
from kultivar.config import OperatorConfig
from kultivar.domain.abtest import AB_TEST_CONCLUDED, judge_ab_test
from kultivar.domain.deployment import metrics_needed, plan_deployment
from kultivar.domain.metrics import Snapshot
from kultivar.domain.performance import Feedback
from kultivar.domain.rollout import Pods
from kultivar.domain.serving import DeploymentObserved, ServingPlan
from kultivar.domain.stats import ab_test_look

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
CONFIG = OperatorConfig(store_url="file:///store", store_pvc="")
PODS = {1: Pods(1, 1), 2: Pods(1, 1)}


def _strategy(confidence: float = 0.95, min_samples: int = 100, source: dict | None = None) -> dict[str, Any]:
    return {"type": "ABTest", "canary": {"analysis": {"interval": "30s", **(source or {})}},
            "abTest": {"variants": [{"version": 1, "weight": 50}, {"version": 2, "weight": 50}],
                       "decision": {"metric": "accuracy", "confidence": confidence, "minSamples": min_samples}}}


def _registry() -> dict[str, Any]:
    return model(status={"productionVersion": 1, "versions": [
        {"version": v, "artifact": {"uri": f"file:///store/v{v}/model.skops", "digest": "sha256:" + "b" * 64}}
        for v in (1, 2)]})


def _labels(right: dict[int, float], wrong: dict[int, float]) -> Snapshot:
    """A pod's cumulative feedback counters: per answering version, right and wrong (predicted, actual) pairs."""
    labelled = {(v, "a", "a"): n for v, n in right.items()}
    labelled.update({(v, "a", "b"): n for v, n in wrong.items()})
    return Snapshot(requests={"success": 10.0}, latency={0.01: 10.0, float("inf"): 10.0}, predictions={"a": 10.0},
                    labelled=labelled)


class Timeline:
    """One Deployment reconciled through time, its status stored as the API server would store it."""

    def __init__(self, strategy: dict[str, Any]) -> None:
        self.dep = obj("Deployment", "shop", {"modelRef": {"name": "shop"}, "replicas": 2, "strategy": strategy,
                                              "monitoring": {"enabled": False}}, {})

    def reconcile(self, at: datetime, scrape: dict[int, Snapshot] | None) -> ServingPlan:
        observed = DeploymentObserved(obj=self.dep, model=_registry(), pods=PODS)
        request = metrics_needed(observed, CONFIG, at)
        if request.anything:
            assert scrape is not None, "the planner asked for metrics"
            observed = DeploymentObserved(obj=self.dep, model=_registry(), pods=PODS, metrics=scrape)
        planned = plan_deployment(observed, CONFIG, at)
        self.dep["status"] = stored_status(self.dep, planned.plan, at)  # valid against DeploymentStatus
        return planned

    @property
    def result(self) -> dict[str, Any]:
        return self.dep["status"]["abTest"].get("result") or {}

    def condition(self) -> dict[str, Any]:
        return next(c for c in self.dep["status"]["conditions"] if c["type"] == AB_TEST_CONCLUDED)


def _start(strategy: dict[str, Any]) -> Timeline:
    test = Timeline(strategy)
    test.reconcile(T0, {1: _labels({1: 5}, {}), 2: _labels({}, {2: 5})})  # the baseline: these 10 do not count
    cond = test.condition()
    assert (cond["status"], cond["reason"]) == ("False", "TooFewLabels")
    return test


def test_too_few_labels_is_collecting_never_a_verdict() -> None:
    test = _start(_strategy())
    # 60 labels per variant, v1 all right and v2 all wrong: striking, but minSamples (100) are not there yet.
    test.reconcile(T0 + timedelta(seconds=30), {1: _labels({1: 65}, {}), 2: _labels({}, {2: 65})})
    assert test.result["verdict"] == "CollectingSamples" and test.result.get("winner") is None
    assert test.result["variants"] == [{"version": 1, "labels": 60, "value": 1.0},
                                       {"version": 2, "labels": 60, "value": 0.0}]
    assert test.result["pValue"] == 1.0
    cond = test.condition()
    assert (cond["status"], cond["reason"]) == ("False", "TooFewLabels")
    assert "100 per variant needed" in cond["message"]


def test_a_significant_winner_concludes_the_test_and_says_so_once() -> None:
    test = _start(_strategy())
    # Since the baseline: v1 right 150 of 160, v2 right 100 of 160 (both pods count feedback about both).
    scrape = {1: _labels({1: 80, 2: 50}, {1: 5, 2: 30}), 2: _labels({1: 75, 2: 50}, {1: 5, 2: 35})}
    planned = test.reconcile(T0 + timedelta(seconds=30), scrape)
    result = test.result
    expected = ab_test_look(None, 150, 160, 100, 160, alpha=0.05, min_samples=100)
    assert expected.verdict == "a"
    assert result["verdict"] == "Concluded" and result["winner"] == 1
    assert result["pValue"] == pytest.approx(expected.p_value) and result["pValue"] <= 0.05
    assert result["effectSize"] == pytest.approx(150 / 160 - 100 / 160, abs=1e-6)
    assert result["effectLow"] > 0 and result["effectHigh"] >= result["effectSize"]
    assert result["variants"] == [{"version": 1, "labels": 160, "value": 0.9375},
                                  {"version": 2, "labels": 160, "value": 0.625}]
    assert result["concludedAt"] == "2026-05-01T12:00:30Z" and result["looks"] == 1
    cond = test.condition()
    assert (cond["status"], cond["reason"]) == ("True", "WinnerSignificant")
    assert cond["message"].startswith("v1 wins over v2 on live accuracy") and "effect +0.3125" in cond["message"]
    (event,) = [e for e in planned.plan.events if e.reason == AB_TEST_CONCLUDED]
    assert event.type == "Normal" and event.message == cond["message"]
    progressing = next(c for c in test.dep["status"]["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "ABTestRunning" and "v1 won (ABTestConcluded)" in progressing["message"]
    # The winner is reported, never applied: the spec is the user's.
    assert test.dep["spec"]["strategy"] == _strategy()

    # Final: later looks refresh the numbers (v2 catching up) but neither the verdict nor the Event come again.
    scrape = {1: _labels({1: 80, 2: 250}, {1: 5, 2: 30}), 2: _labels({1: 75, 2: 250}, {1: 5, 2: 35})}
    later = test.reconcile(T0 + timedelta(seconds=60), scrape)
    assert test.result["verdict"] == "Concluded" and test.result["winner"] == 1
    assert test.result["concludedAt"] == "2026-05-01T12:00:30Z"
    assert test.result["variants"][1] == {"version": 2, "labels": 560, "value": round(500 / 560, 6)}
    assert not [e for e in later.plan.events if e.reason == AB_TEST_CONCLUDED]


def test_the_second_variant_can_win_and_the_effect_is_its_gain() -> None:
    test = _start(_strategy())
    test.reconcile(T0 + timedelta(seconds=30), {1: _labels({1: 100, 2: 195}, {1: 100, 2: 10})})
    assert test.result["winner"] == 2
    assert test.result["effectSize"] == pytest.approx(195 / 200 - 95 / 195, abs=1e-6)  # baseline: 5 of each
    assert 0 < test.result["effectLow"] <= test.result["effectSize"] <= test.result["effectHigh"]


def test_equal_variants_have_no_winner_and_the_test_goes_on() -> None:
    test = _start(_strategy())
    for i, n in enumerate((200, 400, 800), start=1):
        right = {1: n * 0.8 + 5, 2: n * 0.8}
        wrong = {1: n * 0.2, 2: n * 0.2 + 5}
        test.reconcile(T0 + timedelta(seconds=30 * i), {1: _labels(right, wrong)})
        assert test.result["verdict"] == "NoWinnerYet" and test.result.get("winner") is None
        assert test.result["looks"] == i and test.result["pValue"] > 0.05
        assert test.result["effectLow"] < 0 < test.result["effectHigh"]
    cond = test.condition()
    assert (cond["status"], cond["reason"]) == ("False", "NoWinnerYet") and "always-valid p=" in cond["message"]


def test_fewer_labels_than_at_the_last_look_skips_the_look() -> None:
    test = _start(_strategy())
    test.reconcile(T0 + timedelta(seconds=30), {1: _labels({1: 165, 2: 160}, {1: 40, 2: 45})})
    assert test.result["looks"] == 1
    # A pod restarted: its counts are gone, the window has fewer labels than at the last look.
    test.reconcile(T0 + timedelta(seconds=60), {1: _labels({1: 1, 2: 1}, {})})
    assert test.result["looks"] == 1 and test.result["message"].startswith("look skipped")
    assert test.result["verdict"] == "NoWinnerYet"


def test_another_confidence_starts_the_test_again() -> None:
    test = _start(_strategy())
    test.reconcile(T0 + timedelta(seconds=30), {1: _labels({1: 165, 2: 160}, {1: 40, 2: 45})})
    assert test.result["confidence"] == 0.95
    test.dep["spec"]["strategy"] = _strategy(confidence=0.99)
    test.reconcile(T0 + timedelta(seconds=40), {1: _labels({1: 165, 2: 160}, {1: 40, 2: 45})})
    assert test.dep["status"]["abTest"]["startedAt"] == "2026-05-01T12:00:40Z" and test.result == {}


def test_regression_feedback_cannot_decide_on_accuracy() -> None:
    test = _start(_strategy())
    errors = {(1, "n"): 200.0, (1, "over"): 10.0, (2, "n"): 200.0, (2, "under"): 10.0}
    test.reconcile(T0 + timedelta(seconds=30), {1: Snapshot(requests={"success": 1.0}, errors=errors)})
    assert test.result["verdict"] == "Unmeasurable"
    cond = test.condition()
    assert (cond["status"], cond["reason"]) == ("Unknown", "MetricMismatch") and "regressor" in cond["message"]


def test_removing_the_decision_drops_the_verdict() -> None:
    test = _start(_strategy())
    test.reconcile(T0 + timedelta(seconds=30), {1: _labels({1: 200, 2: 100}, {1: 5, 2: 105})})
    assert test.condition()["status"] == "True"
    strategy = _strategy()
    del strategy["abTest"]["decision"]
    test.dep["spec"]["strategy"] = strategy
    test.reconcile(T0 + timedelta(seconds=60), {1: _labels({1: 200, 2: 100}, {1: 5, 2: 105})})
    assert "result" not in test.dep["status"]["abTest"]
    cond = test.condition()
    assert (cond["status"], cond["reason"]) == ("Unknown", "NotWatched")


def test_prometheus_reads_the_feedback_over_the_test_window() -> None:
    prom = {"metricsSource": "prometheus", "prometheusUrl": "http://prometheus:9090"}
    dep = obj("Deployment", "shop", {"modelRef": {"name": "shop"}, "strategy": _strategy(source=prom)},
              {"abTest": {"versions": [1, 2], "startedAt": "2026-05-01T11:58:00Z", "metricsSource": "prometheus",
                          "measuredAt": "2026-05-01T11:59:00Z"}})
    request = metrics_needed(DeploymentObserved(obj=dep, model=_registry(), pods=PODS), CONFIG, T0)
    assert request.source == "prometheus" and request.serving == [1, 2]
    assert request.serving_feedback and request.serving_window == 120.0


def test_a_decision_compares_exactly_two_variants() -> None:
    three = [{"version": 1, "weight": 40}, {"version": 2, "weight": 30}, {"version": 3, "weight": 30}]
    with pytest.raises(ValidationError, match="decision compares exactly two variants"):
        ABTestStrategy.model_validate({"variants": three, "decision": {}})
    spec = DeploymentSpec.model_validate({"modelRef": {"name": "m"}, "strategy": _strategy()})
    assert spec.strategy.abTest and spec.strategy.abTest.decision
    assert spec.strategy.abTest.decision.minSamples == 100


def test_prometheus_window_counts_need_no_baseline() -> None:
    prom = {"metricsSource": "prometheus", "prometheusUrl": "http://prometheus:9090"}
    test = Timeline(_strategy(source=prom))
    test.reconcile(T0, None)  # the window opens; Prometheus answers for it later, no baseline is kept
    assert "baseline" not in test.dep["status"]["abTest"]
    # increase() over the test's window: already the labels since it began (fractional from extrapolation).
    test.reconcile(T0 + timedelta(seconds=30), {1: _labels({1: 150.4, 2: 100.2}, {1: 10.1, 2: 60.3})})
    assert test.result["verdict"] == "Concluded" and test.result["winner"] == 1
    assert test.result["variants"] == [{"version": 1, "labels": 160, "value": round(150.4 / 160.5, 6)},
                                       {"version": 2, "labels": 160, "value": round(100.2 / 160.5, 6)}]


def test_equally_good_variants_rarely_conclude_however_often_the_planner_looks() -> None:
    # A/A tests looked at 20 times each, the test's state going through status (JSON) between looks as in the
    # cluster: the share that ever concludes stays at or below 1 - confidence (the mSPRT's guarantee).
    decision = ABTestDecision(confidence=0.95, minSamples=100)
    rng = np.random.default_rng(4)
    experiments, concluded = 300, 0
    for _ in range(experiments):
        result: dict[str, Any] | None = None
        right, total = np.zeros(2), np.zeros(2)
        for _look in range(20):
            total += 50
            right += rng.binomial(50, 0.8, size=2)
            window = Feedback({(v, "a", "a"): float(right[i]) for i, v in enumerate((1, 2))}
                              | {(v, "a", "b"): float(total[i] - right[i]) for i, v in enumerate((1, 2))})
            result = judge_ab_test(decision, result, [1, 2], window, T0).result
            if result["verdict"] == "Concluded":
                concluded += 1
                break
    assert concluded / experiments <= 0.05
