"""A canary whose model server failed for good (a termination message marked permanent: a model file failing its
digest, an unloadable estimator) ends rolled back, as a failed analysis ends it; anything else keeps waiting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from factories import model, obj

from kultivar.api.deployment import DeploymentSpec
from kultivar.config import OperatorConfig
from kultivar.domain.conditions import READY
from kultivar.domain.deployment import plan_deployment
from kultivar.domain.rollout import Pods, RolloutInput, decide, server_failure_cause
from kultivar.domain.server_failures import ServerFailure
from kultivar.domain.serving import DeploymentObserved

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
STEPS = [{"weight": 10, "pause": "1m"}, {"weight": 50, "pause": "1m"}]
DIGEST = ServerFailure(2, "iris-v2-abc", "ModelDigestMismatch", "model.skops has sha256:aa, the registry sha256:bb")
STARTING = {"version": 2, "step": 0, "stepStartedAt": "2026-05-01T12:00:00Z", "state": "Starting"}


def spec(**strategy: Any) -> DeploymentSpec:
    base = {"type": "Canary", "canary": {"steps": STEPS}}
    return DeploymentSpec.model_validate({"modelRef": {"name": "iris"}, "replicas": 2,
                                          "strategy": {**base, **strategy}})


def inp(failures: dict[int, ServerFailure], rollout: dict[str, Any] | None = STARTING,
        pods: dict[int, Pods] | None = None, s: DeploymentSpec | None = None, **kw: Any) -> RolloutInput:
    return RolloutInput(spec=s or spec(), target=2, stable=1, rollout=rollout, rolled_back=[],
                        pods={1: Pods(2, 2), 2: Pods(1, 0)} if pods is None else pods, metrics=None, now=T0,
                        server_failures=failures, **kw)


def test_a_starting_canary_whose_server_failed_for_good_is_rolled_back_with_the_servers_reason() -> None:
    d = decide(inp({2: DIGEST}))
    assert d.replicas == {1: 2} and d.weights == {1: 100} and d.stable == 1 and d.canary is None
    assert d.rollout is None and d.rolled_back == [2]
    degraded, reason, message = d.degraded
    assert degraded is True and reason == "RolledBack"
    assert message.startswith("v2's model server failed: ModelDigestMismatch: model.skops has sha256:aa, the "
                              "registry sha256:bb; rolled back to v1"), message
    assert d.analysis is not None
    assert (d.analysis["verdict"], d.analysis["failedCheck"]) == ("Fail", "ServerFailed")
    [event] = d.events
    assert (event.type, event.reason) == ("Warning", "RolledBack")
    assert "ModelDigestMismatch" in event.message and "sha256:aa" in event.message and "v1" in event.message


def test_the_rolled_back_version_is_not_retried_and_degraded_says_the_same_on_every_reconcile() -> None:
    first = decide(inp({2: DIGEST}))
    # Next reconcile (or a restarted operator): status says rolled back; the failed pods are gone.
    later = RolloutInput(spec=spec(), target=2, stable=1, rollout=None, rolled_back=first.rolled_back,
                         pods={1: Pods(2, 2)}, metrics=None, now=T0 + timedelta(minutes=5),
                         last_analysis=first.analysis)
    again = decide(later)
    assert again.replicas == {1: 2} and again.rollout is None and not again.events
    assert again.degraded == first.degraded
    assert decide(later).degraded == again.degraded


def test_the_same_observation_decides_the_same_after_a_restart() -> None:
    first, second = decide(inp({2: DIGEST})), decide(inp({2: DIGEST}))
    assert (first.replicas, first.rolled_back, first.degraded, first.analysis) == \
        (second.replicas, second.rolled_back, second.degraded, second.analysis)


def test_a_transient_not_ready_canary_still_waits() -> None:
    d = decide(inp({}))
    assert d.rollout is not None and d.rollout["state"] == "Starting" and d.rolled_back == []
    assert d.progressing[2] == "waiting for v2's pods" and d.degraded[0] is False


def test_a_failure_of_the_stable_version_rolls_nothing_back() -> None:
    stable_only = ServerFailure(1, "iris-v1-new", "ModelDigestMismatch", "altered")
    d = decide(inp({1: stable_only}))
    assert d.rolled_back == [] and d.rollout is not None and d.canary == 2
    steady = RolloutInput(spec=spec(), target=1, stable=1, rollout=None, rolled_back=[], pods={1: Pods(2, 1)},
                          metrics=None, now=T0, server_failures={1: stable_only})
    assert decide(steady).rolled_back == [] and decide(steady).replicas == {1: 2}


def test_a_failure_the_stable_shares_is_the_specs_not_the_versions_and_rolls_nothing_back() -> None:
    # e.g. spec.serving.unknownCategories: Refuse on versions without allowed values: every version refuses.
    refused = {v: ServerFailure(v, f"iris-v{v}-x", "NoAllowedValues", "no allowed values") for v in (1, 2)}
    d = decide(inp(refused))
    assert d.rolled_back == [] and d.rollout is not None


def test_a_first_version_whose_server_fails_has_nothing_to_roll_back_to() -> None:
    d = decide(RolloutInput(spec=spec(), target=1, stable=None, rollout=None, rolled_back=[], pods={1: Pods(2, 0)},
                            metrics=None, now=T0, server_failures={1: ServerFailure(1, "p", "X", "y")}))
    assert d.rolled_back == [] and d.replicas == {1: 2}


def test_a_canary_failing_in_any_state_or_paused_is_rolled_back() -> None:
    stepping = {**STARTING, "state": "Stepping"}
    promoting = {**STARTING, "state": "Promoting"}
    for rollout in (stepping, promoting):
        assert decide(inp({2: DIGEST}, rollout=rollout)).rolled_back == [2]
    # The user's pause holds traffic where it is; a server that can never start is not worth holding.
    paused = spec(canary={"steps": STEPS, "paused": True})
    assert decide(inp({2: DIGEST}, s=paused)).rolled_back == [2]
    # The first reconcile of the canary may already see its pods fail (a canary started before the restart).
    assert decide(inp({2: DIGEST}, rollout=None)).rolled_back == [2]


def test_immediate_strategy_rolls_back_too() -> None:
    d = decide(inp({2: DIGEST}, rollout=None, s=spec(type="Immediate")))
    assert d.replicas == {1: 2} and d.rolled_back == [2] and d.degraded[1] == "RolledBack"


def test_an_ab_variant_that_cannot_start_is_named_with_its_servers_reason() -> None:
    s = spec(type="ABTest", abTest={"variants": [{"version": 1, "weight": 50}, {"version": 2, "weight": 50}]})
    d = decide(inp({2: DIGEST}, rollout=None, s=s))
    assert d.replicas == {1: 1, 2: 1} and d.rolled_back == []  # fixed variants: nothing to roll back to
    assert d.progressing[2] == ("v2's model server failed: ModelDigestMismatch: model.skops has sha256:aa, the "
                                "registry sha256:bb")


# --- the whole Deployment plan --------------------------------------------------------------------------------


def registry() -> dict[str, Any]:
    return model(status={"productionVersion": 2, "versions": [
        {"version": v, "artifact": {"uri": f"file:///store/v{v}/model.skops", "digest": "sha256:" + "b" * 64}}
        for v in (1, 2)]})


def test_the_deployment_plan_serves_stable_removes_the_canary_and_stays_ready() -> None:
    dep = obj("Deployment", "iris", {"modelRef": {"name": "iris"}, "replicas": 2,
                                     "strategy": {"type": "Canary", "canary": {"steps": STEPS}}})
    dep["status"] = {"stableVersion": 1, "rollout": STARTING}
    observed = DeploymentObserved(obj=dep, model=registry(), pods={1: Pods(2, 2), 2: Pods(1, 0)},
                                  server_failures={2: DIGEST})
    planned = plan_deployment(observed, OperatorConfig(store_url="file:///store", store_pvc=""), T0)
    status = planned.plan.status
    assert status["stableVersion"] == 1 and status["canaryVersion"] is None and status["rolledBack"] == [2]
    assert status["rollout"] is None and status["lastAnalysis"]["failedCheck"] == "ServerFailed"
    assert planned.remove_versions == [2]
    assert [d["metadata"]["name"] for d in planned.deployments] == ["iris-v1"]
    [ready] = [c for c in planned.plan.conditions if c.type == READY]
    assert ready.status is True and ready.reason == "Serving"  # stable answers throughout
    [degraded] = [c for c in planned.plan.conditions if c.type == "Degraded"]
    assert degraded.status is True and degraded.message.startswith("v2's model server failed: ModelDigestMismatch")
    assert [(e.type, e.reason) for e in planned.plan.events] == [("Warning", "RolledBack")]


def test_the_model_learns_the_cause_only_from_the_newest_rollback_that_a_server_failure_ended() -> None:
    failed = decide(inp({2: DIGEST}))
    status = {"rolledBack": failed.rolled_back, "lastAnalysis": failed.analysis}
    assert server_failure_cause(status, 2) == ("ModelDigestMismatch: model.skops has sha256:aa, the registry "
                                               "sha256:bb")
    assert server_failure_cause({**status, "rolledBack": [2, 3]}, 2) is None  # lastAnalysis is v3's
    assert server_failure_cause({**status, "lastAnalysis": {"verdict": "Fail", "failedCheck": "ErrorRate"}}, 2) \
        is None
