"""The Deployment's serving plan: the objects (server pods' environment, the HTTPRoute) and status.variants with
each version's weight, header and measured numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from factories import model, obj

from kultivar.config import OperatorConfig
from kultivar.domain.metrics import Snapshot
from kultivar.domain.rollout import Pods
from kultivar.domain.serving import DeploymentObserved, plan_serving

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
CONFIG = OperatorConfig(store_url="file:///store", store_pvc="")
GATEWAY = {"router": "gatewayAPI", "gateway": {"parentRefs": [{"name": "gw"}]}}
AB = {"type": "ABTest", "canary": {"analysis": {"interval": "30s"}},
      "abTest": {"variants": [{"version": 1, "weight": 70}, {"version": 2, "weight": 30}],
                 "header": "x-model-version"}}


def registry(*versions: int) -> dict[str, Any]:
    return model(status={"productionVersion": versions[-1], "versions": [
        {"version": v, "artifact": {"uri": f"file:///store/v{v}/model.skops", "digest": "sha256:" + "b" * 64}}
        for v in versions]})


def deployment(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return obj("Deployment", "iris", {"modelRef": {"name": "iris"}, "replicas": 2, **spec}, status)


def observe(dep: dict[str, Any], pods: dict[int, Pods], metrics: dict[int, Snapshot] | None = None
            ) -> DeploymentObserved:
    return DeploymentObserved(obj=dep, model=registry(1, 2), pods=pods, metrics=metrics)


def traffic(requests: float, errors: float = 0.0) -> Snapshot:
    return Snapshot(requests={"success": requests - errors, "error": errors},
                    latency={0.01: requests, float("inf"): requests}, predictions={"a": requests})


def test_server_pods_carry_the_deployment_identity_for_prometheus() -> None:
    planned = plan_serving(observe(deployment(), {}), CONFIG, T0)
    env = {e["name"]: e["value"] for e in planned.deployments[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KULTIVAR_NAMESPACE"] == "team-a" and env["KULTIVAR_DEPLOYMENT"] == "iris"


def test_server_pods_load_models_from_the_permitted_packages() -> None:
    # The same chart value that let training save an XGBoost model lets the server load it (and no wider list).
    for packages in (("sklearn", "xgboost", "lightgbm"), ("sklearn",)):
        config = OperatorConfig(store_url="file:///store", store_pvc="", estimator_packages=packages)
        planned = plan_serving(observe(deployment(), {}), config, T0)
        container = planned.deployments[0]["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["KULTIVAR_ESTIMATOR_PACKAGES"] == ",".join(packages)


def test_server_pods_refuse_unknown_categories_only_when_asked() -> None:
    def env_of(dep: dict[str, Any]) -> dict[str, str]:
        container = plan_serving(observe(dep, {}), CONFIG, T0).deployments[0]["spec"]["template"]["spec"][
            "containers"][0]
        return {e["name"]: e["value"] for e in container["env"]}

    assert env_of(deployment(serving={"unknownCategories": "Refuse"}))["KULTIVAR_UNKNOWN_CATEGORIES"] == "refuse"
    # Accept (the default) leaves the pod template as before the option existed: no rollout on upgrade.
    assert "KULTIVAR_UNKNOWN_CATEGORIES" not in env_of(deployment())
    assert "KULTIVAR_UNKNOWN_CATEGORIES" not in env_of(deployment(serving={"unknownCategories": "Accept"}))


def test_ab_test_status_shows_weight_header_and_numbers_per_version() -> None:
    dep = deployment(strategy=AB, traffic=GATEWAY)
    pods = {1: Pods(1, 1), 2: Pods(1, 1)}
    first = plan_serving(observe(dep, pods), CONFIG, T0)
    assert first.needs_metrics  # the baseline
    started = plan_serving(observe(dep, pods, {1: traffic(10), 2: Snapshot()}), CONFIG, T0)
    status = started.plan.status
    assert status["abTest"]["startedAt"] == "2026-05-01T12:00:00Z"
    assert status["variants"] == [
        {"version": 1, "role": "stable", "weight": 70, "header": {"name": "x-model-version", "value": "1"},
         "replicas": 1, "readyReplicas": 1},
        {"version": 2, "role": "variant", "weight": 30, "header": {"name": "x-model-version", "value": "2"},
         "replicas": 1, "readyReplicas": 1}]
    (route,) = started.routes
    rules = route["spec"]["rules"]
    assert rules[0]["matches"] == [{"headers": [{"name": "x-model-version", "value": "1"}]}]
    assert rules[-1]["backendRefs"] == [{"name": "iris-v1", "port": 80, "weight": 70},
                                        {"name": "iris-v2", "port": 80, "weight": 30}]

    dep["status"] = {**status}
    later = T0 + timedelta(seconds=30)
    measured = plan_serving(observe(dep, pods, {1: traffic(80), 2: traffic(40, errors=2)}), CONFIG, later)
    numbers = {v["version"]: v for v in measured.plan.status["variants"]}
    assert (numbers[1]["requests"], numbers[1]["errorRate"], numbers[1]["latencyP95Seconds"]) == (70, 0.0, 0.0095)
    assert (numbers[2]["requests"], numbers[2]["errorRate"]) == (40, 0.05)

    # Between measurements the numbers stand (status is replaced whole, so they are carried over) ...
    dep["status"] = {**measured.plan.status}
    between = plan_serving(observe(dep, pods), CONFIG, later + timedelta(seconds=5))
    assert not between.needs_metrics
    assert between.plan.status["variants"] == measured.plan.status["variants"]
    # ... and go when the test ends.
    dep["spec"]["strategy"] = {"type": "Canary"}
    ended = plan_serving(observe(dep, pods), CONFIG, later + timedelta(seconds=5))
    assert ended.plan.status["abTest"] is None
    assert all("requests" not in v and "header" not in v for v in ended.plan.status["variants"])


def test_route_leaves_out_versions_without_pods() -> None:
    ab = {"type": "ABTest", "abTest": {"variants": [{"version": 1, "weight": 100}, {"version": 2, "weight": 0}]}}
    planned = plan_serving(observe(deployment(strategy=ab, traffic=GATEWAY), {1: Pods(2, 2)}), CONFIG, T0)
    assert [s["metadata"]["name"] for s in planned.services] == ["iris", "iris-v1"]
    assert planned.routes[0]["spec"]["rules"] == [{"backendRefs": [{"name": "iris-v1", "port": 80, "weight": 100}]}]


def test_stale_objects_after_switching_from_gateway_api_to_replicas() -> None:
    from kultivar.domain.plan import Plan
    from kultivar.domain.serving import ServingPlan, stale_objects

    def plan(services: list[str], routes: int) -> ServingPlan:
        return ServingPlan(Plan(), [], [{"metadata": {"name": n}} for n in services],
                           [{"metadata": {"name": "iris"}}] * routes, [])

    # Still gatewayAPI: nothing stale, the route stays.
    assert stale_objects(plan(["iris", "iris-v1"], 1), ["iris", "iris-v1"], "iris") == ([], False)
    # Switched to replicas: the per-version Service and the route go; the Service users call stays.
    assert stale_objects(plan(["iris"], 0), ["iris", "iris-v1"], "iris") == (["iris-v1"], True)
    # Always replicas: no route to delete, so no call for it on every reconcile.
    assert stale_objects(plan(["iris"], 0), ["iris"], "iris") == ([], False)
