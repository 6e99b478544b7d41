"""spec.autoscaling: one HorizontalPodAutoscaler per served version, replicas left to it, and a canary that keeps
its traffic share next to an autoscaled stable version (kultivar.domain.autoscaling)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from factories import model, obj
from pydantic import ValidationError

from kultivar.api.deployment import CPU_TARGET_NEEDS_REQUEST, MIN_ABOVE_MAX, NO_TARGET, Autoscaling, DeploymentSpec
from kultivar.config import OperatorConfig
from kultivar.domain.autoscaling import quantity, scale_base
from kultivar.domain.labels import DEPLOYMENT_LABEL, OWNER_NAME, VERSION_LABEL
from kultivar.domain.rollout import Pods
from kultivar.domain.serving import DeploymentObserved, ServingPlan, plan_serving

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
CONFIG = OperatorConfig(store_url="file:///store", store_pvc="")
SCALING = {"minReplicas": 2, "maxReplicas": 10, "targetRequestsPerSecond": 50}
GATEWAY = {"router": "gatewayAPI", "gateway": {"parentRefs": [{"name": "gw"}]}}
STEPS = {"type": "Canary", "canary": {"steps": [{"weight": 10}, {"weight": 50}]}}


def registry(*versions: int) -> dict[str, Any]:
    return model(status={"productionVersion": versions[-1], "versions": [
        {"version": v, "artifact": {"uri": f"file:///store/v{v}/model.skops", "digest": "sha256:" + "b" * 64}}
        for v in versions]})


def plan(pods: dict[int, Pods], status: dict[str, Any] | None = None, versions: tuple[int, ...] = (1,),
         **spec: Any) -> ServingPlan:
    dep = obj("Deployment", "iris", {"modelRef": {"name": "iris"}, "replicas": 1, "autoscaling": SCALING,
                                     "strategy": STEPS, **spec}, status)
    return plan_serving(DeploymentObserved(obj=dep, model=registry(*versions), pods=pods), CONFIG, T0)


def by_version(planned: ServingPlan) -> dict[int, dict[str, Any]]:
    return {int(h["metadata"]["labels"][VERSION_LABEL]): h["spec"] for h in planned.autoscalers}


def replicas(planned: ServingPlan) -> dict[int, int]:
    return {int(d["metadata"]["labels"][VERSION_LABEL]): d["spec"]["replicas"] for d in planned.deployments}


@pytest.mark.parametrize(("fields", "message"), [
    ({"minReplicas": 5, "maxReplicas": 2, "targetRequestsPerSecond": 1}, MIN_ABOVE_MAX),
    ({"maxReplicas": 2}, NO_TARGET),
])
def test_bounds_and_a_target_are_required(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        Autoscaling.model_validate(fields)


def test_a_cpu_target_needs_a_cpu_request() -> None:
    spec = {"modelRef": {"name": "iris"}, "autoscaling": {"maxReplicas": 3, "targetCPUUtilizationPercentage": 70}}
    with pytest.raises(ValidationError, match=re.escape(CPU_TARGET_NEEDS_REQUEST)):
        DeploymentSpec.model_validate(spec)
    DeploymentSpec.model_validate({**spec, "resources": {"requests": {"cpu": "250m"}}})


def test_the_cel_rules_say_the_same() -> None:
    rules = Autoscaling.model_json_schema()["x-kubernetes-validations"]
    assert {r["message"] for r in rules} == {MIN_ABOVE_MAX, NO_TARGET}
    spec_rules = DeploymentSpec.model_json_schema()["x-kubernetes-validations"]
    assert [r["message"] for r in spec_rules] == [CPU_TARGET_NEEDS_REQUEST]


@pytest.mark.parametrize(("value", "text"), [(10, "10"), (0.25, "250m"), (12.5, "12500m"), (1e6, "1000000")])
def test_targets_are_quantities(value: float, text: str) -> None:
    assert quantity(value) == text


def test_the_first_version_gets_an_autoscaler_and_starts_within_its_bounds() -> None:
    planned = plan({})
    assert planned.autoscaled
    assert replicas(planned) == {1: 2}  # spec.replicas 1, raised to minReplicas
    (hpa,) = planned.autoscalers
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["metadata"]["name"] == "iris-v1"
    assert hpa["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    labels = hpa["metadata"]["labels"]
    assert labels[DEPLOYMENT_LABEL] == "iris" and labels[VERSION_LABEL] == "1" and labels[OWNER_NAME] == "iris"
    assert hpa["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "iris-v1"},
        "minReplicas": 2, "maxReplicas": 10,
        "metrics": [{"type": "Pods", "pods": {"metric": {"name": "kultivar_requests_per_second"},
                                              "target": {"type": "AverageValue", "averageValue": "50"}}}]}


def test_both_targets_become_two_metrics() -> None:
    spec = DeploymentSpec.model_validate({"modelRef": {"name": "iris"}, "resources": {"requests": {"cpu": "1"}},
                                          "autoscaling": {**SCALING, "targetCPUUtilizationPercentage": 60}})
    planned = plan({}, autoscaling=spec.autoscaling.wire() if spec.autoscaling else None,
                   resources={"requests": {"cpu": "1"}})
    (hpa,) = planned.autoscalers
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource", "Pods"]
    assert hpa["spec"]["metrics"][0]["resource"] == {"name": "cpu", "target": {"type": "Utilization",
                                                                                "averageUtilization": 60}}


def test_the_stable_version_keeps_the_count_its_autoscaler_chose() -> None:
    planned = plan({1: Pods(7, 7)}, {"stableVersion": 1})
    assert by_version(planned)[1]["minReplicas"] == 2 and by_version(planned)[1]["maxReplicas"] == 10
    # The count is what the autoscaler set: status reports it, and nothing would size it back to spec.replicas.
    assert replicas(planned) == {1: 7}
    assert planned.plan.status["variants"][0]["replicas"] == 7


def test_without_autoscaling_there_is_no_autoscaler_and_replicas_are_the_operators() -> None:
    planned = plan({1: Pods(7, 7)}, {"stableVersion": 1}, autoscaling=None)
    assert not planned.autoscaled and planned.autoscalers == []
    assert replicas(planned) == {1: 1}


def test_a_canary_on_the_replicas_router_is_pinned_to_its_share_of_the_stables_current_count() -> None:
    # At 10 % next to a stable at 9 pods the canary gets 1 (1 / 10 of the pods); at 50 % next to 4 pods, 4.
    for first, stable_pods, canary in ((10, 9, 1), (50, 4, 4)):
        steps = {"type": "Canary", "canary": {"steps": [{"weight": first}]}}
        planned = plan({1: Pods(stable_pods, stable_pods)}, {"stableVersion": 1}, versions=(1, 2), strategy=steps)
        scalers = by_version(planned)
        assert scalers[1]["minReplicas"] == 2 and scalers[1]["maxReplicas"] == 10
        assert scalers[2]["minReplicas"] == scalers[2]["maxReplicas"] == canary
        assert replicas(planned)[2] == canary


def test_the_pinned_canary_follows_the_stable_through_the_steps() -> None:
    start = plan({1: Pods(6, 6)}, {"stableVersion": 1}, versions=(1, 2)).plan.status
    stepping = plan({1: Pods(6, 6), 2: Pods(1, 1)}, start, versions=(1, 2)).plan.status
    assert stepping["rollout"]["state"] == "Stepping"
    assert {v["version"]: v["weight"] for v in stepping["variants"]} == {1: 86, 2: 14}  # 6 : 1 pods
    # Stable scaled up by its autoscaler to 9 during the step: the canary is re-pinned to 1 (9 : 1 is 10 %).
    scaled = plan({1: Pods(9, 9), 2: Pods(1, 1)}, stepping, versions=(1, 2))
    assert by_version(scaled)[2]["minReplicas"] == by_version(scaled)[2]["maxReplicas"] == 1
    assert {v["version"]: v["weight"] for v in scaled.plan.status["variants"]} == {1: 90, 2: 10}


def test_the_pinned_canary_never_exceeds_max_replicas() -> None:
    # 50 % next to a stable at its maximum of 10 would be 10; at 90 % it would be 90, capped at 10.
    steps = {"type": "Canary", "canary": {"steps": [{"weight": 90}]}}
    planned = plan({1: Pods(10, 10)}, {"stableVersion": 1}, versions=(1, 2), strategy=steps)
    assert by_version(planned)[2] == {**by_version(planned)[2], "minReplicas": 10, "maxReplicas": 10}
    # ...and the Starting state still sees the capped canary as at its size.
    started = plan({1: Pods(10, 10), 2: Pods(10, 10)}, planned.plan.status, versions=(1, 2), strategy=steps)
    assert started.plan.status["rollout"]["state"] == "Stepping"


def test_promotion_on_the_replicas_router_pins_the_canary_to_the_stables_count() -> None:
    status = {"stableVersion": 1, "rollout": {"version": 2, "step": 1, "stepStartedAt": "2026-05-01T11:00:00Z",
                                               "state": "Promoting"}}
    planned = plan({1: Pods(8, 8), 2: Pods(8, 3)}, status, versions=(1, 2))
    assert by_version(planned)[2]["minReplicas"] == by_version(planned)[2]["maxReplicas"] == 8
    assert planned.plan.status["rollout"]["state"] == "Promoting"  # not ready yet
    done = plan({1: Pods(8, 8), 2: Pods(8, 8)}, status, versions=(1, 2))
    assert done.plan.status["stableVersion"] == 2 and done.remove_versions == [1]
    # The new stable scales freely; the old one's autoscaler is no longer planned (apply_serving prunes it).
    assert by_version(done) == {2: {**by_version(done)[2], "minReplicas": 2, "maxReplicas": 10}}


def test_a_canary_behind_a_gateway_scales_on_its_own_load_from_its_share() -> None:
    planned = plan({1: Pods(8, 8)}, {"stableVersion": 1}, versions=(1, 2), traffic=GATEWAY)
    # 10 % of 8 pods is 1 pod to start with; its own autoscaler may add up to maxReplicas.
    assert by_version(planned)[2]["minReplicas"] == 1 and by_version(planned)[2]["maxReplicas"] == 10
    # Its autoscaler scaled it to 3 already: still at (above) its planned size, so the step starts.
    started = plan({1: Pods(8, 8), 2: Pods(3, 3)}, planned.plan.status, versions=(1, 2), traffic=GATEWAY)
    assert started.plan.status["rollout"]["state"] == "Stepping"
    # The route's weights are the step's, whatever the counts.
    rule = started.routes[0]["spec"]["rules"][-1]["backendRefs"]
    assert [r["weight"] for r in rule] == [90, 10]


def test_an_ab_test_sizes_variants_from_the_top_variants_current_count() -> None:
    ab = {"type": "ABTest", "abTest": {"variants": [{"version": 1, "weight": 75}, {"version": 2, "weight": 25}]}}
    spec = DeploymentSpec.model_validate({"modelRef": {"name": "iris"}, "strategy": ab, "autoscaling": SCALING})
    assert scale_base(spec, 1, {1: Pods(6, 6)}) == 8  # 6 pods are 75 % of 8
    planned = plan({1: Pods(6, 6), 2: Pods(2, 2)}, {"stableVersion": 1}, versions=(1, 2), strategy=ab)
    assert by_version(planned)[2]["minReplicas"] == by_version(planned)[2]["maxReplicas"] == 2
    assert by_version(planned)[1]["minReplicas"] == 2 and by_version(planned)[1]["maxReplicas"] == 10


class RecordingApi:
    """A stand-in Api: objects that exist by path, every call recorded; listing autoscalers may be forbidden."""

    def __init__(self, existing: dict[str, Any], forbid_autoscalers: bool = False) -> None:
        self.existing, self.forbid, self.calls = existing, forbid_autoscalers, []  # type: list[tuple[str, str, Any]]

    def request(self, method: str, path: str, body: Any = None, query: Any = None, **_: Any) -> Any:
        from kultivar.k8s.client import ApiError

        self.calls.append((method, path, body))
        if method == "GET" and query is not None:
            if self.forbid and "horizontalpodautoscalers" in path:
                raise ApiError(403, "Forbidden")
            return {"items": []}
        if method == "GET":
            if path in self.existing:
                return self.existing[path]
            raise ApiError(404, "Not Found")
        return {}


def test_an_autoscaled_deployments_replicas_are_never_patched() -> None:
    from kultivar.k8s.serving import apply_serving

    scaled = plan({1: Pods(7, 7)}, {"stableVersion": 1})
    current = {**scaled.deployments[0], "spec": {**scaled.deployments[0]["spec"], "replicas": 5}}
    api = RecordingApi({"/apis/apps/v1/namespaces/team-a/deployments/iris-v1": current})
    dep = obj("Deployment", "iris", {"modelRef": {"name": "iris"}}, {})
    apply_serving(api, dep, scaled)  # type: ignore[arg-type]  # a stand-in Api
    assert not [c for c in api.calls if c[0] == "PATCH" and "/deployments/" in c[1]]
    assert [c[1] for c in api.calls if c[0] == "POST"] == [
        "/apis/autoscaling/v2/namespaces/team-a/horizontalpodautoscalers",
        "/api/v1/namespaces/team-a/services"]
    # Without autoscaling the same Deployment is sized back to spec.replicas.
    fixed = plan({1: Pods(7, 7)}, {"stableVersion": 1}, autoscaling=None)
    api = RecordingApi({"/apis/apps/v1/namespaces/team-a/deployments/iris-v1": current})
    apply_serving(api, dep, fixed)  # type: ignore[arg-type]
    assert [c[2] for c in api.calls if c[0] == "PATCH"] == [{"spec": {"replicas": 1}}]


def test_a_deployment_without_autoscaling_serves_on_where_autoscalers_may_not_be_listed() -> None:
    from kultivar.k8s.serving import apply_serving

    api = RecordingApi({}, forbid_autoscalers=True)
    dep = obj("Deployment", "iris", {"modelRef": {"name": "iris"}}, {})
    outcome = apply_serving(api, dep, plan({}, autoscaling=None))  # type: ignore[arg-type]
    assert outcome.refused is None


def test_status_reports_the_count_the_autoscaler_set() -> None:
    # Behind a gateway the canary's autoscaler may run more pods than its planned minimum of 1.
    planned = plan({1: Pods(8, 8), 2: Pods(3, 3)}, {"stableVersion": 1}, versions=(1, 2), traffic=GATEWAY)
    assert {v["version"]: v["replicas"] for v in planned.plan.status["variants"]} == {1: 8, 2: 3}


def test_a_shadow_is_sized_from_the_autoscaled_stable_and_has_no_autoscaler() -> None:
    from kultivar.domain.deployment import plan_deployment

    strategy = {"type": "Canary", "shadow": {"version": 2, "percent": 20}}
    dep = obj("Deployment", "iris", {"modelRef": {"name": "iris"}, "replicas": 1, "autoscaling": SCALING,
                                     "strategy": strategy}, {"stableVersion": 1})
    production_1 = registry(1, 2)
    production_1["status"]["productionVersion"] = 1  # v2 is only shadowed
    planned = plan_deployment(DeploymentObserved(obj=dep, model=production_1, pods={1: Pods(10, 10)}), CONFIG, T0)
    shadow = next(d for d in planned.deployments if d["metadata"]["name"] == "iris-shadow")
    assert shadow["spec"]["replicas"] == 2  # 20 % of the stable's 10 pods, not of spec.replicas
    assert [h["metadata"]["name"] for h in planned.autoscalers] == ["iris-v1"]
