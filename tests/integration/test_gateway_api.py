"""The gatewayAPI router against the real Gateway API CRDs: every HTTPRoute the operator writes must pass the
published schema and CEL rules, as it would on a cluster with a Gateway controller.

The standard-channel CRDs come from the published Go module sigs.k8s.io/gateway-api at the version pinned in
hack/versions.env (hack/gateway-api-crds.sh: `go mod download`, cached in ~/go/pkg/mod). Only GatewayClass,
Gateway and HTTPRoute are installed; the module's ValidatingAdmissionPolicy (which guards CRD upgrades) is not.
There is no Gateway controller, so nothing routes: the tests check what the operator asks for (owner, weights
per canary step, header rules) and that the API server accepts it, and send traffic to the pods directly.
"""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from kapi import BETTER_C, WEAK_C, assert_promoted, create, get, install_crds, patch_spec, sample, wait_reason
from test_serving_path import IRIS_ROW, TIMEOUT, Traffic, _condition, _serving_pods, infer

from helpers import wait_for
from kultivar.domain.metrics import parse, quantile

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "hack" / "gateway-api-crds.sh"
GATEWAY_API = "/apis/gateway.networking.k8s.io/v1"
CRDS = ("gatewayclasses", "gateways", "httproutes")


def _crd_dir() -> Path:
    done = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        assert shutil.which("go"), f"the Gateway API CRDs are not cached and go is not installed: {done.stderr.strip()}"
        raise AssertionError(f"{SCRIPT} failed ({done.returncode}): {done.stderr}")
    return Path(done.stdout.strip())


@pytest.fixture(scope="module")
def gateway_api(kube) -> list[str]:
    """The published standard-channel CRDs for HTTPRoute and its parents, installed as they are."""
    directory = _crd_dir()
    documents = [yaml.safe_load((directory / f"gateway.networking.k8s.io_{plural}.yaml").read_text())
                 for plural in CRDS]
    assert all(d["kind"] == "CustomResourceDefinition" for d in documents)
    return install_crds(kube, documents)


def routes_path(namespace: str, name: str = "") -> str:
    return f"{GATEWAY_API}/namespaces/{namespace}/httproutes" + (f"/{name}" if name else "")


def route(namespace: str, backend_refs: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "probe", "namespace": namespace},
            "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": backend_refs}], **spec}}


def weights(http_route: dict[str, Any]) -> dict[int, int]:
    """Backend weights of the route's default (last) rule, by version."""
    refs = http_route["spec"]["rules"][-1]["backendRefs"]
    return {int(r["name"].rsplit("-v", 1)[1]): r["weight"] for r in refs}


def train(kube, namespace: str, name: str, **params: Any) -> None:
    run = sample("TrainingRun")
    run["metadata"]["name"] = name
    run["spec"]["estimator"]["params"].update(params)
    create(kube, namespace, run)
    wait_reason(kube, namespace, "TrainingRun", name, "Registered", timeout=TIMEOUT)


def first_version(kube, namespace: str) -> None:
    create(kube, namespace, sample("Dataset"))
    create(kube, namespace, sample("Model"))
    train(kube, namespace, "iris-logreg-1", C=WEAK_C)


def gateway_deployment(strategy: dict[str, Any], **gateway: Any) -> dict[str, Any]:
    body = sample("Deployment")
    body["spec"]["replicas"] = 1
    body["spec"]["strategy"] = strategy
    body["spec"]["traffic"] = {"router": "gatewayAPI", "gateway": {
        "parentRefs": [{"name": "gw", "sectionName": "http"}], "hostnames": ["iris.example.com"], **gateway}}
    return body


def the_gateway(kube, namespace: str) -> None:
    """A real Gateway object (validated by its CRD) for the routes to name; no controller programs it."""
    gateway = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
               "metadata": {"name": "gw", "namespace": namespace},
               "spec": {"gatewayClassName": "example", "listeners": [
                   {"name": "http", "port": 80, "protocol": "HTTP", "hostname": "*.example.com"}]}}
    status, out = kube.raw("POST", f"{GATEWAY_API}/namespaces/{namespace}/gateways", gateway)
    assert status == 201, out


# --- the CRDs are really validating -------------------------------------------------------------------------


def test_real_crds_reject_invalid_httproutes(kube, gateway_api, namespace) -> None:
    """Validation is active: the schema (ranges) and the CEL rules refuse bad routes, a good one passes."""
    dry_run = routes_path(namespace) + "?dryRun=All"
    good = route(namespace, [{"name": "iris-v1", "port": 80, "weight": 90}, {"name": "iris-v2", "port": 80,
                                                                               "weight": 10}])
    status, out = kube.raw("POST", dry_run, good)
    assert status == 201, out
    # the API server filled in the published defaults: it is the real schema
    assert out["spec"]["parentRefs"][0]["kind"] == "Gateway" and out["spec"]["rules"][0]["matches"] == [
        {"path": {"type": "PathPrefix", "value": "/"}}]

    cases = {
        "weight -1": (route(namespace, [{"name": "iris-v1", "port": 80, "weight": -1}]), "weight"),
        "weight 1000001": (route(namespace, [{"name": "iris-v1", "port": 80, "weight": 1_000_001}]), "weight"),
        "Service without port (CEL)": (route(namespace, [{"name": "iris-v1", "weight": 1}]),
                                       "Must have port for Service reference"),
        "same parent twice (CEL)": (route(namespace, [{"name": "iris-v1", "port": 80}],
                                          parentRefs=[{"name": "gw"}, {"name": "gw"}]),
                                    "sectionName must be unique"),
        "relative path (CEL)": ({**good, "spec": {**good["spec"], "rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": "v2"}}],
             "backendRefs": [{"name": "iris-v1", "port": 80}]}]}}, "must be an absolute path"),
    }
    for what, (body, message) in cases.items():
        status, out = kube.raw("POST", dry_run, body)
        assert status == 422, f"{what}: accepted ({status}): {out}"
        assert message in out["message"], f"{what}: {out['message']}"


# --- the operator's routes ------------------------------------------------------------------------------------


def test_canary_httproute_is_valid_and_follows_every_step(kube, gateway_api, namespace, kubelet) -> None:
    first_version(kube, namespace)
    the_gateway(kube, namespace)
    create(kube, namespace, gateway_deployment({"type": "Canary", "canary": {
        "steps": [{"weight": 25, "pause": "6s"}, {"weight": 50, "pause": "6s"}],
        "analysis": {"interval": "2s", "minRequests": 10, "maxErrorRate": 0.05, "maxLatencyP95Seconds": 10.0,
                     "maxPredictionShift": 0.5}}}))
    wait_reason(kube, namespace, "Deployment", "iris", "Serving", timeout=TIMEOUT)
    deployment = get(kube, namespace, "Deployment", "iris")

    # The route passed the real schema and CEL rules (else it would not exist), owned by the Deployment.
    status, http_route = kube.raw("GET", routes_path(namespace, "iris"))
    assert status == 200, http_route
    (owner,) = http_route["metadata"]["ownerReferences"]
    assert owner == {"apiVersion": "kultivar.io/v1alpha1", "kind": "Deployment", "name": "iris",
                     "uid": deployment["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}
    assert http_route["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                                 "name": "gw", "sectionName": "http"}]
    assert http_route["spec"]["hostnames"] == ["iris.example.com"]
    assert http_route["spec"]["rules"][-1]["backendRefs"] == [
        {"group": "", "kind": "Service", "name": "iris-v1", "port": 80, "weight": 100}]
    assert kube.raw("GET", f"/api/v1/namespaces/{namespace}/services/iris-v1")[0] == 200

    train(kube, namespace, "iris-logreg-2", C=BETTER_C)
    assert_promoted(kube, namespace, "iris", 2)
    seen: list[dict[int, int]] = []

    def promoted() -> bool:
        _, current = kube.raw("GET", routes_path(namespace, "iris"))
        if not seen or weights(current) != seen[-1]:
            seen.append(weights(current))
        return get(kube, namespace, "Deployment", "iris")["status"].get("stableVersion") == 2 and \
            weights(current) == {2: 100}

    with Traffic(kube, namespace):
        wait_for(promoted, timeout=TIMEOUT, interval=0.1, message=f"v2 promoted through the route (seen {seen})")
    # Starting (no traffic promised before the canary is Ready), each step's exact split, then v2 alone.
    assert {1: 100, 2: 0} in seen and {1: 75, 2: 25} in seen and {1: 50, 2: 50} in seen, seen
    assert seen.index({1: 75, 2: 25}) < seen.index({1: 50, 2: 50}) < seen.index({2: 100})
    wait_for(lambda: kube.raw("GET", f"/api/v1/namespaces/{namespace}/services/iris-v1")[0] == 404, timeout=60,
             message="the old version's Service removed")
    _, http_route = kube.raw("GET", routes_path(namespace, "iris"))
    # One spec change per split: the defaults the API server adds never make the operator patch again.
    assert http_route["metadata"]["generation"] <= len(seen) + 2, (http_route["metadata"]["generation"], seen)
    assert _condition(kube, namespace, "Degraded")["status"] == "False"


def _scrape(ip: str) -> str:
    with urllib.request.urlopen(f"http://{ip}:8080/metrics", timeout=5) as response:
        return response.read().decode()


def test_ab_test_header_routes_and_per_version_numbers(kube, gateway_api, namespace, kubelet) -> None:
    first_version(kube, namespace)
    train(kube, namespace, "iris-logreg-2", C=BETTER_C)
    the_gateway(kube, namespace)
    create(kube, namespace, gateway_deployment({"type": "ABTest", "canary": {"analysis": {"interval": "2s"}},
                                                "abTest": {"variants": [{"version": 1, "weight": 70},
                                                                        {"version": 2, "weight": 30}],
                                                           "header": "x-model-version"}}))
    wait_for(lambda: (c := _condition(kube, namespace, "Progressing")) and c["reason"] == "ABTestRunning",
             timeout=TIMEOUT, message="A/B test running")
    status, http_route = kube.raw("GET", routes_path(namespace, "iris"))
    assert status == 200, http_route
    rules = http_route["spec"]["rules"]
    # (with the defaults the API server adds: an Exact header match, on every path)
    assert [(r["matches"], [b["name"] for b in r["backendRefs"]]) for r in rules[:2]] == [
        ([{"headers": [{"type": "Exact", "name": "x-model-version", "value": str(v)}],
           "path": {"type": "PathPrefix", "value": "/"}}], [f"iris-v{v}"]) for v in (1, 2)]
    assert weights(http_route) == {1: 70, 2: 30}

    # Traffic as the gateway would split it: a known number of requests to each version's pods.
    pods = wait_for(lambda: (p := _serving_pods(kube, namespace)) and len(p) == 2 and p, timeout=60,
                    message="both versions' pods ready")
    sent = {1: 21, 2: 9}
    for version, count in sent.items():
        for i in range(count):
            infer(pods[version][0], IRIS_ROW if i % 2 else [6.7, 3.0, 5.2, 2.3])

    def numbers() -> dict[int, dict[str, Any]] | None:
        variants = {v["version"]: v for v in get(kube, namespace, "Deployment", "iris")["status"]["variants"]}
        return variants if all(variants[v].get("requests") == n for v, n in sent.items()) else None

    variants = wait_for(numbers, timeout=60, message=f"status.variants counting {sent}")
    status = get(kube, namespace, "Deployment", "iris")["status"]
    assert status["abTest"]["versions"] == [1, 2] and status["abTest"]["metricsSource"] == "pods"
    for version, weight in ((1, 70), (2, 30)):
        variant = variants[version]
        assert variant["weight"] == weight and variant["role"] in ("stable", "variant")
        assert variant["header"] == {"name": "x-model-version", "value": str(version)}
        assert variant["errorRate"] == 0.0
        # p95 as the version's own histogram says (all of its requests are the ones sent above)
        histogram = parse(_scrape(pods[version][0])).latency
        assert variant["latencyP95Seconds"] == pytest.approx(quantile(histogram, 0.95), abs=1e-6)


def test_route_the_crd_refuses_is_reported_in_status(kube, gateway_api, namespace, kubelet) -> None:
    """The same Gateway listed twice passes Kultivar's schema but not HTTPRoute's CEL: status says so."""
    first_version(kube, namespace)
    create(kube, namespace, gateway_deployment({"type": "Canary"}, parentRefs=[{"name": "gw"}, {"name": "gw"}]))
    degraded = wait_for(lambda: (c := _condition(kube, namespace, "Degraded")) and c["status"] == "True" and c,
                        timeout=TIMEOUT, message="Degraded: HTTPRouteRejected")
    assert degraded["reason"] == "HTTPRouteRejected" and "sectionName must be unique" in degraded["message"]
    assert kube.raw("GET", routes_path(namespace, "iris"))[0] == 404


def test_switching_back_to_the_replicas_router_removes_the_route(kube, gateway_api, namespace, kubelet) -> None:
    """A route left behind would keep a Gateway sending traffic with stale weights to Services that go away."""
    first_version(kube, namespace)
    the_gateway(kube, namespace)
    create(kube, namespace, gateway_deployment({"type": "Immediate"}))
    wait_reason(kube, namespace, "Deployment", "iris", "Serving", timeout=TIMEOUT)
    assert kube.raw("GET", routes_path(namespace, "iris"))[0] == 200
    assert kube.raw("GET", f"/api/v1/namespaces/{namespace}/services/iris-v1")[0] == 200

    patch_spec(kube, namespace, "Deployment", "iris", {"traffic": {"router": "replicas", "gateway": None}})
    wait_for(lambda: kube.raw("GET", routes_path(namespace, "iris"))[0] == 404, timeout=60,
             message="the HTTPRoute removed")
    wait_for(lambda: kube.raw("GET", f"/api/v1/namespaces/{namespace}/services/iris-v1")[0] == 404, timeout=60,
             message="the per-version Service removed")
    assert kube.raw("GET", f"/api/v1/namespaces/{namespace}/services/iris")[0] == 200  # the Service users call
    wait_reason(kube, namespace, "Deployment", "iris", "Serving", timeout=TIMEOUT)


def test_shadow_is_mirrored_by_the_route(kube, gateway_api, namespace, kubelet) -> None:
    """A shadow on the gatewayAPI router: the HTTPRoute the real CRD accepts copies requests to the shadow's
    Service with the spec's percent; the stable servers forward nothing themselves."""
    first_version(kube, namespace)
    train(kube, namespace, "iris-logreg-2", C=BETTER_C)
    assert_promoted(kube, namespace, "iris", 2)
    the_gateway(kube, namespace)
    body = gateway_deployment({"type": "Canary", "canary": {"analysis": {"interval": "2s"}},
                               "shadow": {"version": 2, "percent": 25}})
    body["spec"]["modelRef"]["version"] = 1
    create(kube, namespace, body)

    def mirrored() -> list[dict[str, Any]] | None:
        status, http_route = kube.raw("GET", routes_path(namespace, "iris"))
        return (http_route["spec"]["rules"][-1].get("filters") or None) if status == 200 else None

    filters = wait_for(mirrored, timeout=TIMEOUT, message="the HTTPRoute mirroring to the shadow")
    # (with the defaults the API server adds to the backendRef)
    assert filters == [{"type": "RequestMirror", "requestMirror": {
        "backendRef": {"group": "", "kind": "Service", "name": "iris-shadow", "port": 80}, "percent": 25}}]
    _, http_route = kube.raw("GET", routes_path(namespace, "iris"))
    assert weights(http_route) == {1: 100}  # the shadow answers no user
    _, service = kube.raw("GET", f"/api/v1/namespaces/{namespace}/services/iris-shadow")
    assert service["spec"]["selector"] == {"kultivar.io/shadow-of": "iris"}
    _, stable = kube.raw("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/iris-v1")
    names = {e["name"] for e in stable["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "KULTIVAR_SHADOW_URL" not in names
    shadow = get(kube, namespace, "Deployment", "iris")["status"]["shadow"]
    assert shadow["state"] == "Running" and shadow["router"] == "gatewayAPI" and shadow["percent"] == 25
