"""Shadow traffic in the Deployment planner: the shadow's own Deployment and Service out of the users' Service,
the mirror filter (gatewayAPI) or the forwarding settings on the stable servers (replicas), and status.shadow
computed from the counters."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from factories import model, obj
from pydantic import ValidationError

from kultivar.api.deployment import DeploymentSpec, DeploymentStatus
from kultivar.config import OperatorConfig
from kultivar.domain.deployment import metrics_needed, plan_deployment
from kultivar.domain.metrics import Snapshot, distribution_shift
from kultivar.domain.rollout import Pods
from kultivar.domain.server_failures import STARTING_RECHECK_SECONDS, ServerFailure
from kultivar.domain.serving import DeploymentObserved, ServingPlan
from kultivar.domain.shadow import ShadowObserved

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
CONFIG = OperatorConfig(store_url="file:///store", store_pvc="")
GATEWAY = {"router": "gatewayAPI", "gateway": {"parentRefs": [{"name": "gw"}]}}
SHADOW = {"type": "Canary", "canary": {"analysis": {"interval": "30s"}}, "shadow": {"version": 2, "percent": 20}}


def registry() -> dict[str, Any]:
    return model(status={"productionVersion": 1, "versions": [
        {"version": v, "artifact": {"uri": f"file:///store/v{v}/model.skops", "digest": "sha256:" + "b" * 64}}
        for v in (1, 2)]})


def deployment(status: dict[str, Any] | None = None, strategy: dict[str, Any] | None = None,
               **spec: Any) -> dict[str, Any]:
    return obj("Deployment", "iris", {"modelRef": {"name": "iris"}, "replicas": 2,
                                      "strategy": SHADOW if strategy is None else strategy, **spec},
               {"stableVersion": 1, **(status or {})})


def plan(dep: dict[str, Any], shadow: ShadowObserved | None = None, now: datetime = T0) -> ServingPlan:
    observed = DeploymentObserved(obj=dep, model=registry(), pods={1: Pods(2, 2)}, shadow=shadow)
    return plan_deployment(observed, CONFIG, now)


def env(server: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in server["spec"]["template"]["spec"]["containers"][0]["env"]}


def named(planned: ServingPlan, name: str) -> dict[str, Any]:
    return next(d for d in planned.deployments if d["metadata"]["name"] == name)


def running(**status: Any) -> dict[str, Any]:
    return {"shadow": {"version": 2, "percent": 20, "stableVersion": 1, "router": "replicas", "metricsSource": "pods",
                       "state": "Running", "startedAt": "2026-05-01T11:00:00Z", **status}}


def test_the_shadow_runs_outside_the_users_service() -> None:
    planned = plan(deployment())
    shadow = named(planned, "iris-shadow")
    labels = shadow["spec"]["template"]["metadata"]["labels"]
    # The users' Service selects kultivar.io/deployment: the shadow's pods do not carry it.
    users = next(s for s in planned.services if s["metadata"]["name"] == "iris")
    assert not set(users["spec"]["selector"].items()) <= set(labels.items())
    assert labels["kultivar.io/shadow-of"] == "iris" and labels["kultivar.io/model-version"] == "2"
    assert shadow["spec"]["selector"] == {"matchLabels": {"kultivar.io/shadow-of": "iris"}}
    assert env(shadow)["KULTIVAR_MODEL_VERSION"] == "2"
    assert shadow["spec"]["replicas"] == 1  # 20 % of 2 replicas, at least one
    service = next(s for s in planned.services if s["metadata"]["name"] == "iris-shadow")
    assert service["spec"]["selector"] == {"kultivar.io/shadow-of": "iris"}
    # Until its pods are ready nothing is copied: the stable servers keep their settings.
    assert "KULTIVAR_SHADOW_URL" not in env(named(planned, "iris-v1"))
    assert planned.plan.status["shadow"]["state"] == "Starting"
    DeploymentStatus.model_validate(planned.plan.status)


def test_stable_servers_forward_once_the_shadow_is_ready() -> None:
    ready = ShadowObserved(2, Pods(1, 1), metrics={1: Snapshot(), 2: Snapshot()})
    planned = plan(deployment(), ready)
    assert env(named(planned, "iris-v1")).items() >= {
        "KULTIVAR_SHADOW_URL": "http://iris-shadow.team-a.svc", "KULTIVAR_SHADOW_VERSION": "2",
        "KULTIVAR_SHADOW_PERCENT": "20"}.items()
    assert "KULTIVAR_SHADOW_URL" not in env(named(planned, "iris-shadow"))  # the shadow forwards nothing
    status = planned.plan.status["shadow"]
    assert status["state"] == "Running" and status["startedAt"] == "2026-05-01T12:00:00Z"
    assert json.loads(status["baseline"]).keys() == {"1", "2"}  # the window counts from here
    assert not planned.routes


def test_without_a_baseline_the_window_waits_for_a_reading() -> None:
    dep = deployment()
    observed = DeploymentObserved(obj=dep, model=registry(), pods={1: Pods(2, 2)}, shadow=ShadowObserved(2, Pods(1, 1)))
    assert metrics_needed(observed, CONFIG, T0).shadow == 2


def test_gateway_route_mirrors_to_the_shadow_with_its_percent() -> None:
    planned = plan(deployment(traffic=GATEWAY), ShadowObserved(2, Pods(1, 1), metrics={1: Snapshot(), 2: Snapshot()}))
    (route,) = planned.routes
    assert route["spec"]["rules"][-1]["filters"] == [{"type": "RequestMirror", "requestMirror": {
        "backendRef": {"name": "iris-shadow", "port": 80}, "percent": 20}}]
    # The shadow never takes a weight: only the stable answers.
    assert [b["name"] for b in route["spec"]["rules"][-1]["backendRefs"]] == ["iris-v1"]
    assert "KULTIVAR_SHADOW_URL" not in env(named(planned, "iris-v1"))


def traffic(requests: float, predictions: dict[str, float], errors: float = 0.0, **extra: Any) -> Snapshot:
    return Snapshot(requests={"success": requests - errors, "error": errors},
                    latency={0.01: requests * 0.9, 0.1: requests, float("inf"): requests},
                    predictions=predictions, **extra)


def test_status_shadow_is_computed_from_the_window_of_counters() -> None:
    base = {1: traffic(100, {"a": 100}, shadow={(2, "rows:agree"): 10.0}), 2: traffic(10, {"a": 10})}
    dep = deployment(status=running(baseline=json.dumps({str(v): s.wire(features=False) for v, s in base.items()}),
                                    measuredAt="2026-05-01T11:59:00Z"),
                     monitoring={"performance": {"metric": "accuracy", "floor": 0.5, "minLabels": 1}})
    now = {
        1: traffic(300, {"a": 250, "b": 50}, shadow={(2, "rows:agree"): 100.0, (2, "rows:disagree"): 30.0,
                                                     (2, "requests:answered"): 120.0, (2, "requests:error"): 3.0,
                                                     (2, "requests:dropped"): 7.0},
                   labelled={(1, "a", "a"): 8.0, (1, "b", "a"): 2.0, (2, "a", "a"): 4.0}),
        2: traffic(130, {"a": 60, "b": 70}, errors=6.0),
    }
    planned = plan(dep, ShadowObserved(2, Pods(1, 1), metrics=now), now=T0)
    status = planned.plan.status["shadow"]
    assert status["requests"] == 120 and status["errorRate"] == pytest.approx(6 / 120)
    assert status["compared"] == 120 and status["agreement"] == pytest.approx(90 / 120)
    assert status["forwardErrors"] == 3 and status["dropped"] == 7
    assert status["latencyP95Seconds"] is not None
    assert status["predictionShift"] == pytest.approx(distribution_shift({"a": 50, "b": 70}, {"a": 150, "b": 50}),
                                                      abs=1e-6)
    assert status["liveMetric"] == "accuracy" and status["liveValue"] == 1.0 and status["labels"] == 4
    assert status["stableLiveValue"] == pytest.approx(0.8)
    assert status["measuredAt"] == "2026-05-01T12:00:00Z" and "agreement 75.00%" in status["message"]
    assert planned.plan.requeue_after is not None and planned.plan.requeue_after <= 30
    DeploymentStatus.model_validate(planned.plan.status)


def test_measuring_waits_for_the_interval() -> None:
    dep = deployment(status=running(measuredAt="2026-05-01T11:59:50Z", baseline="{}"))
    observed = DeploymentObserved(obj=dep, model=registry(), pods={1: Pods(2, 2)}, shadow=ShadowObserved(2, Pods(1, 1)))
    assert metrics_needed(observed, CONFIG, T0).shadow is None
    assert metrics_needed(observed, CONFIG, T0 + timedelta(seconds=21)).shadow == 2
    assert plan(dep, ShadowObserved(2, Pods(1, 1))).plan.requeue_after == pytest.approx(20)


def test_a_shadow_that_answers_users_waits_and_its_pods_go() -> None:
    dep = deployment(strategy={**SHADOW, "shadow": {"version": 1}})
    planned = plan(dep, ShadowObserved(2, Pods(1, 1)))
    assert planned.remove_shadow and not any(d["metadata"]["name"] == "iris-shadow" for d in planned.deployments)
    status = planned.plan.status["shadow"]
    assert status["state"] == "Waiting" and "v1 is the stable version" in status["message"]


def test_an_unknown_shadow_version_is_named() -> None:
    planned = plan(deployment(strategy={**SHADOW, "shadow": {"version": 9}}))
    assert "has no version 9" in planned.plan.status["shadow"]["message"]


def test_removing_the_shadow_removes_its_pods_and_status() -> None:
    planned = plan(deployment(status=running(), strategy={"type": "Canary"}), ShadowObserved(2, Pods(1, 1)))
    assert planned.remove_shadow and planned.plan.status["shadow"] is None
    assert "KULTIVAR_SHADOW_URL" not in env(named(planned, "iris-v1"))


def test_a_shadow_beside_an_ab_test_is_refused() -> None:
    with pytest.raises(ValidationError, match="shadow runs beside a Canary or Immediate"):
        DeploymentSpec.model_validate({"modelRef": {"name": "iris"}, "strategy": {
            "type": "ABTest", "shadow": {"version": 2},
            "abTest": {"variants": [{"version": 1, "weight": 50}, {"version": 2, "weight": 50}]}}})
    with pytest.raises(ValidationError):
        DeploymentSpec.model_validate({"modelRef": {"name": "iris"}, "strategy": {"shadow": {"version": 2,
                                                                                              "percent": 0}}})


def test_prometheus_reads_the_forwarding_counters_per_shadow_version() -> None:
    from kultivar.domain.promql import queries, snapshots

    asked = queries("team-a", "iris", [1, 2], 60.0, shadow=True)
    assert 'sum by (version, shadow_version, outcome) (increase(kultivar_shadow_rows_total{' in asked["shadow:rows"]
    answers = {"shadow:rows": [{"metric": {"version": "1", "shadow_version": "2", "outcome": "agree"},
                                "value": [0, "12"]}],
               "shadow:absdiff": [{"metric": {"version": "1", "shadow_version": "2"}, "value": [0, "0.5"]}]}
    snap = snapshots(answers, [1, 2])[1]
    assert snap.shadow == {(2, "rows:agree"): 12.0, (2, "absdiff"): 0.5}
    assert Snapshot.from_wire(snap.wire()) == snap  # kept in status.shadow.baseline as it is read


def test_a_blocked_serving_plan_leaves_the_shadow_as_it_is() -> None:
    """The artifact store missing (or the Model, or a spec plan_serving cannot use) blocks every served object:
    the shadow's pods and status.shadow stay as they are, like the stable's, until the block is lifted."""
    dep = deployment(running(requests=480))
    no_store = OperatorConfig(store_url="file:///store", store_pvc="kultivar-artifacts")
    observed = DeploymentObserved(obj=dep, model=registry(), pods={1: Pods(2, 2)},
                                  shadow=ShadowObserved(2, Pods(1, 1)), store_claim_found=False)
    planned = plan_deployment(observed, no_store, T0)
    ready = next(c for c in planned.plan.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == (False, "ArtifactStoreUnavailable")
    assert "shadow" not in planned.plan.status and not planned.remove_shadow
    assert not planned.deployments and not planned.services
    assert metrics_needed(observed, no_store, T0).shadow is None


# --- a shadow whose server refused to start for good ---------------------------------------------------------


def test_a_shadow_whose_server_failed_for_good_is_reported_once_and_never_touches_the_stable() -> None:
    starting = plan(deployment(), ShadowObserved(2, Pods(1, 0)))
    assert starting.plan.status["shadow"]["state"] == "Starting"
    assert starting.plan.requeue_after == STARTING_RECHECK_SECONDS  # a crash loop changes nothing watched
    failure = ServerFailure(2, "iris-shadow-x", "ModelDigestMismatch", "altered")
    failed = plan(deployment(), ShadowObserved(2, Pods(1, 0), failure=failure))
    shadow = failed.plan.status["shadow"]
    assert shadow["state"] == "Failed"
    assert shadow["message"].startswith("v2's model server failed: ModelDigestMismatch: altered (pod iris-shadow-x)")
    assert [(e.type, e.reason) for e in failed.plan.events] == [("Warning", "ShadowFailed")]
    DeploymentStatus.model_validate(failed.plan.status)
    # The stable serves on as before: no forwarding settings, Ready from its own pods, nothing rolled back.
    assert "KULTIVAR_SHADOW_URL" not in env(named(failed, "iris-v1"))
    ready = next(c for c in failed.plan.conditions if c.type == "Ready")
    assert ready.status is True and failed.plan.status["stableVersion"] == 1
    assert not failed.plan.status.get("rolledBack")
    # Level-based: the next reconcile, crashed again or between two crashes, says the same without a new Event.
    for again in (ShadowObserved(2, Pods(1, 0), failure=failure), ShadowObserved(2, Pods(1, 0))):
        later = plan(deployment({"shadow": shadow}), again)
        assert later.plan.status["shadow"] == shadow and not later.plan.events
    # Another shadow version starts afresh.
    other = deployment({"shadow": shadow}, strategy={**SHADOW, "shadow": {"version": 1, "percent": 20}})
    assert plan(other).plan.status["shadow"]["state"] == "Waiting"
