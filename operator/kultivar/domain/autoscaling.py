"""Autoscaling beside rollouts (spec.autoscaling): one autoscaling/v2 HorizontalPodAutoscaler per served version.

With autoscaling the operator writes a version's apps/v1 Deployment's `replicas` only when it creates it; after
that the version's HorizontalPodAutoscaler owns the count, and the operator steers it only through the
autoscaler's minReplicas and maxReplicas. Everything is sized from the stable version's *current* count
(scale_base), which its autoscaler moves with the load:

- the stable version (and an A/B test's top variant) scales freely between minReplicas and maxReplicas;
- router replicas: traffic follows pod counts, so any other version is pinned (minReplicas = maxReplicas) to the
  count its weight needs next to the stable's current count (canary c = n * w / (100 - w), capped at
  maxReplicas). When the stable scales, the next reconcile (the apps/v1 Deployment's change wakes it) re-pins the
  canary, and the split stays what the step says;
- router gatewayAPI: the HTTPRoute sets the weights whatever the counts, so every version scales on its own load;
  a canary's minReplicas is its share of the stable's current count, so it is sized before its traffic arrives
  (and, while promoting, as large as the stable it replaces).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from kultivar.api.deployment import Autoscaling, DeploymentSpec
from kultivar.domain.jobs import owner_labels, owner_reference
from kultivar.domain.labels import DEPLOYMENT_LABEL, VERSION_LABEL
from kultivar.domain.rollout import Pods

HPA_API = "autoscaling/v2"


def scale_base(spec: DeploymentSpec, stable: int | None, pods: dict[int, Pods]) -> int | None:
    """The count the rollout sizes versions from (what spec.replicas is without autoscaling), or None without
    autoscaling: the stable version's current replicas within minReplicas..maxReplicas; before any version is
    stable, spec.replicas. For an A/B test, the total whose top variant's share is that count."""
    scaling = spec.autoscaling
    if scaling is None:
        return None
    current = pods[stable].desired if stable is not None and stable in pods else 0
    base = scaling.clamp(current if current >= 1 else spec.replicas)
    ab = spec.strategy.abTest
    if spec.strategy.type == "ABTest" and ab is not None:
        top = max(v.weight for v in ab.variants)  # >= 50: the weights add up to 100 over at least two
        return max(1, round(base * 100 / top))
    return base


def quantity(value: float) -> str:
    """A number as a Kubernetes quantity, to the milli-unit (10 -> "10", 0.25 -> "250m")."""
    milli = int((Decimal(str(value)) * 1000).to_integral_value())
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def metrics(scaling: Autoscaling) -> list[dict[str, Any]]:
    """The autoscaler's metric targets: CPU from metrics.k8s.io, requests per second as a Pods metric."""
    out: list[dict[str, Any]] = []
    if scaling.targetCPUUtilizationPercentage is not None:
        out.append({"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": scaling.targetCPUUtilizationPercentage}}})
    if scaling.targetRequestsPerSecond is not None:
        out.append({"type": "Pods", "pods": {"metric": {"name": scaling.requestsPerSecondMetric}, "target": {
            "type": "AverageValue", "averageValue": quantity(scaling.targetRequestsPerSecond)}}})
    return out


def bounds(spec: DeploymentSpec, version: int, planned: int, stable: int | None) -> tuple[int, int]:
    """minReplicas and maxReplicas of one version's autoscaler (planned: the rollout's count for it)."""
    scaling = spec.autoscaling
    assert scaling is not None
    if version == stable:
        return scaling.minReplicas, scaling.maxReplicas
    pinned = max(1, min(planned, scaling.maxReplicas))
    if spec.traffic.router == "replicas":
        return pinned, pinned
    return pinned, scaling.maxReplicas


def autoscaler(obj: dict[str, Any], spec: DeploymentSpec, deployment: dict[str, Any], version: int,
               stable: int | None) -> dict[str, Any]:
    """The HorizontalPodAutoscaler of one version's apps/v1 Deployment (same name, same labels)."""
    scaling = spec.autoscaling
    assert scaling is not None
    low, high = bounds(spec, version, int(deployment["spec"]["replicas"]), stable)
    name = deployment["metadata"]["name"]
    labels = {**owner_labels(obj), DEPLOYMENT_LABEL: obj["metadata"]["name"], VERSION_LABEL: str(version)}
    return {
        "apiVersion": HPA_API,
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": obj["metadata"]["namespace"], "labels": labels,
                     "ownerReferences": [owner_reference(obj)]},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": low,
            "maxReplicas": high,
            "metrics": metrics(scaling),
        },
    }
