"""The Deployment reconcile's decisions, in the order the controller runs them. Pure.

    request = metrics_needed(observed, config, now)     # which numbers this reconcile must read
    observed = k8s.observe.deployment_metrics(...)      # the one read of them (scrape or Prometheus, runs)
    planned = plan_deployment(observed, config, now)    # serving objects, rollout, drift, retraining

plan_serving decides the versions, their objects and the rollout; this module adds what the metrics read for
drift decide: the Drifted condition, status.drift and status.lastRetrain, and a retraining run to create with
the Dataset refresh it needs (both as Plan actions that k8s/apply carries out).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from kultivar.config import OperatorConfig
from kultivar.domain.conditions import Cond, now_rfc3339
from kultivar.domain.drift import DRIFTED, drift_due, drift_due_in, drift_since, plan_monitoring
from kultivar.domain.jobs import owner_reference
from kultivar.domain.labels import DEPLOYMENT_LABEL, REFRESH_ANNOTATION
from kultivar.domain.plan import Annotate, Plan
from kultivar.domain.reasons import Reason
from kultivar.domain.rollout import metrics_since, windowed
from kultivar.domain.serving import DEGRADED, DeploymentObserved, ServingPlan, plan_serving, version_record

# How soon to measure drift again after the metrics source failed.
DRIFT_RETRY_SECONDS = 60.0


@dataclass(frozen=True)
class MetricsRequest:
    """The numbers one reconcile must read, and from where."""

    source: Literal["pods", "prometheus"] = "pods"
    url: str | None = None  # the Prometheus API (source prometheus)
    serving: list[int] = field(default_factory=list)  # versions whose request counts the rollout needs
    serving_window: float | None = None  # seconds the serving window covers (prometheus; None: none is open)
    drift_version: int | None = None  # the stable version whose input counts drift needs (None: not due)
    drift_window: float | None = None  # seconds the drift window covers (prometheus)

    @property
    def anything(self) -> bool:
        return bool(self.serving) or self.drift_version is not None


def _seconds_since(since: datetime | None, now: datetime) -> float | None:
    """The length of a metrics window that began at since (None: no window is open)."""
    return None if since is None else max(0.0, (now - since).total_seconds())


def metrics_needed(observed: DeploymentObserved, config: OperatorConfig, now: datetime) -> MetricsRequest:
    """What to read before planning: the rollout's analysis window when one is due, and the stable version's
    inputs when its drift window opens or closes (only while it has pods to ask)."""
    planned = plan_serving(observed, config, now)
    spec = planned.spec
    if spec is None:
        return MetricsRequest()
    status = observed.obj.get("status") or {}
    stable = planned.plan.status.get("stableVersion")
    drift = stable if drift_due(spec.monitoring, status.get("drift"), stable, now) and observed.pods else None
    versions = sorted(observed.pods or {})
    if windowed(spec):  # Prometheus answers each window's counts directly
        return MetricsRequest(
            "prometheus", spec.strategy.canary.analysis.prometheusUrl,
            serving=versions if planned.needs_metrics else [],
            serving_window=_seconds_since(metrics_since(spec, status), now),
            drift_version=drift,
            drift_window=_seconds_since(drift_since(status.get("drift"), drift), now) if drift is not None else None)
    if planned.needs_metrics or drift is not None:  # one scrape of every version serves both
        return MetricsRequest("pods", serving=versions, drift_version=drift)
    return MetricsRequest("pods")


def _requeue(plan: Plan, seconds: float) -> None:
    plan.requeue_after = min(plan.requeue_after or seconds, seconds)


def drift_runs(runs: list[dict[str, Any]], deployment: str) -> bool:
    """Whether a retraining run this Deployment started is still going."""
    return any((r["metadata"].get("labels") or {}).get(DEPLOYMENT_LABEL) == deployment
               and not (r.get("status") or {}).get("completionTime") for r in runs)


def _monitor(observed: DeploymentObserved, planned: ServingPlan, now: datetime) -> None:
    """Drift on the stable version; a persistent drift starts one retraining run on refreshed data."""
    spec, drift, plan, obj = planned.spec, observed.drift, planned.plan, observed.obj
    assert spec is not None and drift is not None
    if drift.error is not None:
        plan.conditions.append(Cond(DRIFTED, None, Reason.METRICS_UNAVAILABLE,
                                    f"drift not measured: Prometheus failed: {drift.error}"))
        _requeue(plan, DRIFT_RETRY_SECONDS)
        return
    record = version_record(observed.model or {}, drift.version) or {}
    source = next((r for r in drift.runs if r["metadata"]["name"] == record.get("trainingRun")), None)
    mon = plan_monitoring(obj, spec.monitoring, drift.version, drift.snapshot, source,
                          drift_runs(drift.runs, obj["metadata"]["name"]), owner_reference(obj), now,
                          windowed=windowed(spec))
    if mon is None:
        return
    plan.status.update(mon.status)
    plan.conditions.append(mon.drifted)
    plan.events.extend(mon.events)
    if mon.requeue_after is not None:
        _requeue(plan, mon.requeue_after)
    if mon.refresh_dataset:  # validate the newest data before the run trains on it
        plan.annotate.append(Annotate("Dataset", mon.refresh_dataset, {REFRESH_ANNOTATION: now_rfc3339(now)}))
    if mon.create_run:
        plan.create.append(mon.create_run)


def plan_deployment(observed: DeploymentObserved, config: OperatorConfig, now: datetime) -> ServingPlan:
    """Everything one reconcile of a Deployment does, from what metrics_needed asked to read."""
    planned = plan_serving(observed, config, now)
    if planned.spec is None:
        return planned
    status = observed.obj.get("status") or {}
    if observed.drift is not None:
        _monitor(observed, planned, now)
    elif due_in := drift_due_in(planned.spec.monitoring, status.get("drift"),
                                planned.plan.status.get("stableVersion"), now):
        _requeue(planned.plan, due_in)  # wake up when the open window closes
    return planned


def route_refused(planned: ServingPlan, reason: str, message: str) -> None:
    """The pods serve, but the cluster refused the HTTPRoute: the traffic split is not what the spec asks."""
    planned.plan.conditions.append(Cond(DEGRADED, True, reason, message))
