"""The Deployment reconcile's decisions, in the order the controller runs them. Pure.

    request = metrics_needed(observed, config, now)     # which numbers this reconcile must read
    observed = k8s.observe.deployment_metrics(...)      # the one read of them (scrape or Prometheus, runs)
    planned = plan_deployment(observed, config, now)    # serving objects, rollout, drift, retraining

plan_serving decides the versions, their objects and the rollout; this module adds what the metrics read for
drift decide: the Drifted condition, status.drift (with its bounded history of judged windows, domain.drift_history),
status.lastRetrain and status.retrainWait, the Dataset refresh a retraining asks for first, and the retraining run
once that refresh has found new data (Plan actions that k8s/apply carries out). While a retraining waits for its
refresh, every reconcile reads the stable version's inputs and its Dataset (request.dataset,
k8s.observe.retrain_dataset) to see whether the refresh has finished.
Last, spec.strategy.shadow (kultivar.domain.shadow) adds the shadow's objects beside the versions plan_serving
settled on, and status.shadow from the counters read when its interval is due (request.shadow).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from kultivar.config import OperatorConfig
from kultivar.domain.abtest import ab_decides
from kultivar.domain.autoscaling import scale_base
from kultivar.domain.conditions import Cond, get_condition, now_rfc3339
from kultivar.domain.drift import DRIFTED, awaiting_refresh, drift_due, drift_due_in, drift_since, plan_monitoring
from kultivar.domain.drift_history import with_history
from kultivar.domain.jobs import owner_reference
from kultivar.domain.labels import DEPLOYMENT_LABEL, REFRESH_ANNOTATION, VERSION_LABEL
from kultivar.domain.performance import (
    UNDERPERFORMING,
    performance_due,
    performance_due_in,
    performance_since,
    plan_performance,
)
from kultivar.domain.plan import Annotate, Plan
from kultivar.domain.reasons import Reason
from kultivar.domain.rollout import metrics_since, windowed
from kultivar.domain.server_failures import report_server_failures, served_versions
from kultivar.domain.serving import (
    DEGRADED,
    DeploymentObserved,
    ServingPlan,
    plan_serving,
    server_deployment,
    version_record,
)
from kultivar.domain.shadow import ShadowPlan, plan_shadow, shadow_window, wanted

# How soon to measure drift again after the metrics source failed.
DRIFT_RETRY_SECONDS = 60.0


@dataclass(frozen=True)
class MetricsRequest:
    """The numbers one reconcile must read, and from where."""

    source: Literal["pods", "prometheus"] = "pods"
    url: str | None = None  # the Prometheus API (source prometheus)
    serving: list[int] = field(default_factory=list)  # versions whose request counts the rollout needs
    serving_window: float | None = None  # seconds the serving window covers (prometheus; None: none is open)
    serving_feedback: bool = False  # the serving window's feedback counts too (a canary judged on outcomes)
    drift_version: int | None = None  # the stable version whose input counts drift needs (None: not due)
    drift_window: float | None = None  # seconds the drift window covers (prometheus)
    performance: list[int] = field(default_factory=list)  # versions whose feedback is due (empty: not due)
    performance_window: float | None = None  # seconds the performance window covers (prometheus)
    dataset: str | None = None  # the Dataset the drift version was trained from: a retraining refreshes it
    shadow: int | None = None  # the shadow version whose counters (and the stable servers') are due
    shadow_window: float | None = None  # seconds the shadow's window covers (prometheus)

    @property
    def anything(self) -> bool:
        return bool(self.serving) or self.drift_version is not None or bool(self.performance) \
            or self.shadow is not None


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
    due = drift_due(spec.monitoring, status.get("drift"), stable, now) or awaiting_refresh(status, stable)
    drift = stable if due and observed.pods else None
    dataset = (version_record(observed.model or {}, drift) or {}).get("dataset") if drift is not None else None
    versions = sorted(observed.pods or {})
    performance = spec.monitoring.performance
    # Feedback about any version may be counted by any pod: every version's pods are read.
    labelled = versions if performance_due(performance, status.get("performance"), stable, now) else []
    shadow = _plan_shadow(observed, planned, config, now) if _settled(planned) else None
    copied = shadow.status.get("version") if shadow and shadow.needs_metrics and shadow.status else None
    if windowed(spec):  # Prometheus answers each window's counts directly
        return MetricsRequest(
            "prometheus", spec.strategy.canary.analysis.prometheusUrl,
            serving=versions if planned.needs_metrics else [],
            serving_window=_seconds_since(metrics_since(spec, status), now),
            # Feedback too when a canary is judged on outcomes or an A/B test decides on them.
            serving_feedback=performance is not None or ab_decides(spec),
            drift_version=drift,
            drift_window=_seconds_since(drift_since(status.get("drift"), drift), now) if drift is not None else None,
            performance=labelled,
            performance_window=_seconds_since(performance_since(performance, status.get("performance"), stable),
                                              now),
            dataset=dataset, shadow=copied, shadow_window=shadow_window(observed.obj, now) if copied else None)
    if planned.needs_metrics or drift is not None or labelled or copied:  # one scrape of every version serves all
        return MetricsRequest("pods", serving=versions, drift_version=drift, performance=labelled,
                              dataset=dataset, shadow=copied)
    return MetricsRequest("pods")


def _requeue(plan: Plan, seconds: float) -> None:
    plan.requeue_after = min(plan.requeue_after or seconds, seconds)


def drift_runs(runs: list[dict[str, Any]], deployment: str) -> bool:
    """Whether a retraining run this Deployment started is still going."""
    return any((r["metadata"].get("labels") or {}).get(DEPLOYMENT_LABEL) == deployment
               and not (r.get("status") or {}).get("completionTime") for r in runs)


def _monitor(observed: DeploymentObserved, planned: ServingPlan, now: datetime,
             dataset: dict[str, Any] | None) -> None:
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
                          windowed=windowed(spec), dataset=dataset, production_digest=record.get("datasetDigest"))
    if mon is None:
        return
    plan.status.update(mon.status)
    if mon.status.get("drift") is not None:  # replaced whole: the judged windows before it are carried over
        previous = ((obj.get("status") or {}).get("drift") or {}).get("history")
        plan.status["drift"] = with_history(mon.status["drift"], previous, mon.judged)
    if mon.drifted is not None:
        plan.conditions.append(mon.drifted)
    plan.events.extend(mon.events)
    if mon.requeue_after is not None:
        _requeue(plan, mon.requeue_after)
    if mon.refresh_dataset:  # validate the newest data before a run trains on it
        plan.annotate.append(Annotate("Dataset", mon.refresh_dataset, {REFRESH_ANNOTATION: now_rfc3339(now)}))
    if mon.create_run:
        plan.create.append(mon.create_run)


def _judge_performance(observed: DeploymentObserved, planned: ServingPlan, now: datetime) -> None:
    """Live performance of the served versions; the stable one below its floor starts one retraining run (unless
    drift started one in this reconcile, or one is still going)."""
    spec, read, plan, obj = planned.spec, observed.performance, planned.plan, observed.obj
    assert spec is not None and spec.monitoring.performance is not None and read is not None
    stable = plan.status.get("stableVersion")
    if stable is None:
        return
    if read.error is not None or read.feedback is None:
        plan.conditions.append(Cond(UNDERPERFORMING, None, Reason.METRICS_UNAVAILABLE,
                                    f"live performance not measured: Prometheus failed: {read.error}"))
        _requeue(plan, DRIFT_RETRY_SECONDS)
        return
    record = version_record(observed.model or {}, stable) or {}
    source = next((r for r in read.runs if r["metadata"]["name"] == record.get("trainingRun")), None)
    starting = any(o.get("kind") == "TrainingRun" for o in plan.create)
    out = plan_performance(obj, spec.monitoring.performance, spec.monitoring.retrain, stable,
                           sorted(observed.pods or {}), read.feedback, source,
                           starting or drift_runs(read.runs, obj["metadata"]["name"]), owner_reference(obj), now,
                           windowed=windowed(spec))
    plan.status.update(out.status)
    if out.condition is not None:
        plan.conditions.append(out.condition)
    elif (previous := get_condition((obj.get("status") or {}).get("conditions"), UNDERPERFORMING)) is not None:
        # The window is open: the last verdict stands (re-stated for this generation).
        status = {"True": True, "False": False}.get(previous.get("status", ""))
        plan.conditions.append(Cond(UNDERPERFORMING, status, previous.get("reason") or Reason.MEASURING,
                                    previous.get("message") or ""))
    plan.events.extend(out.events)
    _requeue(plan, out.requeue_after)
    if out.refresh_dataset:
        plan.annotate.append(Annotate("Dataset", out.refresh_dataset, {REFRESH_ANNOTATION: now_rfc3339(now)}))
    if out.create_run:
        plan.create.append(out.create_run)


def _performance(observed: DeploymentObserved, planned: ServingPlan, now: datetime) -> None:
    spec, plan = planned.spec, planned.plan
    assert spec is not None
    status = observed.obj.get("status") or {}
    performance = spec.monitoring.performance
    if performance is None:
        if status.get("performance") is not None:  # no longer watched: no verdict stands
            plan.status["performance"] = None
            plan.conditions.append(Cond(UNDERPERFORMING, None, Reason.NOT_WATCHED,
                                        "spec.monitoring.performance is unset"))
        return
    if observed.performance is not None:
        _judge_performance(observed, planned, now)
    elif due_in := performance_due_in(performance, status.get("performance"), plan.status.get("stableVersion"),
                                      now):
        _requeue(plan, due_in)


def _settled(planned: ServingPlan) -> bool:
    """Whether plan_serving decided the versions (stable, canary) this reconcile. When it is blocked (the Model
    or the artifact store missing, a spec it cannot use) the shadow is left as it is, objects and status alike,
    like every other served object."""
    return planned.spec is not None and "stableVersion" in planned.plan.status


def _plan_shadow(observed: DeploymentObserved, planned: ServingPlan, config: OperatorConfig,
                 now: datetime) -> ShadowPlan:
    """spec.strategy.shadow's plan (kultivar.domain.shadow) for the versions the serving plan settled on."""
    spec, obj = planned.spec, observed.obj
    assert spec is not None
    stable, canary = planned.plan.status.get("stableVersion"), planned.plan.status.get("canaryVersion")
    target = wanted(spec, stable, canary, observed.model or {})
    record = version_record(observed.model or {}, target[0]) if target[0] is not None else None
    server = server_deployment(obj, spec, record, 1, config) if record is not None else None
    # Autoscaled: sized from the stable's current count, as a canary is (kultivar.domain.autoscaling).
    return plan_shadow(obj, spec, target, stable, server, observed.shadow, now,
                       stable_replicas=scale_base(spec, stable, observed.pods or {}))


def _shadow(observed: DeploymentObserved, planned: ServingPlan, config: OperatorConfig, now: datetime) -> None:
    """Add the shadow's objects to the serving plan: its Deployment and Service, the mirror filter on the route
    (gatewayAPI) or the forwarding settings on the stable version's servers (replicas), and status.shadow."""
    status = observed.obj.get("status") or {}
    spec = planned.spec
    if spec is None or not _settled(planned) or (spec.strategy.shadow is None and not status.get("shadow")
                                                 and not (observed.shadow and observed.shadow.version)):
        return
    shadow = _plan_shadow(observed, planned, config, now)
    plan = planned.plan
    plan.status["shadow"] = shadow.status
    planned.remove_shadow = shadow.remove
    if shadow.deployment is not None and shadow.service is not None:
        planned.deployments.append(shadow.deployment)
        planned.services.append(shadow.service)
    if shadow.mirror is not None and planned.routes:  # every request copied, whichever version answers it
        for rule in planned.routes[0]["spec"]["rules"]:
            rule["filters"] = [*rule.get("filters", []), shadow.mirror]
    stable = plan.status.get("stableVersion")
    for server in planned.deployments:
        labels = server["metadata"]["labels"]
        if shadow.stable_env and labels.get(VERSION_LABEL) == str(stable) and DEPLOYMENT_LABEL in labels:
            container = server["spec"]["template"]["spec"]["containers"][0]
            env = {e["name"]: e["value"] for e in container["env"]} | shadow.stable_env
            container["env"] = [{"name": k, "value": v} for k, v in sorted(env.items())]
    if shadow.requeue_after is not None:
        _requeue(plan, shadow.requeue_after)
    plan.events.extend(shadow.events)


def plan_deployment(observed: DeploymentObserved, config: OperatorConfig, now: datetime,
                    dataset: dict[str, Any] | None = None) -> ServingPlan:
    """Everything one reconcile of a Deployment does, from what metrics_needed asked to read (dataset: the
    Dataset named by request.dataset, as k8s.observe.retrain_dataset read it)."""
    planned = plan_serving(observed, config, now)
    if planned.spec is None:
        return planned
    status = observed.obj.get("status") or {}
    if observed.drift is not None:
        _monitor(observed, planned, now, dataset)
    elif due_in := drift_due_in(planned.spec.monitoring, status.get("drift"),
                                planned.plan.status.get("stableVersion"), now):
        _requeue(planned.plan, due_in)  # wake up when the open window closes
    _performance(observed, planned, now)
    _shadow(observed, planned, config, now)
    if observed.server_failures is not None:  # read: a version is not ready yet
        report_server_failures(planned.plan, observed.server_failures, served_versions(planned.deployments),
                               observed.obj["metadata"]["name"])
    return planned


def route_refused(planned: ServingPlan, reason: str, message: str) -> None:
    """The pods serve, but the cluster refused the HTTPRoute: the traffic split is not what the spec asks."""
    planned.plan.conditions.append(Cond(DEGRADED, True, reason, message))
