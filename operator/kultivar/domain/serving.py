"""Deployment decisions: which Model version to serve, and the objects that serve it.

Per served version an apps/v1 Deployment `<name>-v<N>` runs `kultivar serve`; one Service `<name>` selects
every version's pods (the replicas router approximates weights by replica counts). The gatewayAPI router adds
a Service per version and an HTTPRoute with exact weights and header matches.

Every serving pod gets the Deployment's namespace and name in its environment; the server puts them on every
metric as the labels kultivar_namespace and kultivar_deployment, which is how metricsSource prometheus finds a
Deployment's series (kultivar.domain.promql) whatever the Prometheus scrape configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from kultivar.api.common import ResourceRequirements, parse_quantity
from kultivar.api.deployment import DeploymentSpec
from kultivar.config import OperatorConfig
from kultivar.domain.abtest import AB_TEST_CONCLUDED, ab_decides, ab_test_condition
from kultivar.domain.autoscaling import autoscaler, scale_base
from kultivar.domain.conditions import READY, Cond, get_condition
from kultivar.domain.jobs import (
    RESTRICTED_CONTAINER_SECURITY,
    RESTRICTED_POD_SECURITY,
    owner_labels,
    owner_reference,
    store_problem,
)
from kultivar.domain.labels import DEPLOYMENT_LABEL, VERSION_LABEL
from kultivar.domain.metrics import Snapshot
from kultivar.domain.performance import Feedback
from kultivar.domain.plan import Event, Plan, blocked, invalid_spec
from kultivar.domain.reasons import Reason
from kultivar.domain.rollout import Pods, RolloutDecision, RolloutInput, decide, stale_reference
from kultivar.domain.server_failures import ServerFailure
from kultivar.domain.shadow import ShadowObserved

HTTP_PORT = 8080
PROGRESSING = "Progressing"
DEGRADED = "Degraded"


def version_name(name: str, version: int) -> str:
    return f"{name}-v{version}"


@dataclass(frozen=True)
class DeploymentObserved:
    obj: dict[str, Any]
    model: dict[str, Any] | None
    pods: dict[int, Pods] | None = None  # per version with an apps/v1 Deployment of ours
    metrics: dict[int, Snapshot] | None = None  # read this reconcile (None: not read)
    store_claim_found: bool | None = None
    metrics_error: str | None = None  # the metrics source failed this reconcile (why)
    drift: DriftObserved | None = None  # the stable version's input counts, read when drift was due
    performance: PerformanceObserved | None = None  # feedback counts, read when a performance window was due
    shadow: ShadowObserved | None = None  # the shadow's Deployment and, when due, its counters (domain.shadow)
    backends: dict[int, ServedBackend] | None = None  # what ready pods run the model with (see backends_needed)
    # Per version, a server pod that refused to start for good (read only while a version is not ready).
    server_failures: dict[int, ServerFailure] | None = None


@dataclass(frozen=True)
class ServedBackend:
    """What a version's ready pod reports running the model with (``parameters`` of its model metadata)."""

    backend: str  # onnx or sklearn
    rejected: bool = False  # a compiled model was recorded but refused (kultivar.serving.model)
    note: str | None = None  # why

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> ServedBackend | None:
        params = metadata.get("parameters") if isinstance(metadata, dict) else None
        if not isinstance(params, dict) or params.get("backend") not in ("onnx", "sklearn"):
            return None  # a server from before backends were reported
        note = params.get("compiledNote")
        return cls(str(params["backend"]), params.get("compiledRejected") is True,
                   str(note)[:1024] if note else None)


def backends_needed(obj: dict[str, Any], pods: dict[int, Pods] | None) -> list[int]:
    """Versions with a ready pod whose backend status.variants does not show yet: each is asked once."""
    known = {int(v["version"]) for v in (obj.get("status") or {}).get("variants") or [] if v.get("backend")}
    return sorted(v for v, p in (pods or {}).items() if p.ready > 0 and v not in known)


@dataclass(frozen=True)
class PerformanceObserved:
    """What live performance monitoring read this reconcile: the feedback counts of every pod (any pod counts
    feedback about any version), cumulative (pods) or the window's (Prometheus)."""

    feedback: Feedback | None  # None: not read, see error
    runs: list[dict[str, Any]]  # the namespace's TrainingRuns
    error: str | None = None  # the metrics source failed (why)


@dataclass(frozen=True)
class DriftObserved:
    """What drift monitoring read this reconcile (see kultivar.domain.deployment.metrics_needed)."""

    version: int  # the stable version whose inputs were read
    snapshot: Snapshot | None  # its counters (None: not read, see error)
    runs: list[dict[str, Any]]  # the namespace's TrainingRuns: the one behind the version, running drift runs
    error: str | None = None  # the metrics source failed (why)


def target_version(spec: DeploymentSpec, model: dict[str, Any]) -> tuple[int | None, str, str]:
    """The version to serve, or None with a reason and message."""
    status = model.get("status") or {}
    known = {v["version"] for v in status.get("versions") or []}
    name = spec.modelRef.name
    if spec.modelRef.version is not None:
        if spec.modelRef.version not in known:
            return None, Reason.VERSION_NOT_FOUND, (
                f"Model {name!r} has no version {spec.modelRef.version} (registered: "
                f"{', '.join(f'v{n}' for n in sorted(known)) or 'none'}); fix spec.modelRef.version")
        return spec.modelRef.version, "", ""
    if not status.get("productionVersion"):
        return None, Reason.NO_PRODUCTION_VERSION, (f"Model {name!r} has no production version yet; train one and "
                                                    "it is served automatically")
    return int(status["productionVersion"]), "", ""


def version_record(model: dict[str, Any], version: int) -> dict[str, Any] | None:
    for v in (model.get("status") or {}).get("versions") or []:
        if v["version"] == version:
            return v
    return None


def server_workers(resources: ResourceRequirements | None) -> int:
    """Server processes per pod: one per whole core of the CPU limit (at least one; no limit: one).

    A server process keeps one core busy at most (one event loop, a one-thread compiled model), so a pod limited
    to N cores uses them with N processes sharing the port (KULTIVAR_SERVE_WORKERS, kultivar.serving.workers).
    """
    limit = (resources.limits or {}).get("cpu") if resources else None
    return min(256, max(1, int(parse_quantity(limit)))) if limit is not None else 1


def server_threads(resources: ResourceRequirements | None) -> int:
    """onnxruntime intra-op threads per server process: the CPU limit's whole cores per worker (at least one;
    no limit: one, like the worker count). With one worker per whole core that is one thread - the event loop
    and a micro-batch of a few rows keep a core busy; a worker left with several cores (past the 256-worker cap)
    gets them for its compiled model."""
    limit = (resources.limits or {}).get("cpu") if resources else None
    if limit is None:
        return 1
    return min(256, max(1, int(parse_quantity(limit) // server_workers(resources))))


def server_deployment(obj: dict[str, Any], spec: DeploymentSpec, record: dict[str, Any], replicas: int,
                      config: OperatorConfig) -> dict[str, Any]:
    """The apps/v1 Deployment serving one version, probed on the V2 health endpoints."""
    name, ns = obj["metadata"]["name"], obj["metadata"]["namespace"]
    version = int(record["version"])
    labels = {**owner_labels(obj), DEPLOYMENT_LABEL: name, VERSION_LABEL: str(version)}
    selector = {DEPLOYMENT_LABEL: name, VERSION_LABEL: str(version)}
    env = {
        "KULTIVAR_MODEL_NAME": spec.modelRef.name,
        "KULTIVAR_MODEL_VERSION": str(version),
        "KULTIVAR_MODEL_URI": record["artifact"]["uri"],
        "KULTIVAR_MODEL_DIGEST": record["artifact"]["digest"],
        "KULTIVAR_STORE": config.store_url,
        "KULTIVAR_HTTP_PORT": str(HTTP_PORT),
        # Exported as metric labels: how metricsSource prometheus selects this Deployment's series.
        "KULTIVAR_NAMESPACE": ns,
        "KULTIVAR_DEPLOYMENT": name,
        # The packages whose types the model file may hold: the same chart value that let training save it.
        "KULTIVAR_ESTIMATOR_PACKAGES": ",".join(config.estimator_packages),
        "KULTIVAR_SERVE_WORKERS": str(server_workers(spec.resources)),
        "KULTIVAR_ONNX_THREADS": str(server_threads(spec.resources)),
        "HOME": "/tmp",
    }
    if spec.serving.unknownCategories == "Refuse":
        # Only when asked: the default leaves the pod template (and so the running servers) as it was.
        env["KULTIVAR_UNKNOWN_CATEGORIES"] = "refuse"
    if record.get("manifestUri"):
        env["KULTIVAR_MANIFEST_URI"] = record["manifestUri"]
    if (record.get("compiledArtifact") or {}).get("digest"):
        # The registry's digest of model.onnx: the server runs the compiled model only if the file has it.
        env["KULTIVAR_COMPILED_DIGEST"] = record["compiledArtifact"]["digest"]
    if record.get("profileUri"):
        env["KULTIVAR_PROFILE_URI"] = record["profileUri"]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    if config.store_path and config.store_pvc:
        volumes.append({"name": "artifacts", "persistentVolumeClaim": {"claimName": config.store_pvc,
                                                                        "readOnly": True}})
        mounts.append({"name": "artifacts", "mountPath": config.store_path, "readOnly": True})
    container: dict[str, Any] = {
        "name": "server",
        "image": spec.image or config.runtime_image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["kultivar", "serve"],
        "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 5,
                           "failureThreshold": 2},
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"}, "periodSeconds": 10,
                          "failureThreshold": 3},
        "startupProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"}, "periodSeconds": 2,
                         "failureThreshold": 60},
        "volumeMounts": mounts,
        "securityContext": RESTRICTED_CONTAINER_SECURITY,
    }
    if spec.resources:
        container["resources"] = spec.resources.wire()
    if config.store_secret:
        container["envFrom"] = [{"secretRef": {"name": config.store_secret}}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": version_name(name, version), "namespace": ns, "labels": labels,
                     "ownerReferences": [owner_reference(obj)]},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            # Surge first, never below the wanted count: a version's pods are replaced without a 503 window.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {**config.pod_labels, **labels},
                             "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(HTTP_PORT),
                                             "prometheus.io/path": "/metrics"}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": RESTRICTED_POD_SECURITY,
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def service(obj: dict[str, Any], name: str, selector: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": obj["metadata"]["namespace"], "labels": owner_labels(obj),
                     "ownerReferences": [owner_reference(obj)]},
        "spec": {"selector": selector,
                 "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]},
    }


def http_route(obj: dict[str, Any], spec: DeploymentSpec, weights: dict[int, int]) -> dict[str, Any]:
    """Exact traffic weights over the versions' Services, plus a header rule per version for explicit selection
    (A/B). Header rules come first: a request naming a version goes there, any other by weight."""
    name = obj["metadata"]["name"]
    gateway = spec.traffic.gateway
    assert gateway is not None
    refs = [{"name": version_name(name, v), "port": 80, "weight": w} for v, w in sorted(weights.items())]
    rules: list[dict[str, Any]] = []
    header = spec.strategy.abTest.header if spec.strategy.abTest else None
    if header:
        for v in sorted(weights):
            rules.append({"matches": [{"headers": [{"name": header, "value": str(v)}]}],
                          "backendRefs": [{"name": version_name(name, v), "port": 80}]})
    rules.append({"backendRefs": refs})
    parents = [p.wire() for p in gateway.parentRefs]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": obj["metadata"]["namespace"], "labels": owner_labels(obj),
                     "ownerReferences": [owner_reference(obj)]},
        "spec": {"parentRefs": parents, **({"hostnames": gateway.hostnames} if gateway.hostnames else {}),
                 "rules": rules},
    }


def stale_objects(serving: ServingPlan, existing_services: list[str], name: str) -> tuple[list[str], bool]:
    """Which of this Deployment's Services (found by its owner labels) are no longer wanted, and whether its
    HTTPRoute must go too: a router switched from gatewayAPI to replicas leaves per-version Services and a
    route that a Gateway would keep sending traffic through with stale weights. Per-version Services exist
    only under gatewayAPI, so finding a stale one is also when to remove the route (not on every reconcile)."""
    wanted = {s["metadata"]["name"] for s in serving.services}
    stale = sorted(n for n in existing_services if n not in wanted)
    drop_route = not serving.routes and any(n.startswith(f"{name}-v") for n in stale)
    return stale, drop_route


@dataclass
class ServingPlan:
    """Everything the Deployment controller applies: objects to exist, versions to remove, status."""

    plan: Plan
    deployments: list[dict[str, Any]]
    services: list[dict[str, Any]]
    routes: list[dict[str, Any]]
    remove_versions: list[int]
    needs_metrics: bool = False
    spec: DeploymentSpec | None = None  # the parsed spec (None: the plan says why it is unusable)
    remove_shadow: bool = False  # delete the shadow's Deployment (spec.strategy.shadow gone, or it waits)
    # spec.autoscaling: one HorizontalPodAutoscaler per version in deployments, whose replicas are then written
    # only when a Deployment is created (its autoscaler owns them after that; kultivar.domain.autoscaling).
    autoscalers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def autoscaled(self) -> bool:
        return self.spec is not None and self.spec.autoscaling is not None


NUMBERS = ("requests", "errorRate", "latencyP95Seconds")


def _same_window(status: dict[str, Any], decision: RolloutDecision) -> bool:
    """Whether the numbers in status.variants still describe the decision's canary or A/B test."""
    if decision.ab_test is not None:
        return (status.get("abTest") or {}).get("startedAt") == decision.ab_test.get("startedAt")
    if decision.rollout is not None:
        return (status.get("rollout") or {}).get("version") == decision.rollout.get("version")
    return False


def _effective_weights(decision: RolloutDecision, router: str) -> dict[int, int]:
    if router == "gatewayAPI":
        return decision.weights
    total = sum(decision.replicas.values()) or 1
    return {v: round(100 * r / total) for v, r in decision.replicas.items()} if decision.weights else {}


def plan_serving(observed: DeploymentObserved, config: OperatorConfig, now: datetime) -> ServingPlan:
    obj = observed.obj
    name = obj["metadata"]["name"]
    empty = ServingPlan(Plan(), [], [], [], [])
    try:
        spec = DeploymentSpec.model_validate(obj.get("spec") or {})
    except ValidationError as e:
        empty.plan = invalid_spec(e)
        return empty
    empty.spec = spec
    if observed.model is None:
        empty.plan = blocked(Reason.MODEL_NOT_FOUND, f"Model {spec.modelRef.name!r} does not exist in namespace "
                                              f"{obj['metadata']['namespace']}; create it or fix spec.modelRef")
        return empty
    status = obj.get("status") or {}
    version, reason, message = target_version(spec, observed.model)
    if version is None:
        empty.plan = blocked(reason, message)
        return empty
    store = store_problem(config, observed.store_claim_found)
    if store:
        empty.plan = blocked(*store, requeue_after=30)
        return empty
    if spec.strategy.type == "ABTest" and spec.strategy.abTest:
        model = observed.model
        missing = [v.version for v in spec.strategy.abTest.variants if version_record(model, v.version) is None]
        if missing:
            empty.plan = blocked(Reason.VERSION_NOT_FOUND, f"abTest names versions {missing} that Model "
                                                    f"{spec.modelRef.name!r} does not have; fix spec.strategy.abTest")
            return empty
        if spec.strategy.abTest.header and spec.traffic.router != "gatewayAPI":
            empty.plan = blocked(Reason.HEADER_ROUTING_NEEDS_GATEWAY,
                                 "abTest.header selects versions by request header, which needs traffic.router: "
                                 "gatewayAPI; set it or remove the header")
            return empty

    decision = decide(RolloutInput(
        spec=spec, target=version, stable=status.get("stableVersion"), rollout=status.get("rollout"),
        rolled_back=list(status.get("rolledBack") or []), pods=observed.pods or {}, metrics=observed.metrics,
        now=now, last_analysis=status.get("lastAnalysis"), ab_test=status.get("abTest"),
        metrics_error=observed.metrics_error,
        stale_reference=stale_reference(observed.model, status, status.get("stableVersion"), version),
        scale_base=scale_base(spec, status.get("stableVersion"), observed.pods or {}),
        server_failures=observed.server_failures or {},
    ))
    deployments = []
    for v, replicas in sorted(decision.replicas.items()):
        record = version_record(observed.model, v)
        if record is None:  # retired from the registry while still wanted: keep serving what exists
            continue
        deployments.append(server_deployment(obj, spec, record, replicas, config))
    # The version that scales freely: the stable one, or before there is one, the version coming up.
    free = decision.stable if decision.stable is not None else version
    autoscalers = [autoscaler(obj, spec, d, int(d["metadata"]["labels"][VERSION_LABEL]), free)
                   for d in deployments] if spec.autoscaling else []
    services = [service(obj, name, {DEPLOYMENT_LABEL: name})]
    routes = []
    if spec.traffic.router == "gatewayAPI":
        services += [service(obj, version_name(name, v), {DEPLOYMENT_LABEL: name, VERSION_LABEL: str(v)})
                     for v in sorted(decision.replicas)]
        # Only versions that run (and so have a Service): a 0 % A/B variant without a header has neither.
        routes.append(http_route(obj, spec, {v: w for v, w in decision.weights.items() if v in decision.replicas}))
    remove = sorted(set(observed.pods or {}) - set(decision.replicas))

    weights = _effective_weights(decision, spec.traffic.router)
    header = spec.strategy.abTest.header if spec.strategy.type == "ABTest" and spec.strategy.abTest else None
    previous = {int(v["version"]): v for v in status.get("variants") or [] if "version" in v}
    carry = _same_window(status, decision)
    variants = []
    rejected: list[Event] = []
    for v, replicas in sorted(decision.replicas.items()):
        pods = (observed.pods or {}).get(v)
        role = "stable" if v == decision.stable else "canary" if v == decision.canary else "variant"
        if spec.autoscaling and pods and pods.desired >= 1:  # what its autoscaler set, not the planned minimum
            replicas = pods.desired
        variant: dict[str, Any] = {"version": v, "role": role, "weight": weights.get(v, 0), "replicas": replicas,
                                   "readyReplicas": pods.ready if pods else 0}
        if header:
            variant["header"] = {"name": header, "value": str(v)}
        if v in decision.measured:
            variant.update(decision.measured[v])
        elif carry:  # not measured this time: the last numbers of the same canary or test stand
            variant.update({k: previous[v][k] for k in NUMBERS if k in previous.get(v, {})})
        reported = (observed.backends or {}).get(v)
        if reported is not None:
            variant["backend"] = reported.backend
            if reported.rejected:
                variant["backendNote"] = reported.note or "the compiled model was refused"
                rejected.append(Event("Warning", Reason.COMPILED_MODEL_REJECTED,
                                      f"v{v} answers from its verified skops file with scikit-learn, not its compiled "
                                      f"model: {variant['backendNote']}"))
        else:
            variant.update({k: previous[v][k] for k in ("backend", "backendNote") if k in previous.get(v, {})})
        variants.append(variant)
    plan = Plan(events=[*decision.events, *rejected], requeue_after=decision.requeue_after)
    plan.status.update(
        url=f"http://{name}.{obj['metadata']['namespace']}.svc/v2/models/{spec.modelRef.name}",
        stableVersion=decision.stable, canaryVersion=decision.canary,
        canaryWeight=decision.weights.get(decision.canary) if decision.canary else None,
        canaryStep=(int(decision.rollout["step"]) + 1) if decision.rollout else None,
        rollout=decision.rollout, variants=variants, rolledBack=decision.rolled_back or None,
        abTest=decision.ab_test,
    )
    if decision.analysis:
        plan.status["lastAnalysis"] = decision.analysis
    serving = decision.stable is not None and all(
        (observed.pods or {}).get(v) and (observed.pods or {})[v].ready > 0 for v in decision.replicas
        if decision.replicas[v] > 0 and v == decision.stable)
    progressing, p_reason, p_message = decision.progressing
    degraded, d_reason, d_message = decision.degraded
    plan.conditions += [
        Cond(PROGRESSING, progressing, p_reason, p_message),
        Cond(DEGRADED, degraded, d_reason, d_message),
    ]
    had = get_condition(status.get("conditions"), AB_TEST_CONCLUDED) is not None
    if (concluded := ab_test_condition(ab_decides(spec), (decision.ab_test or {}).get("result"), had)) is not None:
        plan.conditions.append(concluded)
    if serving:
        plan.conditions.append(Cond(READY, True, Reason.SERVING, f"v{decision.stable} serves at {plan.status['url']}"))
    else:
        plan.conditions.append(Cond(READY, False, Reason.DEPLOYING, p_message or f"starting v{version}"))
    return ServingPlan(plan, deployments, services, routes, remove, decision.needs_metrics, spec,
                       autoscalers=autoscalers)
