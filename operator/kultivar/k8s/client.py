"""The only place that talks to the Kubernetes API. Synchronous calls; controllers run them in threads."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from kultivar.api.common import GROUP, VERSION
from kultivar.api.resources import BY_KIND

log = logging.getLogger(__name__)


def load_config() -> None:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


@dataclass
class Api:
    core: client.CoreV1Api
    apps: client.AppsV1Api
    batch: client.BatchV1Api
    custom: client.CustomObjectsApi

    @classmethod
    def connect(cls) -> Api:
        load_config()
        api_client = client.ApiClient()
        return cls(
            core=client.CoreV1Api(api_client),
            apps=client.AppsV1Api(api_client),
            batch=client.BatchV1Api(api_client),
            custom=client.CustomObjectsApi(api_client),
        )

    # --- our custom objects -------------------------------------------------------------------------

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, BY_KIND[kind].plural, name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def list(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        out = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, BY_KIND[kind].plural)
        return list(out.get("items", []))

    def create(self, kind: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, BY_KIND[kind].plural, body)

    def patch_status(
        self, kind: str, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        """Merge-patch .status. With resource_version the write fails with 409 if the object changed since."""
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        return self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, BY_KIND[kind].plural, name, body
        )

    # --- built-in objects ---------------------------------------------------------------------------

    def get_secret(self, namespace: str, name: str) -> client.V1Secret | None:
        try:
            return self.core.read_namespaced_secret(name, namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            job = self.batch.read_namespaced_job(name, namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return self.to_dict(job)

    def create_job(self, namespace: str, body: dict[str, Any]) -> bool:
        """Create a Job; False when it already exists (a restart re-running the same plan)."""
        try:
            self.batch.create_namespaced_job(namespace, body)
            return True
        except ApiException as e:
            if e.status == 409:
                return False
            raise

    def list_job_pods(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        pods = self.core.list_namespaced_pod(namespace, label_selector=f"job-name={job_name}")
        return [self.to_dict(p) for p in pods.items]

    def to_dict(self, obj: Any) -> dict[str, Any]:
        return client.ApiClient().sanitize_for_serialization(obj)

    # --- events -------------------------------------------------------------------------------------

    def post_event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        meta = obj["metadata"]
        from datetime import UTC, datetime

        now = datetime.now(UTC)
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{meta['name']}.", namespace=meta["namespace"]),
            involved_object=client.V1ObjectReference(
                api_version=obj.get("apiVersion"),
                kind=obj.get("kind"),
                name=meta["name"],
                namespace=meta["namespace"],
                uid=meta.get("uid"),
                resource_version=meta.get("resourceVersion"),
            ),
            type=type_,
            reason=reason,
            message=message[:1024],
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            source=client.V1EventSource(component="kultivar"),
            reporting_component="kultivar.io/operator",
            reporting_instance="kultivar",
        )
        try:
            self.core.create_namespaced_event(meta["namespace"], event)
        except ApiException as e:  # an event is best effort; never fail a reconcile over it
            log.warning("could not post event %s on %s/%s: %s", reason, meta["namespace"], meta["name"], e.reason)
