"""Serving I/O: observe a Kultivar Deployment's version Deployments, scrape their pods, apply a ServingPlan."""

from __future__ import annotations

import json
import logging
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kultivar.domain.jobs import owner_labels
from kultivar.domain.labels import SHADOW_LABEL
from kultivar.domain.metrics import Snapshot, parse
from kultivar.domain.reasons import Reason
from kultivar.domain.rollout import Pods
from kultivar.domain.server_failures import ServerFailure
from kultivar.domain.server_failures import server_failures as failures_of
from kultivar.domain.serving import (
    DEPLOYMENT_LABEL,
    HTTP_PORT,
    VERSION_LABEL,
    ServedBackend,
    ServingPlan,
    stale_objects,
    version_name,
)
from kultivar.domain.shadow import ShadowObserved, shadow_name
from kultivar.k8s.client import Api, ApiError, RefusedChild, create_refused

log = logging.getLogger(__name__)
SCRAPE_TIMEOUT = 3.0
HPA_PATH = "/apis/autoscaling/v2"


def version_pods(api: Api, namespace: str, name: str) -> dict[int, Pods]:
    """State of each version's apps/v1 Deployment."""
    out = api.request("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments",
                      query={"labelSelector": f"{DEPLOYMENT_LABEL}={name}"})
    pods = {}
    for d in out.get("items") or []:
        version = int(d["metadata"]["labels"][VERSION_LABEL])
        st = d.get("status") or {}
        desired = int((d.get("spec") or {}).get("replicas") or 0)
        updated = (st.get("observedGeneration") or 0) >= d["metadata"].get("generation", 0) and \
            int(st.get("updatedReplicas") or 0) >= desired
        pods[version] = Pods(desired=desired, ready=int(st.get("readyReplicas") or 0), updated=updated)
    return pods


def server_failures(api: Api, namespace: str, name: str) -> dict[int, ServerFailure]:
    """The permanent failures the servers of a Deployment's versions reported in their termination messages
    (one LIST of its pods: called only while a version is not ready)."""
    out = api.request("GET", f"/api/v1/namespaces/{namespace}/pods",
                      query={"labelSelector": f"{DEPLOYMENT_LABEL}={name}"})
    return failures_of(out.get("items") or [])


def shadow_pods(api: Api, namespace: str, name: str) -> ShadowObserved:
    """The shadow's apps/v1 Deployment: which version it runs and how many of its pods are ready."""
    try:
        found = api.request("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{shadow_name(name)}")
    except ApiError as e:
        if e.status != 404:
            raise
        return ShadowObserved()
    st = found.get("status") or {}
    desired = int((found.get("spec") or {}).get("replicas") or 0)
    updated = (st.get("observedGeneration") or 0) >= found["metadata"].get("generation", 0) and \
        int(st.get("updatedReplicas") or 0) >= desired
    version = int(found["metadata"]["labels"][VERSION_LABEL])
    pods = Pods(desired=desired, ready=int(st.get("readyReplicas") or 0), updated=updated)
    failure = None
    if not pods.is_ready:  # why its pods do not come up: their servers' termination messages (one LIST)
        listed = api.request("GET", f"/api/v1/namespaces/{namespace}/pods",
                             query={"labelSelector": f"{SHADOW_LABEL}={name}"})
        failure = failures_of(listed.get("items") or []).get(version)
    return ShadowObserved(version, pods, failure=failure)


def _scrape(url: str) -> Snapshot | None:
    try:
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT) as response:
            return parse(response.read().decode())
    except (OSError, ValueError) as e:
        log.info("could not scrape %s: %s", url, e)
        return None


def scrape(api: Api, namespace: str, name: str, versions: list[int], shadow: bool = False) -> dict[int, Snapshot]:
    """Sum the metrics of each version's ready pods (the server's own /metrics); shadow: the shadow's pods
    (labelled shadow-of, not deployment) instead of the versions that answer users."""
    label = SHADOW_LABEL if shadow else DEPLOYMENT_LABEL
    out = api.request("GET", f"/api/v1/namespaces/{namespace}/pods", query={"labelSelector": f"{label}={name}"})
    targets: list[tuple[int, str]] = []
    for pod in out.get("items") or []:
        version = int(pod["metadata"]["labels"].get(VERSION_LABEL, 0))
        ip = (pod.get("status") or {}).get("podIP")
        if version in versions and ip and (pod.get("status") or {}).get("phase") == "Running":
            targets.append((version, f"http://{ip}:{HTTP_PORT}/metrics"))
    totals = {v: Snapshot() for v in versions}
    with ThreadPoolExecutor(max_workers=8) as pool:
        for (version, _), snap in zip(targets, pool.map(lambda t: _scrape(t[1]), targets), strict=True):
            if snap is not None:
                totals[version] = totals[version].add(snap)
    return totals


def _ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _metadata(url: str) -> ServedBackend | None:
    try:
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT) as response:
            return ServedBackend.from_metadata(json.loads(response.read()))
    except (OSError, ValueError) as e:
        log.info("could not read %s: %s", url, e)
        return None


def served_backends(api: Api, namespace: str, name: str, model: str, versions: list[int]
                    ) -> dict[int, ServedBackend]:
    """What one ready pod of each version runs the model with (its V2 model metadata); versions whose pods
    could not be asked are left out (asked again next reconcile)."""
    out = api.request("GET", f"/api/v1/namespaces/{namespace}/pods",
                      query={"labelSelector": f"{DEPLOYMENT_LABEL}={name}"})
    targets: dict[int, str] = {}
    for pod in out.get("items") or []:
        version = int(pod["metadata"]["labels"].get(VERSION_LABEL, 0))
        ip = (pod.get("status") or {}).get("podIP")
        if version in versions and version not in targets and ip and _ready(pod):
            targets[version] = f"http://{ip}:{HTTP_PORT}/v2/models/{model}"
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(_metadata, targets.values()))
    return {v: a for v, a in zip(targets, answers, strict=True) if a is not None}


def _upsert(api: Api, collection: str, desired: dict[str, Any], compare: tuple[str, ...]) -> None:
    """Create the object, or merge-patch the given top-level spec fields when they differ (or are gone)."""
    name = desired["metadata"]["name"]
    try:
        current = api.request("GET", f"{collection}/{name}")
    except ApiError as e:
        if e.status != 404:
            raise
        try:
            api.request("POST", collection, desired)
        except ApiError as e:
            raise create_refused(desired["kind"], desired, e) or e from None
        return
    patch: dict[str, Any] = {}
    for k in compare:
        if k in desired["spec"]:
            if not _contains(current["spec"].get(k), desired["spec"][k]):
                patch[k] = desired["spec"][k]
        elif current["spec"].get(k) is not None:  # a field we no longer set (e.g. hostnames removed)
            patch[k] = None
    if patch:
        try:
            api.request("PATCH", f"{collection}/{name}", {"spec": patch}, content_type="application/merge-patch+json")
        except ApiError as e:
            raise create_refused(desired["kind"], desired, e) or e from None


def _contains(actual: Any, wanted: Any) -> bool:
    """Whether actual already has every field of wanted (the server adds defaults we did not set)."""
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and all(_contains(actual.get(k), v) for k, v in wanted.items())
    if isinstance(wanted, list):
        return isinstance(actual, list) and len(actual) == len(wanted) and all(
            _contains(a, w) for a, w in zip(actual, wanted, strict=True))
    return actual == wanted


def _route_problem(route: dict[str, Any], e: ApiError | RefusedChild) -> tuple[str, str]:
    """Why an HTTPRoute could not be written, as a condition reason and message."""
    name = route["metadata"]["name"]
    if e.status == 404:
        return Reason.GATEWAY_API_UNAVAILABLE, (f"cannot create HTTPRoute {name}: this cluster serves no Gateway API "
                                         "HTTPRoute (gateway.networking.k8s.io/v1); install the Gateway API CRDs, "
                                         "or set spec.traffic.router: replicas")
    if e.status == 403:
        return Reason.HTTPROUTE_FORBIDDEN, (f"the operator may not manage HTTPRoute {name}: {e.message}; grant it "
                                      "(chart value rbac.gatewayAPI) or set spec.traffic.router: replicas")
    return Reason.HTTPROUTE_REJECTED, f"the API server rejected HTTPRoute {name}: {e.message}; fix spec.traffic.gateway"


def _delete(api: Api, path: str, ignore: tuple[int, ...] = (404,)) -> None:
    try:
        api.request("DELETE", path, {"propagationPolicy": "Background"})
    except ApiError as e:
        if e.status not in ignore:
            raise


def _prune(api: Api, obj: dict[str, Any], serving: ServingPlan) -> None:
    """Remove what an earlier spec wanted and this one does not (see stale_objects)."""
    ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    selector = ",".join(f"{k}={v}" for k, v in owner_labels(obj).items())
    found = api.request("GET", f"/api/v1/namespaces/{ns}/services", query={"labelSelector": selector})
    stale, drop_route = stale_objects(serving, [s["metadata"]["name"] for s in found.get("items") or []], name)
    if drop_route:  # first, so a Gateway never routes to a Service that is gone
        # 403/404: no permission on, or no CRD for, HTTPRoutes -- then there is no route of ours either.
        _delete(api, f"/apis/gateway.networking.k8s.io/v1/namespaces/{ns}/httproutes/{name}", (403, 404))
    for service_name in stale:
        _delete(api, f"/api/v1/namespaces/{ns}/services/{service_name}")
    # Autoscalers of versions no longer served, or all of them once spec.autoscaling is unset (the operator then
    # writes replicas again).
    wanted = {h["metadata"]["name"] for h in serving.autoscalers}
    try:
        scalers = api.request("GET", f"{HPA_PATH}/namespaces/{ns}/horizontalpodautoscalers",
                              query={"labelSelector": selector})
    except ApiError as e:
        # Not allowed to list autoscalers (RBAC from before spec.autoscaling): then none of ours can exist, and a
        # Deployment that does not ask for them serves on. One that does was refused already, naming the cause.
        if e.status != 403 or wanted:
            raise
        return
    for hpa in scalers.get("items") or []:
        if hpa["metadata"]["name"] not in wanted:
            _delete(api, f"{HPA_PATH}/namespaces/{ns}/horizontalpodautoscalers/{hpa['metadata']['name']}")


@dataclass
class ServingOutcome:
    """What the cluster refused: the HTTPRoute (reason, message for Degraded), or a Deployment or Service."""

    route_problem: tuple[str, str] | None = None
    refused: RefusedChild | None = None


def apply_serving(api: Api, obj: dict[str, Any], serving: ServingPlan) -> ServingOutcome:
    """Create or update the serving objects. An HTTPRoute the cluster refuses does not stop the rest: its reason
    and message are returned (for the Degraded condition) instead of raised. A Deployment or Service it refuses
    (a 4xx other than 409/429) stops here and is returned: the owner is held until its spec changes."""
    ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    if serving.spec is None:  # a spec the models reject (InvalidSpec): what serves now keeps serving, untouched
        return ServingOutcome()
    problem = None
    # An autoscaled version's replicas belong to its HorizontalPodAutoscaler once the Deployment exists: they are
    # sent on create only, never patched (kultivar.domain.autoscaling). Others (a shadow's) are the operator's.
    scaled = {h["spec"]["scaleTargetRef"]["name"] for h in serving.autoscalers}
    try:
        for d in serving.deployments:
            fields = ("template",) if d["metadata"]["name"] in scaled else ("replicas", "template")
            _upsert(api, f"/apis/apps/v1/namespaces/{ns}/deployments", d, fields)
        for h in serving.autoscalers:
            _upsert(api, f"{HPA_PATH}/namespaces/{ns}/horizontalpodautoscalers", h,
                    ("scaleTargetRef", "minReplicas", "maxReplicas", "metrics"))
        for s in serving.services:
            _upsert(api, f"/api/v1/namespaces/{ns}/services", s, ("selector",))
    except RefusedChild as e:
        log.warning("Deployment %s/%s: %s", ns, name, e)
        return ServingOutcome(refused=e)
    for r in serving.routes:
        try:
            _upsert(api, f"/apis/gateway.networking.k8s.io/v1/namespaces/{ns}/httproutes", r,
                    ("parentRefs", "hostnames", "rules"))
        except (ApiError, RefusedChild) as e:  # a route the cluster cannot take degrades; the pods still serve
            if e.status not in (400, 403, 404, 422):
                raise
            problem = _route_problem(r, e)
            log.warning("Deployment %s/%s: %s", ns, name, problem[1])
    _prune(api, obj, serving)
    if serving.remove_shadow:
        _delete(api, f"/apis/apps/v1/namespaces/{ns}/deployments/{shadow_name(name)}")
    for version in serving.remove_versions:
        for path in (f"/apis/apps/v1/namespaces/{ns}/deployments/{version_name(name, version)}",
                     f"/api/v1/namespaces/{ns}/services/{version_name(name, version)}"):
            _delete(api, path)
    return ServingOutcome(route_problem=problem)
