"""spec.autoscaling on the real control plane: the operator creates a HorizontalPodAutoscaler per served version,
the real horizontal-pod-autoscaler controller of kube-controller-manager scales the versions on metrics from a
test metrics API (metrics_api.py), and the operator neither resets the counts nor loses the canary's split.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kapi import BETTER_C, assert_promoted, create, get, patch_spec, sample, wait_reason
from metrics_api import MetricsApi

from helpers import wait_for

TIMEOUT = 180
HPA = "/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers/{name}"
APPS = "/apis/apps/v1/namespaces/{ns}/deployments/{name}"


@pytest.fixture(scope="module")
def metrics_api(kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetricsApi]:
    api = MetricsApi(kube, tmp_path_factory.mktemp("metrics-api")).start()
    yield api
    api.stop()


def _hpa(kube, namespace: str, name: str) -> dict[str, Any] | None:
    status, out = kube.raw("GET", HPA.format(ns=namespace, name=name))
    return out if status == 200 else None


def _replicas(kube, namespace: str, name: str) -> int | None:
    status, out = kube.raw("GET", APPS.format(ns=namespace, name=name))
    return out["spec"].get("replicas") if status == 200 else None


def _pinned(kube, namespace: str, name: str) -> int | None:
    """The count a version's autoscaler is pinned to (minReplicas == maxReplicas), else None."""
    hpa = _hpa(kube, namespace, name)
    spec = (hpa or {}).get("spec") or {}
    return spec["minReplicas"] if spec and spec.get("minReplicas") == spec.get("maxReplicas") else None


def _split(kube, namespace: str) -> dict[int, tuple[int, int]]:
    """status.variants as version -> (replicas, weight)."""
    status = get(kube, namespace, "Deployment", "iris").get("status") or {}
    return {v["version"]: (v["replicas"], v["weight"]) for v in status.get("variants") or []}


def test_the_hpa_scales_versions_and_a_canary_keeps_its_split(kube, namespace, iris_v1, metrics_api) -> None:
    body = sample("Deployment")
    body["spec"]["replicas"] = 1
    body["spec"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 2, "targetRequestsPerSecond": 10}
    # One long step at 50 %: the canary stays in it (no analysis) while the load moves the stable.
    body["spec"]["strategy"] = {"type": "Canary", "canary": {"steps": [{"weight": 50, "pause": "1h"}]}}
    create(kube, namespace, body)
    wait_reason(kube, namespace, "Deployment", "iris", "Serving", timeout=TIMEOUT)

    hpa = wait_for(lambda: _hpa(kube, namespace, "iris-v1"), timeout=30, message="v1's HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "iris-v1"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 2)
    assert hpa["spec"]["metrics"] == [{"type": "Pods", "pods": {
        "metric": {"name": "kultivar_requests_per_second"},
        "target": {"type": "AverageValue", "averageValue": "10"}}}]
    owner = hpa["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("Deployment", "iris")
    assert hpa["metadata"]["labels"]["kultivar.io/model-version"] == "1"

    # v2 becomes production: a canary at 50 % next to a stable of 1 pod is pinned to 1 pod.
    run = sample("TrainingRun")
    run["metadata"]["name"] = "iris-logreg-2"
    run["spec"]["estimator"]["params"]["C"] = BETTER_C
    create(kube, namespace, run)
    wait_reason(kube, namespace, "TrainingRun", "iris-logreg-2", "Registered", timeout=TIMEOUT)
    assert_promoted(kube, namespace, "iris", 2)
    wait_for(lambda: ((get(kube, namespace, "Deployment", "iris").get("status") or {}).get("rollout") or {})
             .get("state") == "Stepping", timeout=TIMEOUT, message="canary v2 in its step")
    assert _pinned(kube, namespace, "iris-v2") == 1
    assert _split(kube, namespace) == {1: (1, 50), 2: (1, 50)}

    # Load: 15 requests per second per pod against a target of 10. The real HPA controller raises the stable to
    # 2 pods (its maximum); the operator re-pins the canary to 2, whatever the canary's own load says.
    metrics_api.set_load(namespace, requests_per_second=15)
    wait_for(lambda: _replicas(kube, namespace, "iris-v1") == 2, timeout=120,
             message=f"the HPA scales v1 to 2 (HPA: {_hpa(kube, namespace, 'iris-v1')})")
    wait_for(lambda: _pinned(kube, namespace, "iris-v2") == 2, timeout=60, message="the canary re-pinned to 2")
    wait_for(lambda: _replicas(kube, namespace, "iris-v2") == 2, timeout=120, message="the canary at 2 pods")
    wait_for(lambda: _split(kube, namespace) == {1: (2, 50), 2: (2, 50)}, timeout=60,
             message=f"the split in status (now {_split(kube, namespace)})")
    # The autoscaler read the metric and chose the count; the scale subresource wrote it, not the operator.
    status = (_hpa(kube, namespace, "iris-v1") or {}).get("status") or {}
    assert status["desiredReplicas"] == 2
    assert status["currentMetrics"][0]["pods"]["current"]["averageValue"] == "15"
    assert any(p.startswith(f"/apis/custom.metrics.k8s.io/v1beta2/namespaces/{namespace}/pods/")
               for p in metrics_api.served)
    _, apps = kube.raw("GET", APPS.format(ns=namespace, name="iris-v1"))
    owners = [m for m in apps["metadata"]["managedFields"]
              if "f:replicas" in ((m.get("fieldsV1") or {}).get("f:spec") or {})]
    assert [m.get("subresource") for m in owners] == ["scale"], owners

    # Another reconcile (a spec change) does not size the stable back to spec.replicas.
    generation = patch_spec(kube, namespace, "Deployment", "iris", {"monitoring": {"threshold": 0.3}})[
        "metadata"]["generation"]
    wait_for(lambda: (get(kube, namespace, "Deployment", "iris").get("status") or {}).get("observedGeneration")
             == generation, timeout=60, message="the spec change reconciled")
    assert _replicas(kube, namespace, "iris-v1") == 2 and _replicas(kube, namespace, "iris-v2") == 2

    # Autoscaling off: the autoscalers go and the operator writes replicas again (spec.replicas, 1 : 1).
    patch_spec(kube, namespace, "Deployment", "iris", {"autoscaling": None})
    wait_for(lambda: _hpa(kube, namespace, "iris-v1") is None and _hpa(kube, namespace, "iris-v2") is None,
             timeout=60, message="the autoscalers removed")
    wait_for(lambda: _replicas(kube, namespace, "iris-v1") == 1 and _replicas(kube, namespace, "iris-v2") == 1,
             timeout=60, message="spec.replicas written again")


def test_a_cpu_target_scales_on_metrics_k8s_io(kube, namespace, iris_v1, metrics_api) -> None:
    body = sample("Deployment")
    body["spec"]["replicas"] = 1
    body["spec"]["resources"] = {"requests": {"cpu": "100m"}}
    body["spec"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 2, "targetCPUUtilizationPercentage": 50}
    create(kube, namespace, body)
    wait_reason(kube, namespace, "Deployment", "iris", "Serving", timeout=TIMEOUT)
    hpa = wait_for(lambda: _hpa(kube, namespace, "iris-v1"), timeout=30, message="v1's HorizontalPodAutoscaler")
    assert hpa["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]
    # 150m used of 100m requested is 150 % against a target of 50 %: the HPA asks for 3 pods, capped at 2.
    metrics_api.set_load(namespace, cpu_millicores=150)
    wait_for(lambda: _replicas(kube, namespace, "iris-v1") == 2, timeout=120,
             message=f"the HPA scales v1 to 2 on CPU (HPA: {_hpa(kube, namespace, 'iris-v1')})")
    status = (_hpa(kube, namespace, "iris-v1") or {}).get("status") or {}
    assert status["currentMetrics"][0]["resource"]["current"]["averageUtilization"] == 150
    assert any(p == f"/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods" for p in metrics_api.served)
    wait_for(lambda: _split(kube, namespace) == {1: (2, 100)}, timeout=60,
             message=f"status reports the autoscaled count (now {_split(kube, namespace)})")
