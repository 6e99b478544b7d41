"""The only place that talks to the Kubernetes API.

Objects travel as plain JSON dicts exactly as the API server speaks them: the domain layer plans dicts,
and sending them verbatim avoids client-side models that validate or drop fields on their own. The
calls are synchronous; the controllers run them in threads.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from kultivar.api.common import GROUP, VERSION
from kultivar.api.resources import BY_KIND
from kultivar.domain.labels import MANAGED_BY, MANAGER
from kultivar.domain.refusal import is_refusal
from kultivar.k8s.events import EventSender

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1, application/json"


def _json(raw: bytes | str | None) -> Any:
    text = raw.decode() if isinstance(raw, bytes) else (raw or "")
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text


class ApiError(Exception):
    def __init__(self, status: int, reason: str, body: Any = None) -> None:
        message = body.get("message", reason) if isinstance(body, dict) else reason
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.reason = reason
        self.body = body
        self.message = message


class RefusedChild(Exception):
    """The API server will never create this object as it is (a 4xx other than 409/429): see domain/refusal.py."""

    def __init__(self, kind: str, name: str, error: ApiError) -> None:
        super().__init__(f"{kind} {name}: {error}")
        self.kind, self.name, self.message, self.status = kind, name, error.message, error.status


def create_refused(kind: str, body: dict[str, Any], error: ApiError) -> RefusedChild | None:
    """The error as a refusal of this object, when it is one."""
    if not is_refusal(error.status):
        return None
    return RefusedChild(kind, body["metadata"].get("name", ""), error)


def load_config(kubeconfig: str | None = None) -> None:
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig)
        return
    try:
        config.load_incluster_config()
    except config.ConfigException:
        # Read $KUBECONFIG now: the client library resolves its default path once, at import time.
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None)


def custom_path(kind: str, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{BY_KIND[kind].plural}"
    if name:
        path += f"/{quote(name)}"
    if subresource:
        path += f"/{subresource}"
    return path


class Api:
    def __init__(self, api_client: client.ApiClient, request_timeout: float = 30.0) -> None:
        self.api_client = api_client
        self.request_timeout = request_timeout
        self.calls: Counter[str] = Counter()  # requests sent, by method (kopf's watches are not counted here)
        self.events: EventSender | None = None  # when set, Events are posted in the background

    def post_events_in_background(self) -> EventSender:
        """From now on, post_event only queues the Event (see k8s/events.py)."""
        self.events = EventSender(self._post_event)
        return self.events

    @classmethod
    def connect(cls, kubeconfig: str | None = None) -> Api:
        load_config(kubeconfig)
        return cls(client.ApiClient())

    # --- transport ----------------------------------------------------------------------------------

    def request(
        self, method: str, path: str, body: Any = None, *, query: dict[str, str] | None = None,
        content_type: str = "application/json", accept: str = "application/json",
    ) -> Any:
        self.calls[method] += 1
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            response = self.api_client.call_api(
                path, method, query_params=list((query or {}).items()), header_params=headers, body=body,
                auth_settings=["BearerToken"], _preload_content=False, _return_http_data_only=True,
                _request_timeout=self.request_timeout,
            )
        except ApiException as e:
            raise ApiError(e.status or 0, e.reason or "", _json(e.body)) from None
        return _json(response.data)

    def _get_or_none(self, path: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", path)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    # --- our custom objects -------------------------------------------------------------------------

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if not name:
            return None
        return self._get_or_none(custom_path(kind, namespace, name))

    def list_objects(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        items = self.request("GET", custom_path(kind, namespace)).get("items") or []
        for item in items:  # list items carry no kind/apiVersion of their own
            item.setdefault("kind", kind)
            item.setdefault("apiVersion", f"{GROUP}/{VERSION}")
        return items

    def list_names(self, kind: str, namespace: str) -> tuple[set[str], str | None]:
        """The names of the objects of kind (ours, or Kultivar's Jobs) in namespace, and the list's resourceVersion.

        Asks for metadata only (PartialObjectMetadataList): a fraction of the full list's bytes."""
        if kind == "Job":
            path, query = f"/apis/batch/v1/namespaces/{namespace}/jobs", {"labelSelector": f"{MANAGED_BY}={MANAGER}"}
        else:
            path, query = custom_path(kind, namespace), {}
        out = self.request("GET", path, query=query, accept=METADATA_LIST) or {}
        names = {str((item.get("metadata") or {}).get("name")) for item in out.get("items") or []}
        return names, (out.get("metadata") or {}).get("resourceVersion")

    def create(self, kind: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", custom_path(kind, namespace), body)

    def create_if_missing(self, kind: str, namespace: str, body: dict[str, Any]) -> bool:
        """Create an object with a deterministic name; False when it already exists (a retried reconcile)."""
        try:
            self.create(kind, namespace, body)
            return True
        except ApiError as e:
            if e.status == 409:
                return False
            raise create_refused(kind, body, e) or e from None

    def annotate(self, kind: str, namespace: str, name: str, annotations: dict[str, str]) -> None:
        """Merge annotations into one of our objects (metadata, never spec), e.g. to ask for a refresh."""
        body = {"metadata": {"annotations": annotations}}
        self.request("PATCH", custom_path(kind, namespace, name), body, content_type=MERGE_PATCH)

    def patch_status(
        self, kind: str, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        """Merge-patch .status. With resource_version the write fails with 409 if the object changed since."""
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        return self.request("PATCH", custom_path(kind, namespace, name, "status"), body, content_type=MERGE_PATCH)

    # --- built-in objects ---------------------------------------------------------------------------

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get_or_none(f"/api/v1/namespaces/{namespace}/secrets/{quote(name)}")

    def get_pvc(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get_or_none(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{quote(name)}")

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get_or_none(f"/apis/batch/v1/namespaces/{namespace}/jobs/{quote(name)}")

    def create_job(self, namespace: str, body: dict[str, Any]) -> bool:
        """Create a Job; False when it already exists (a restart re-running the same plan)."""
        try:
            self.request("POST", f"/apis/batch/v1/namespaces/{namespace}/jobs", body)
            return True
        except ApiError as e:
            if e.status == 409:
                return False
            raise create_refused("Job", body, e) or e from None

    def delete_job(self, namespace: str, name: str) -> None:
        try:
            self.request("DELETE", f"/apis/batch/v1/namespaces/{namespace}/jobs/{quote(name)}",
                         {"propagationPolicy": "Background"})
        except ApiError as e:
            if e.status != 404:
                raise

    def list_job_pods(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        query = {"labelSelector": f"job-name={job_name}"}
        out = self.request("GET", f"/api/v1/namespaces/{namespace}/pods", query=query)
        return list(out.get("items") or [])

    # --- events -------------------------------------------------------------------------------------

    def post_event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        meta = obj["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion"),
                "kind": obj.get("kind"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "source": {"component": "kultivar"},
            "reportingComponent": "kultivar.io/operator",
            "reportingInstance": "kultivar",
        }
        if self.events is not None:
            self.events.send(event)
        else:
            self._post_event(event)

    def _post_event(self, event: dict[str, Any]) -> None:
        meta = event["metadata"]
        try:
            self.request("POST", f"/api/v1/namespaces/{meta['namespace']}/events", event)
        except ApiError as e:  # an event is best effort; never fail a reconcile over it
            log.warning("could not post event %s on %s/%s: %s", event["reason"], meta["namespace"],
                        event["involvedObject"]["name"], e)
