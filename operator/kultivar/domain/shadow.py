"""Shadow traffic (spec.strategy.shadow): a candidate version gets a copy of live requests and never answers users.
Pure: what serves the shadow, how copies reach it, and status.shadow from the counters read.

The shadow runs as its own apps/v1 Deployment ``<name>-shadow`` behind its own Service ``<name>-shadow``. Its pods
carry ``kultivar.io/shadow-of: <name>`` instead of ``kultivar.io/deployment``, so the Service users call (which
selects ``kultivar.io/deployment``) never sends them a user's request. How copies reach it depends on the router:

* gatewayAPI: the HTTPRoute's default rule gets a ``RequestMirror`` filter with ``percent`` to ``<name>-shadow``.
  The Gateway discards the mirror's answers, so agreement cannot be counted per request there; status reports the
  shadow's own request, error and latency numbers, the PSI between its and the stable's prediction distributions,
  and its live metric from feedback.
* replicas: the stable version's servers get ``KULTIVAR_SHADOW_URL``/``_VERSION``/``_PERCENT`` and forward a
  sampled copy of each answered request after answering it, on a bounded queue (kultivar.serving.shadow); they
  compare the shadow's answer with their own and count rows that agree, forwarding errors and drops.

Every ``canary.analysis.interval`` the numbers since the window began are measured (pods: the difference to a
baseline kept in status.shadow.baseline; prometheus: increase() over the window), as for an A/B test.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kultivar.api.common import parse_duration
from kultivar.api.deployment import DeploymentSpec
from kultivar.domain.conditions import now_rfc3339, parse_time
from kultivar.domain.jobs import owner_labels, owner_reference
from kultivar.domain.labels import DEPLOYMENT_LABEL, SHADOW_LABEL, VERSION_LABEL
from kultivar.domain.metrics import Snapshot, distribution_shift, summarize
from kultivar.domain.performance import Feedback, live_metric
from kultivar.domain.plan import Event
from kultivar.domain.rollout import Pods
from kultivar.domain.server_failures import STARTING_RECHECK_SECONDS, ServerFailure

SHADOW_ENV_URL = "KULTIVAR_SHADOW_URL"
SHADOW_ENV_VERSION = "KULTIVAR_SHADOW_VERSION"
SHADOW_ENV_PERCENT = "KULTIVAR_SHADOW_PERCENT"


def shadow_name(name: str) -> str:
    return f"{name}-shadow"


@dataclass(frozen=True)
class ShadowObserved:
    """The shadow's apps/v1 Deployment as found (version None: there is none) and, when metrics_needed asked,
    the counters of the stable version's servers and of the shadow's, per version (cumulative with metricsSource
    pods, the window's with prometheus)."""

    version: int | None = None
    pods: Pods | None = None
    metrics: dict[int, Snapshot] | None = None
    error: str | None = None  # the metrics source failed (why)
    failure: ServerFailure | None = None  # a shadow pod's server refused to start for good (read while not ready)


@dataclass
class ShadowPlan:
    """What shadow traffic adds to the serving plan."""

    deployment: dict[str, Any] | None = None  # the shadow's apps/v1 Deployment (None: none must exist)
    service: dict[str, Any] | None = None
    mirror: dict[str, Any] | None = None  # the HTTPRoute filter (router gatewayAPI)
    stable_env: dict[str, str] = field(default_factory=dict)  # on the stable version's server pods (replicas)
    status: dict[str, Any] | None = None  # status.shadow (None: remove it)
    remove: bool = False  # delete the shadow Deployment that exists
    needs_metrics: bool = False
    requeue_after: float | None = None
    events: list[Event] = field(default_factory=list)


def wanted(spec: DeploymentSpec, stable: int | None, canary: int | None,
           model: dict[str, Any]) -> tuple[int | None, str]:
    """The version to run as a shadow now, or None and why it waits."""
    shadow = spec.strategy.shadow
    if shadow is None:
        return None, ""
    known = {int(v["version"]) for v in (model.get("status") or {}).get("versions") or []}
    if shadow.version not in known:
        return None, (f"Model {spec.modelRef.name!r} has no version {shadow.version}; fix "
                      "spec.strategy.shadow.version")
    if stable is None:
        return None, "waiting for a stable version whose traffic to copy"
    if shadow.version in (stable, canary):
        role = "stable" if shadow.version == stable else "canary"
        return None, (f"v{shadow.version} is the {role} version and answers users, so nothing is copied to it; "
                      "remove spec.strategy.shadow or name another version")
    return shadow.version, ""


def shadow_objects(server: dict[str, Any], obj: dict[str, Any], replicas: int) -> tuple[dict[str, Any],
                                                                                           dict[str, Any]]:
    """The shadow's Deployment (from the server Deployment the serving plan made for its version) and Service.

    Its pods are labelled shadow-of instead of deployment: out of the users' Service, out of the rollout's view.
    The selector names no version, so another shadow version rolls the same Deployment (selectors are
    immutable)."""
    name = obj["metadata"]["name"]
    deployment = json.loads(json.dumps(server))
    version = deployment["metadata"]["labels"][VERSION_LABEL]
    labels = {**owner_labels(obj), SHADOW_LABEL: name, VERSION_LABEL: version}
    deployment["metadata"].update(name=shadow_name(name), labels=labels)
    deployment["spec"]["replicas"] = replicas
    deployment["spec"]["selector"] = {"matchLabels": {SHADOW_LABEL: name}}
    template = deployment["spec"]["template"]["metadata"]["labels"]
    template.pop(DEPLOYMENT_LABEL, None)
    template.update({SHADOW_LABEL: name, VERSION_LABEL: version})
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": shadow_name(name), "namespace": obj["metadata"]["namespace"],
                     "labels": owner_labels(obj), "ownerReferences": [owner_reference(obj)]},
        "spec": {"selector": {SHADOW_LABEL: name},
                 "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]},
    }
    return deployment, service


def mirror_filter(name: str, percent: int) -> dict[str, Any]:
    """The Gateway API filter that copies percent of a rule's requests to the shadow's Service."""
    return {"type": "RequestMirror",
            "requestMirror": {"backendRef": {"name": shadow_name(name), "port": 80}, "percent": percent}}


def forwarding_env(obj: dict[str, Any], model_name: str, version: int, percent: int) -> dict[str, str]:
    """What the stable servers need to forward copies (router replicas; see kultivar.serving.shadow)."""
    name, ns = obj["metadata"]["name"], obj["metadata"]["namespace"]
    return {SHADOW_ENV_URL: f"http://{shadow_name(name)}.{ns}.svc", SHADOW_ENV_VERSION: str(version),
            SHADOW_ENV_PERCENT: str(percent)}


def _baseline(metrics: dict[int, Snapshot]) -> str:
    return json.dumps({str(v): s.wire(features=False) for v, s in metrics.items()}, sort_keys=True)


def _windowed(metrics: dict[int, Snapshot], baseline: str | None, pods_source: bool) -> dict[int, Snapshot]:
    if not pods_source:
        return metrics
    base = {int(v): Snapshot.from_wire(d) for v, d in json.loads(baseline).items()} if baseline else {}
    return {v: s.minus(base.get(v)) for v, s in metrics.items()}


def _round(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, 6)


def measure(spec: DeploymentSpec, shadow: int, stable: int, window: dict[int, Snapshot]) -> dict[str, Any]:
    """status.shadow's numbers from a window's counters of every version's servers."""
    own = summarize(window.get(shadow, Snapshot()))
    forwarded: dict[str, float] = {}
    for snap in window.values():  # whichever servers forwarded (the stable's; a just promoted one's too)
        for (version, key), count in snap.shadow.items():
            if version == shadow:
                forwarded[key] = forwarded.get(key, 0.0) + count
    agree, disagree = forwarded.get("rows:agree", 0.0), forwarded.get("rows:disagree", 0.0)
    compared = agree + disagree + forwarded.get("rows:compared", 0.0)
    out: dict[str, Any] = {"requests": own.requests, "errorRate": _round(own.error_rate),
                           "latencyP95Seconds": _round(own.latency_p95)}
    if spec.traffic.router == "replicas":
        out.update(compared=round(compared), forwardErrors=round(forwarded.get("requests:error", 0.0)),
                   dropped=round(forwarded.get("requests:dropped", 0.0)))
        if agree + disagree > 0:
            out["agreement"] = _round(agree / (agree + disagree))
        if forwarded.get("rows:compared", 0.0) > 0:
            out["meanAbsDifference"] = _round(forwarded.get("absdiff", 0.0) / forwarded["rows:compared"])
    out["predictionShift"] = _round(distribution_shift(window.get(shadow, Snapshot()).predictions,
                                                       window.get(stable, Snapshot()).predictions))
    performance = spec.monitoring.performance
    if performance is not None:
        feedback = Feedback.of(window.values())
        mine, theirs = live_metric(performance.metric, shadow, feedback), live_metric(performance.metric, stable,
                                                                                     feedback)
        out.update(liveMetric=performance.metric, liveValue=_round(mine.value), labels=mine.labels,
                   stableLiveValue=_round(theirs.value))
    return {k: v for k, v in out.items() if v is not None}


def _message(numbers: dict[str, Any]) -> str:
    parts = [f"{numbers.get('requests', 0)} copies answered"]
    if "agreement" in numbers:
        parts.append(f"agreement {numbers['agreement']:.2%} over {numbers['compared']} rows")
    if "meanAbsDifference" in numbers:
        parts.append(f"mean |difference| {numbers['meanAbsDifference']:g} over {numbers['compared']} rows")
    if "errorRate" in numbers:
        parts.append(f"error rate {numbers['errorRate']:.2%}")
    if "latencyP95Seconds" in numbers:
        parts.append(f"p95 {numbers['latencyP95Seconds']:g}s")
    if numbers.get("dropped"):
        parts.append(f"{numbers['dropped']} copies dropped (queue full)")
    if "liveValue" in numbers:
        parts.append(f"live {numbers['liveMetric']} {numbers['liveValue']:g} on {numbers['labels']} labels")
    return "; ".join(parts)


def plan_shadow(obj: dict[str, Any], spec: DeploymentSpec, target: tuple[int | None, str], stable: int | None,
                server: dict[str, Any] | None, observed: ShadowObserved | None, now: datetime,
                stable_replicas: int | None = None) -> ShadowPlan:
    """Shadow traffic for one reconcile. target: wanted()'s answer; server: the server Deployment made for the
    shadow's version (as for any served version); observed: the shadow as found (None: nothing read);
    stable_replicas: the stable's current count under spec.autoscaling (None: spec.replicas)."""
    observed = observed or ShadowObserved()
    previous = dict((obj.get("status") or {}).get("shadow") or {})
    shadow_spec = spec.strategy.shadow
    version, why = target
    remove = observed.version is not None and version is None
    if shadow_spec is None:
        return ShadowPlan(remove=remove, status=None)
    stamp = now_rfc3339(now)
    analysis = spec.strategy.canary.analysis
    base = {"version": shadow_spec.version, "percent": shadow_spec.percent, "stableVersion": stable,
            "router": spec.traffic.router, "metricsSource": analysis.metricsSource}
    if version is None or server is None or stable is None:
        return ShadowPlan(remove=remove, status={**base, "state": "Waiting", "message": why,
                                                 "startedAt": previous.get("startedAt") or stamp})
    # Sized for its share of the stable's traffic; a Deployment scaled to zero runs no shadow either.
    stable_count = spec.replicas if stable_replicas is None else stable_replicas
    replicas = max(1, math.ceil(stable_count * shadow_spec.percent / 100)) if stable_count else 0
    deployment, service = shadow_objects(server, obj, replicas)
    ready = observed.version == version and observed.pods is not None and observed.pods.ready > 0
    same = all(previous.get(k) == base[k] for k in ("version", "stableVersion", "metricsSource", "router"))
    running = ready or (same and previous.get("state") == "Running")
    plan = ShadowPlan(deployment=deployment, service=service)
    if not running:
        failure = observed.failure if observed.version == version else None
        if failure is not None and failure.version == version:
            return _failed(plan, base, previous, failure, stamp)
        if same and previous.get("state") == "Failed":  # a pod between two crashes says nothing new: it stands
            plan.status = {**previous, **base}
            return plan
        plan.status = {**base, "state": "Starting", "message": f"waiting for v{version}'s shadow pods",
                       "startedAt": stamp}
        # A crash-looping pod changes nothing the operator watches: look again soon for a server that refused.
        plan.requeue_after = STARTING_RECHECK_SECONDS
        return plan
    # Copies flow only once the shadow can answer them: the stable servers are restarted once, not twice.
    if spec.traffic.router == "gatewayAPI":
        plan.mirror = mirror_filter(obj["metadata"]["name"], shadow_spec.percent)
    else:
        plan.stable_env = forwarding_env(obj, spec.modelRef.name, version, shadow_spec.percent)
    interval = parse_duration(analysis.interval).total_seconds()
    pods_source = analysis.metricsSource == "pods"
    if not same or previous.get("state") != "Running":  # a new window
        status = {**base, "state": "Running", "message": "copies flowing; first numbers after one interval",
                  "startedAt": stamp}
        if pods_source:  # the counts to subtract from later readings
            if observed.metrics is None:
                plan.status = {**base, "state": "Starting", "message": "reading the counters the window starts from",
                               "startedAt": previous.get("startedAt") or stamp}
                plan.needs_metrics = True
                return plan
            status["baseline"] = _baseline(observed.metrics)
        plan.status, plan.requeue_after = status, interval
        return plan
    status = {**previous, **base}
    due = (parse_time(previous.get("measuredAt")) or parse_time(previous.get("startedAt")) or now)
    wait = (due - now).total_seconds() + interval
    if wait > 0:
        plan.status, plan.requeue_after = status, wait
        return plan
    if observed.metrics is None:
        if observed.error is not None:
            status["message"] = f"metrics unavailable ({analysis.metricsSource}): {observed.error}"
            plan.status, plan.requeue_after = status, interval
            return plan
        plan.status, plan.needs_metrics = status, True
        return plan
    numbers = measure(spec, version, stable, _windowed(observed.metrics, previous.get("baseline"), pods_source))
    for key in ("requests", "errorRate", "latencyP95Seconds", "compared", "agreement", "meanAbsDifference",
                "forwardErrors", "dropped", "predictionShift", "liveMetric", "liveValue", "labels",
                "stableLiveValue"):
        status[key] = numbers.get(key)
    status.update(measuredAt=stamp, message=_message(numbers))
    plan.status, plan.requeue_after = status, interval
    return plan


def _failed(plan: ShadowPlan, base: dict[str, Any], previous: dict[str, Any], failure: ServerFailure,
            stamp: str) -> ShadowPlan:
    """A shadow whose server refused to start for good: said in status.shadow and once as a Warning Event. Its
    Deployment stays (as a served version's does) for the user to fix the cause or name another version; no copy
    is sent to it, so the stable version is untouched. A pod ready again (a fixed file) is seen on its Deployment's
    next change."""
    message = (f"v{failure.version}'s model server failed: {failure.reason}: {failure.message} (pod {failure.pod}); "
               "nothing is copied to it and the stable version serves on; fix the cause or name another version "
               "in spec.strategy.shadow.version")
    if previous.get("state") != "Failed" or previous.get("version") != failure.version:
        plan.events.append(Event("Warning", "ShadowFailed", message))
    plan.status = {**base, "state": "Failed", "message": message, "startedAt": previous.get("startedAt") or stamp}
    return plan


def shadow_window(obj: dict[str, Any], now: datetime) -> float | None:
    """Seconds the shadow's window covers now (metricsSource prometheus), None when none is open."""
    started = parse_time(((obj.get("status") or {}).get("shadow") or {}).get("startedAt"))
    return None if started is None else max(0.0, (now - started).total_seconds())
