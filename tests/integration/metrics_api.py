"""A metrics source for the real HorizontalPodAutoscaler controller: a tiny aggregated API server.

The integration cluster runs the real kube-controller-manager, whose horizontal-pod-autoscaler controller reads
pod metrics through the API server's aggregation layer only. This server is registered with APIServices for

- custom.metrics.k8s.io/v1beta2: every Pods metric (what prometheus-adapter would serve for
  kultivar_requests_per_second), and
- metrics.k8s.io/v1beta1: PodMetrics with CPU usage (what metrics-server serves),

and answers, for each pod the request's label selector matches, the value the test set for its namespace: the
load is the test's to choose, everything that reacts to it (API server, aggregator, HPA controller, operator) is
real. It listens on 127.0.0.1 over TLS with a throw-away certificate (the APIService skips verification). The
API server reaches it through an ExternalName Service: the aggregator resolves such a Service to its name and the
APIService's port, so no cluster IP routing or EndpointSlice (which may not hold loopback addresses) is needed.
It does not authenticate the proxied requests: the API server authorized them already, and it serves only these
made-up numbers.
"""

from __future__ import annotations

import json
import ssl
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from helpers import wait_for
from kultivar.devcluster.pki import CertificateAuthority

NAMESPACE = "kultivar-test-metrics"
SERVICE = "metrics-api"
CUSTOM = ("custom.metrics.k8s.io", "v1beta2")
RESOURCE = ("metrics.k8s.io", "v1beta1")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class MetricsApi:
    """Start with start(), set numbers with set_load(), stop with stop() (unregisters before it stops serving)."""

    def __init__(self, kube: Any, workdir: Path) -> None:
        self.kube, self.workdir = kube, workdir
        self.requests_per_second: dict[str, float] = {}  # namespace -> every pod's value of every Pods metric
        self.cpu_millicores: dict[str, int] = {}  # namespace -> every pod's CPU usage
        self.served: list[str] = []  # paths asked for: what the HPA controller read
        self._server: ThreadingHTTPServer | None = None

    def set_load(self, namespace: str, requests_per_second: float | None = None,
                 cpu_millicores: int | None = None) -> None:
        if requests_per_second is not None:
            self.requests_per_second[namespace] = requests_per_second
        if cpu_millicores is not None:
            self.cpu_millicores[namespace] = cpu_millicores

    # -- the API ------------------------------------------------------------------------------------

    def _pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        status, out = self.kube.raw("GET", f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}")
        assert status == 200, out
        return [p for p in out["items"] if (p.get("status") or {}).get("phase") == "Running"
                and not p["metadata"].get("deletionTimestamp")]

    def answer(self, path: str, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        parts = [p for p in path.split("/") if p]
        selector = (query.get("labelSelector") or [""])[0]
        if parts[:3] == ["apis", *CUSTOM]:
            if len(parts) == 3:
                return 200, _resources(CUSTOM, [{"name": "pods/*", "singularName": "", "namespaced": True,
                                                 "kind": "MetricValueList", "verbs": ["get"]}])
            # namespaces/{ns}/pods/{name or *}/{metric}
            if len(parts) == 8 and parts[3] == "namespaces" and parts[5] == "pods":
                ns, pod, metric = parts[4], parts[6], parts[7]
                value = self.requests_per_second.get(ns, 0.0)
                items = [{"describedObject": {"kind": "Pod", "namespace": ns, "name": p["metadata"]["name"],
                                              "apiVersion": "/v1"},
                          "metric": {"name": metric}, "timestamp": _now(), "windowSeconds": 60,
                          "value": f"{round(value * 1000)}m"}
                         for p in self._pods(ns, selector) if pod in ("*", p["metadata"]["name"])]
                return 200, {"kind": "MetricValueList", "apiVersion": "/".join(CUSTOM), "metadata": {},
                             "items": items}
        if parts[:3] == ["apis", *RESOURCE]:
            if len(parts) == 3:
                return 200, _resources(RESOURCE, [
                    {"name": "pods", "singularName": "", "namespaced": True, "kind": "PodMetrics", "verbs": ["get",
                                                                                                         "list"]}])
            if len(parts) == 6 and parts[3] == "namespaces" and parts[5] == "pods":
                ns = parts[4]
                usage = f"{self.cpu_millicores.get(ns, 0)}m"
                items = [{"metadata": {"name": p["metadata"]["name"], "namespace": ns,
                                       "labels": p["metadata"].get("labels") or {}},
                          "timestamp": _now(), "window": "1s",
                          "containers": [{"name": c["name"], "usage": {"cpu": usage, "memory": "64Mi"}}
                                         for c in p["spec"]["containers"]]}
                         for p in self._pods(ns, selector)]
                return 200, {"kind": "PodMetricsList", "apiVersion": "/".join(RESOURCE), "metadata": {},
                             "items": items}
        # /apis (aggregated discovery) included: a 404 makes the aggregator fall back to the per-version lists.
        return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
                     "message": f"{path} not found"}

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> MetricsApi:
        ca = CertificateAuthority.create("kultivar-test-metrics")
        pair = ca.issue_serving_cert("127.0.0.1", dns_names=["localhost"], ips=["127.0.0.1"]).write(
            self.workdir, "metrics-api")
        assert pair.cert_path and pair.key_path
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pair.cert_path, pair.key_path)
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                path = unquote(url.path)  # client-go escapes the "*" that names every pod
                api.served.append(path)
                try:
                    status, body = api.answer(path, parse_qs(url.query))
                except Exception as e:
                    status, body = 500, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                         "code": 500, "message": f"test metrics API: {e}"}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._register(server.server_address[1])
        for group, version in (CUSTOM, RESOURCE):
            wait_for(lambda g=group, v=version: self._available(f"{v}.{g}"), timeout=timeout,
                     message=f"APIService {version}.{group} Available")
        return self

    def _register(self, port: int) -> None:
        kube = self.kube
        kube.raw("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                 "metadata": {"name": NAMESPACE}})
        kube.raw("DELETE", f"/api/v1/namespaces/{NAMESPACE}/services/{SERVICE}")
        status, out = kube.raw("POST", f"/api/v1/namespaces/{NAMESPACE}/services", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": SERVICE},
            "spec": {"type": "ExternalName", "externalName": "127.0.0.1"}})
        assert status == 201, out
        for group, version in (CUSTOM, RESOURCE):
            name = f"{version}.{group}"
            kube.raw("DELETE", f"/apis/apiregistration.k8s.io/v1/apiservices/{name}")
            status, out = kube.raw("POST", "/apis/apiregistration.k8s.io/v1/apiservices", {
                "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": name},
                "spec": {"group": group, "version": version, "insecureSkipTLSVerify": True,
                         "groupPriorityMinimum": 100, "versionPriority": 100,
                         "service": {"namespace": NAMESPACE, "name": SERVICE, "port": port}}})
            assert status == 201, out

    def _available(self, name: str) -> bool:
        _, out = self.kube.raw("GET", f"/apis/apiregistration.k8s.io/v1/apiservices/{name}")
        return any(c["type"] == "Available" and c["status"] == "True"
                   for c in ((out or {}).get("status") or {}).get("conditions") or [])

    def stop(self) -> None:
        # Unregister first: an APIService whose server is gone makes discovery fail for every client.
        for group, version in (CUSTOM, RESOURCE):
            self.kube.raw("DELETE", f"/apis/apiregistration.k8s.io/v1/apiservices/{version}.{group}")
        self.kube.raw("DELETE", f"/api/v1/namespaces/{NAMESPACE}/services/{SERVICE}")
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _resources(group_version: tuple[str, str], resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "/".join(group_version),
            "resources": resources}
