"""The leader-election Lease (coordination.k8s.io/v1): read it, create it, replace it at a resourceVersion."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from kultivar.domain.leadership import LeaseRecord
from kultivar.k8s.client import MERGE_PATCH, Api

MICROTIME = "%Y-%m-%dT%H:%M:%S.%fZ"


SERVICEACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def default_namespace() -> str:
    """Where the Lease lives unless configured: the pod's own namespace in a cluster, `default` for a local run."""
    try:
        with open(SERVICEACCOUNT_NAMESPACE) as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


def default_identity() -> str:
    """This replica's name in the Lease unless configured (the chart passes the pod's name)."""
    return f"{socket.gethostname()}@{os.getpid()}"


def _path(namespace: str, name: str | None = None) -> str:
    path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
    return f"{path}/{quote(name)}" if name else path


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _microtime(value: datetime | None) -> str | None:
    return value.astimezone(UTC).strftime(MICROTIME) if value else None


def record_of(lease: dict[str, Any]) -> LeaseRecord:
    spec = lease.get("spec") or {}
    return LeaseRecord(
        holder=spec.get("holderIdentity") or "",
        duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
        acquire_time=_time(spec.get("acquireTime")),
        renew_time=_time(spec.get("renewTime")),
        transitions=int(spec.get("leaseTransitions") or 0),
        resource_version=(lease.get("metadata") or {}).get("resourceVersion", ""),
    )


def _body(namespace: str, name: str, record: LeaseRecord) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if record.resource_version:
        metadata["resourceVersion"] = record.resource_version  # a replace fails with 409 if anyone wrote since
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {
            "holderIdentity": record.holder,
            "leaseDurationSeconds": record.duration_seconds,
            "acquireTime": _microtime(record.acquire_time),
            "renewTime": _microtime(record.renew_time),
            "leaseTransitions": record.transitions,
        },
    }


def get(api: Api, namespace: str, name: str) -> LeaseRecord | None:
    lease = api._get_or_none(_path(namespace, name))
    return record_of(lease) if lease else None


def create(api: Api, namespace: str, name: str, record: LeaseRecord) -> LeaseRecord:
    return record_of(api.request("POST", _path(namespace), _body(namespace, name, record)))


def replace(api: Api, namespace: str, name: str, record: LeaseRecord) -> LeaseRecord:
    """A merge patch of the whole spec carrying the resourceVersion read: 409 if anyone wrote since.

    (A patch rather than an update: the same optimistic concurrency, and the RBAC rules grant no `update`.)
    """
    body = _body(namespace, name, record)
    return record_of(api.request("PATCH", _path(namespace, name), {"metadata": body["metadata"], "spec": body["spec"]},
                                 content_type=MERGE_PATCH))
