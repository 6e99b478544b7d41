"""The rollout state machine: every transition, and the same decision after a restart in every state."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from kultivar.api.deployment import DeploymentSpec
from kultivar.domain.metrics import Snapshot
from kultivar.domain.rollout import Pods, RolloutInput, canary_replicas, decide, metrics_since

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
STEPS = [{"weight": 10, "pause": "1m"}, {"weight": 50, "pause": "1m"}]


def spec(**strategy) -> DeploymentSpec:
    base = {"type": "Canary", "canary": {"steps": STEPS, "analysis": {"minRequests": 20, "maxErrorRate": 0.05,
                                                                      "maxLatencyP95Seconds": 0.5}}}
    return DeploymentSpec.model_validate({"modelRef": {"name": "m"}, "replicas": 2,
                                          "strategy": {**base, **strategy}})


def inp(target=2, stable=1, rollout=None, pods=None, metrics=None, now=T0, rolled_back=(), s=None):
    return RolloutInput(spec=s or spec(), target=target, stable=stable, rollout=rollout,
                        rolled_back=list(rolled_back), pods=pods or {}, metrics=metrics, now=now)


def traffic(requests=100, errors=0, fast=True, classes=None) -> Snapshot:
    bucket = 0.01 if fast else 2.5
    return Snapshot(requests={"success": requests - errors, "error": errors},
                    latency={bucket: float(requests), float("inf"): float(requests)},
                    predictions=classes or {"a": requests / 2, "b": requests / 2})


def test_first_version_deploys_without_a_canary() -> None:
    d = decide(inp(target=1, stable=None))
    assert d.replicas == {1: 2} and d.stable is None and d.progressing[1] == "Deploying"
    d = decide(inp(target=1, stable=None, pods={1: Pods(2, 2)}))
    assert d.stable == 1 and d.rollout is None


def test_steady_state() -> None:
    d = decide(inp(target=1, stable=1, pods={1: Pods(2, 2)}))
    assert d.replicas == {1: 2} and d.weights == {1: 100} and d.canary is None


def test_new_version_starts_a_canary_without_scaling_stable_down() -> None:
    d = decide(inp(pods={1: Pods(2, 2)}))
    assert d.rollout["state"] == "Starting" and d.rollout["version"] == 2
    assert d.replicas == {1: 2, 2: canary_replicas(2, 10, "replicas")}
    assert d.weights == {1: 100, 2: 0}  # no traffic promised before the canary is Ready
    assert any(e.reason == "CanaryStarted" for e in d.events)


def test_ready_canary_enters_its_first_step() -> None:
    start = decide(inp(pods={1: Pods(2, 2)})).rollout
    d = decide(inp(rollout=start, pods={1: Pods(2, 2), 2: Pods(1, 1)}, metrics={1: traffic(), 2: Snapshot()}))
    assert d.rollout["state"] == "Stepping" and d.rollout["step"] == 0 and d.rollout["baseline"]
    assert d.weights == {1: 90, 2: 10} and d.requeue_after == 60


def stepping(step=0, started=T0, baseline=None):
    return {"version": 2, "step": step, "stepStartedAt": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "state": "Stepping", "baseline": baseline}


PODS = {1: Pods(2, 2), 2: Pods(1, 1)}


def test_step_waits_for_its_pause() -> None:
    d = decide(inp(rollout=stepping(), pods=PODS, now=T0 + timedelta(seconds=20)))
    assert d.rollout["step"] == 0 and not d.needs_metrics and 39 <= d.requeue_after <= 40


def test_due_step_asks_for_metrics_then_advances_on_pass() -> None:
    later = T0 + timedelta(minutes=2)
    assert decide(inp(rollout=stepping(), pods=PODS, now=later)).needs_metrics
    d = decide(inp(rollout=stepping(), pods=PODS, now=later, metrics={1: traffic(), 2: traffic()}))
    assert d.rollout["step"] == 1 and d.weights == {1: 50, 2: 50} and d.analysis["verdict"] == "Pass"
    assert d.replicas[2] == canary_replicas(2, 50, "replicas")


def test_too_little_traffic_is_inconclusive_not_promoted() -> None:
    d = decide(inp(rollout=stepping(), pods=PODS, now=T0 + timedelta(minutes=2),
                   metrics={1: traffic(), 2: traffic(requests=5)}))
    assert d.rollout["step"] == 0 and d.rollout["state"] == "Stepping"
    assert d.analysis["verdict"] == "Inconclusive" and d.progressing[1] == "CanaryPaused"


@pytest.mark.parametrize(("canary", "check"), [
    (traffic(errors=20), "ErrorRate"),
    (traffic(fast=False), "LatencyP95"),
    (traffic(classes={"a": 100.0, "b": 0.0}), "PredictionShift"),
])
def test_failed_check_rolls_back_to_stable(canary, check) -> None:
    d = decide(inp(rollout=stepping(), pods=PODS, now=T0 + timedelta(minutes=2), metrics={1: traffic(), 2: canary}))
    assert d.replicas == {1: 2} and d.stable == 1 and d.rollout is None
    assert d.rolled_back == [2] and d.degraded[0] is True and check in d.degraded[2]
    assert d.analysis["failedCheck"] == check
    # and it is not retried
    again = decide(inp(rolled_back=[2], pods={1: Pods(2, 2)}))
    assert again.replicas == {1: 2} and again.rollout is None and again.degraded[1] == "RolledBack"
    # the Degraded message keeps naming the failed check on later reconciles
    again = decide(RolloutInput(spec=spec(), target=2, stable=1, rollout=None, rolled_back=[2],
                                pods={1: Pods(2, 2)}, metrics=None, now=T0, last_analysis=d.analysis))
    assert check in again.degraded[2]


def test_counts_are_per_step_from_the_baseline() -> None:
    base = json.dumps({"1": traffic(requests=1000).wire(), "2": traffic(requests=1000, errors=500).wire()})
    # 1000 earlier requests with 50 % errors are in the baseline; this step's 100 are clean
    now = {1: traffic(requests=1100), 2: Snapshot(requests={"success": 600.0, "error": 500.0},
                                                    latency={0.01: 1100.0, float("inf"): 1100.0},
                                                    predictions={"a": 550.0, "b": 550.0})}
    d = decide(inp(rollout=stepping(baseline=base), pods=PODS, now=T0 + timedelta(minutes=2), metrics=now))
    assert d.analysis["verdict"] == "Pass" and d.analysis["requests"] == 100


def test_last_step_promotes_then_removes_the_old_stable_once_ready() -> None:
    d = decide(inp(rollout=stepping(step=1), pods=PODS, now=T0 + timedelta(minutes=2),
                   metrics={1: traffic(), 2: traffic()}))
    assert d.rollout["state"] == "Promoting" and d.replicas == {1: 2, 2: 2}
    promoting = d.rollout
    d = decide(inp(rollout=promoting, pods={1: Pods(2, 2), 2: Pods(2, 1)}))
    assert d.replicas == {1: 2, 2: 2} and d.stable == 1  # canary not fully ready: stable stays
    d = decide(inp(rollout=promoting, pods={1: Pods(2, 2), 2: Pods(2, 2)}))
    assert d.replicas == {2: 2} and d.stable == 2 and d.rollout is None
    assert any(e.reason == "Promoted" for e in d.events)


def test_restart_in_every_state_gives_the_same_decision() -> None:
    """Everything the machine needs is in status, so a fresh operator decides exactly as the old one."""
    cases = [
        inp(pods={1: Pods(2, 2)}),
        inp(rollout=decide(inp(pods={1: Pods(2, 2)})).rollout, pods={1: Pods(2, 2), 2: Pods(1, 0)}),
        inp(rollout=stepping(), pods=PODS, now=T0 + timedelta(seconds=30)),
        inp(rollout=stepping(), pods=PODS, now=T0 + timedelta(minutes=2), metrics={1: traffic(), 2: traffic()}),
        inp(rollout={**stepping(), "state": "Promoting"}, pods={1: Pods(2, 2), 2: Pods(2, 1)}),
        inp(rolled_back=[2], pods={1: Pods(2, 2)}),
    ]
    for case in cases:
        first, second = decide(case), decide(case)
        assert (first.replicas, first.weights, first.rollout, first.stable) == \
            (second.replicas, second.weights, second.rollout, second.stable)


def test_newer_version_replaces_a_running_canary_and_revert_aborts_it() -> None:
    d = decide(inp(target=3, rollout=stepping(), pods=PODS))
    assert d.rollout["version"] == 3 and d.rollout["state"] == "Starting" and 2 not in d.replicas
    d = decide(inp(target=1, rollout=stepping(), pods=PODS))
    assert d.replicas == {1: 2} and d.rollout is None and d.events[0].reason == "CanaryAborted"


def test_immediate_strategy() -> None:
    s = spec(type="Immediate")
    d = decide(inp(s=s, pods={1: Pods(2, 2)}))
    assert d.replicas == {1: 2, 2: 2} and d.stable == 1
    d = decide(inp(s=s, pods={1: Pods(2, 2), 2: Pods(2, 2)}))
    assert d.replicas == {2: 2} and d.stable == 2


def test_ab_test_splits_replicas_by_weight() -> None:
    s = spec(type="ABTest", abTest={"variants": [{"version": 1, "weight": 75}, {"version": 2, "weight": 25}]})
    s.replicas = 4
    d = decide(inp(s=s, pods={}))
    assert d.replicas == {1: 3, 2: 1} and d.weights == {1: 75, 2: 25} and d.stable == 1
    assert d.progressing[1] == "Deploying"


# --- metricsSource prometheus: metrics are already the window's counts ---------------------------------------

PROM = {"metricsSource": "prometheus", "prometheusUrl": "http://prometheus:9090", "minRequests": 20,
        "maxErrorRate": 0.05, "maxLatencyP95Seconds": 0.5}


def prom_spec(**strategy) -> DeploymentSpec:
    return spec(canary={"steps": STEPS, "analysis": PROM}, **strategy)


def test_prometheus_canary_keeps_no_baseline_and_judges_the_window_as_given() -> None:
    s = prom_spec()
    start = decide(inp(s=s, pods={1: Pods(2, 2)})).rollout
    d = decide(inp(s=s, rollout=start, pods={1: Pods(2, 2), 2: Pods(1, 1)}))
    assert d.rollout["state"] == "Stepping" and not d.needs_metrics and not d.rollout.get("baseline")
    assert metrics_since(s, {"rollout": d.rollout}) == T0
    # A stale baseline (say, from before the source changed) is not subtracted: these 100 are the step's.
    base = json.dumps({"2": traffic(requests=1000).wire()})
    d = decide(inp(s=s, rollout=stepping(baseline=base), pods=PODS, now=T0 + timedelta(minutes=2),
                   metrics={1: traffic(), 2: traffic()}))
    assert d.analysis["verdict"] == "Pass" and d.analysis["requests"] == 100
    assert d.analysis["metricsSource"] == "prometheus" and d.rollout["step"] == 1 and not d.rollout["baseline"]
    assert d.measured[2] == {"requests": 100, "errorRate": 0.0, "latencyP95Seconds": 0.0095}


def test_unavailable_metrics_pause_the_canary_and_say_why() -> None:
    d = decide(RolloutInput(spec=prom_spec(), target=2, stable=1, rollout=stepping(), rolled_back=[], pods=PODS,
                            metrics=None, now=T0 + timedelta(minutes=2), metrics_error="connection refused"))
    assert not d.needs_metrics and d.rollout["step"] == 0 and d.requeue_after == 30
    assert d.analysis["verdict"] == "Inconclusive" and "connection refused" in d.analysis["message"]
    assert d.progressing[1] == "CanaryPaused" and "prometheus" in d.progressing[2]


def test_pods_analysis_reports_both_versions_numbers() -> None:
    d = decide(inp(rollout=stepping(), pods=PODS, now=T0 + timedelta(minutes=2),
                   metrics={1: traffic(requests=200), 2: traffic(requests=50, errors=1)}))
    assert d.measured == {1: {"requests": 200, "errorRate": 0.0, "latencyP95Seconds": 0.0095},
                          2: {"requests": 50, "errorRate": 0.02, "latencyP95Seconds": 0.0095}}
    assert d.analysis["metricsSource"] == "pods"


# --- A/B numbers ------------------------------------------------------------------------------------------------

AB = {"variants": [{"version": 1, "weight": 70}, {"version": 2, "weight": 30}]}
AB_PODS = {1: Pods(1, 1), 2: Pods(1, 1)}


def ab_inp(s, ab_test=None, metrics=None, now=T0, error=None):
    return RolloutInput(spec=s, target=1, stable=1, rollout=None, rolled_back=[], pods=AB_PODS, metrics=metrics,
                        now=now, ab_test=ab_test, metrics_error=error)


def test_ab_test_counts_each_version_from_its_start() -> None:
    s = spec(type="ABTest", abTest=AB, canary={"analysis": {"interval": "30s"}})
    first = decide(ab_inp(s))
    assert first.needs_metrics and first.ab_test["versions"] == [1, 2]  # a baseline to count from
    before = {1: traffic(requests=500), 2: Snapshot()}
    d = decide(ab_inp(s, metrics=before))
    ab = d.ab_test
    assert not d.needs_metrics and ab["startedAt"] == "2026-05-01T12:00:00Z" and ab["baseline"] and not d.measured
    assert metrics_since(s, {"abTest": ab}) == T0
    # not due yet: no numbers, come back when they are
    d = decide(ab_inp(s, ab_test=ab, now=T0 + timedelta(seconds=10)))
    assert not d.needs_metrics and d.requeue_after == 20 and not d.measured
    # due: scrape, then numbers since the start (v1's 500 earlier requests are not counted)
    assert decide(ab_inp(s, ab_test=ab, now=T0 + timedelta(seconds=31))).needs_metrics
    now = {1: traffic(requests=570), 2: traffic(requests=30, errors=3, fast=False)}
    d = decide(ab_inp(s, ab_test=ab, metrics=now, now=T0 + timedelta(seconds=31)))
    assert d.measured[1] == {"requests": 70, "errorRate": 0.0, "latencyP95Seconds": 0.0095}
    assert d.measured[2]["requests"] == 30 and d.measured[2]["errorRate"] == 0.1
    assert d.measured[2]["latencyP95Seconds"] > 1
    assert d.ab_test["measuredAt"] == "2026-05-01T12:00:31Z" and d.requeue_after == 30
    assert d.progressing == (False, "ABTestRunning", "v1=70%, v2=30%")
    # other variants: a new window
    s2 = spec(type="ABTest", abTest={"variants": [{"version": 1, "weight": 50}, {"version": 3, "weight": 50}]})
    assert decide(ab_inp(s2, ab_test=d.ab_test, metrics=now)).ab_test["versions"] == [1, 3]


def test_ab_test_from_prometheus_needs_no_baseline() -> None:
    s = spec(type="ABTest", abTest=AB, canary={"analysis": PROM})
    d = decide(ab_inp(s))
    assert not d.needs_metrics and d.ab_test["baseline"] is None and d.ab_test["metricsSource"] == "prometheus"
    later = T0 + timedelta(minutes=1)
    assert decide(ab_inp(s, ab_test=d.ab_test, now=later)).needs_metrics
    window = {1: traffic(requests=70), 2: traffic(requests=30)}
    measured = decide(ab_inp(s, ab_test=d.ab_test, metrics=window, now=later)).measured
    assert measured[1]["requests"] == 70 and measured[2]["requests"] == 30
    failed = decide(ab_inp(s, ab_test=d.ab_test, now=later, error="timed out"))
    assert not failed.needs_metrics and not failed.measured and "timed out" in failed.progressing[2]


def test_ab_header_gives_every_variant_a_pod() -> None:
    zero = {"variants": [{"version": 1, "weight": 100}, {"version": 2, "weight": 0}]}
    assert decide(ab_inp(spec(type="ABTest", abTest=zero))).replicas == {1: 2}
    with_header = spec(type="ABTest", abTest={**zero, "header": "x-model-version"})
    assert decide(ab_inp(with_header)).replicas == {1: 2, 2: 1}


def test_paused_canary_holds_its_step_and_resuming_continues() -> None:
    """spec.strategy.canary.paused (kubectl kultivar pause): a due step is neither analysed nor advanced."""
    paused = spec(canary={"steps": STEPS, "paused": True})
    later = T0 + timedelta(minutes=5)
    d = decide(inp(rollout=stepping(), pods=PODS, now=later, metrics={1: traffic(), 2: traffic()}, s=paused))
    assert d.rollout["step"] == 0 and d.rollout["state"] == "Stepping" and d.analysis is None
    assert d.weights == {1: 90, 2: 10} and not d.needs_metrics and d.requeue_after is None
    assert d.progressing[1] == "CanaryPausedByUser" and "resume" in d.progressing[2]
    # a paused canary that has not begun its first step sends it no traffic yet
    start = decide(inp(pods={1: Pods(2, 2)})).rollout
    d = decide(inp(rollout=start, pods={1: Pods(2, 2), 2: Pods(1, 1)}, s=paused))
    assert d.rollout["state"] == "Starting" and d.weights == {1: 100, 2: 0}
    # resumed: the same observation advances as usual
    d = decide(inp(rollout=stepping(), pods=PODS, now=later, metrics={1: traffic(), 2: traffic()}))
    assert d.rollout["step"] == 1 and d.analysis["verdict"] == "Pass"


def test_paused_canary_that_is_promoting_finishes() -> None:
    promoting = {**stepping(step=1), "state": "Promoting"}
    d = decide(inp(rollout=promoting, pods={1: Pods(2, 2), 2: Pods(2, 2)},
                   s=spec(canary={"steps": STEPS, "paused": True})))
    assert d.stable == 2 and d.rollout is None
