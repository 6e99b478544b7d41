"""Cluster networking for the local kubelet's servers: a Service URL in a pod's environment reaches the Service's
ready pods, as cluster DNS and kube-proxy make it on a real node.

The local kubelet runs serving pods as processes on loopback addresses, where ``<service>.<namespace>.svc``
resolves to nothing. It rewrites such URLs in a server's environment (``http://<svc>.<ns>.svc[:80][/path]``) to
this proxy (``http://127.0.0.1:<port>/<ns>/<svc>[/path]``), which forwards each request to one of the Service's
Ready pods (selected by the Service's selector, round-robin), or answers 503 when it has none, as a Service
without endpoints refuses connections. Used for shadow traffic, whose stable servers call the shadow's Service.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kultivar.k8s.client import Api, ApiError

log = logging.getLogger(__name__)
SERVICE_URL = re.compile(r"^http://([a-z0-9]([-a-z0-9]*[a-z0-9])?)\.([a-z0-9]([-a-z0-9]*[a-z0-9])?)"
                         r"\.svc(\.cluster\.local)?(:80)?(/.*)?$")
FORWARD_TIMEOUT = 30.0


class ServiceProxy:
    """One local HTTP proxy for every Service the kubelet's servers name (started by start(), stopped by close())."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self._turn = itertools.count()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy.forward(self)

            def do_POST(self) -> None:
                proxy.forward(self)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("service proxy: " + format, *args)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="service-proxy")

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> ServiceProxy:
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for serve_forever, which never began otherwise
            self.server.shutdown()
        self.server.server_close()

    def rewrite(self, value: str) -> str:
        """A Service URL as this proxy serves it; any other value unchanged."""
        match = SERVICE_URL.match(value)
        if match is None:
            return value
        return f"http://127.0.0.1:{self.port}/{match.group(3)}/{match.group(1)}{match.group(7) or ''}"

    def endpoints(self, namespace: str, service: str) -> list[str]:
        """host:port of the Service's Ready pods."""
        try:
            svc = self.api.request("GET", f"/api/v1/namespaces/{namespace}/services/{service}")
        except ApiError:
            return []
        selector = ",".join(f"{k}={v}" for k, v in ((svc.get("spec") or {}).get("selector") or {}).items())
        if not selector:
            return []
        pods = self.api.request("GET", f"/api/v1/namespaces/{namespace}/pods", query={"labelSelector": selector})
        out = []
        for pod in pods.get("items") or []:
            status = pod.get("status") or {}
            ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
            ports = (pod["spec"]["containers"][0].get("ports") or [{"containerPort": 80}])
            if ready and status.get("podIP") and not pod["metadata"].get("deletionTimestamp"):
                out.append(f"{status['podIP']}:{ports[0]['containerPort']}")
        return sorted(out)

    def forward(self, handler: BaseHTTPRequestHandler) -> None:
        parts = handler.path.split("/", 3)  # "", namespace, service, rest
        if len(parts) < 3:
            self._reply(handler, 404, b"no service in the path")
            return
        namespace, service, rest = parts[1], parts[2], parts[3] if len(parts) > 3 else ""
        targets = self.endpoints(namespace, service)
        if not targets:
            self._reply(handler, 503, f"service {namespace}/{service} has no ready endpoints".encode())
            return
        target = targets[next(self._turn) % len(targets)]
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in ("host", "content-length",
                                                                                   "connection")}
        request = urllib.request.Request(f"http://{target}/{rest}", body, headers, method=handler.command)
        try:
            with urllib.request.urlopen(request, timeout=FORWARD_TIMEOUT) as response:
                self._reply(handler, response.status, response.read(), response.headers.get("Content-Type"))
        except urllib.error.HTTPError as e:
            self._reply(handler, e.code, e.read(), e.headers.get("Content-Type"))
        except OSError as e:
            self._reply(handler, 502, f"{target}: {e}".encode())

    @staticmethod
    def _reply(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str | None = None) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type or "text/plain")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
