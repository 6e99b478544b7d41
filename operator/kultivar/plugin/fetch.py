"""Read and write the user's Kultivar objects; a missing object names the ones that exist."""

from __future__ import annotations

from typing import Any

from kultivar.k8s.client import MERGE_PATCH, ApiError, custom_path
from kultivar.plugin.cluster import Target

# Shown as the manager of the fields the plugin changes (metadata.managedFields), so Model history and
# `kubectl get --show-managed-fields` can tell the user's command from the operator's own writes.
FIELD_MANAGER = "kubectl-kultivar"

PLURAL = {"Model": "models", "Deployment": "deployments", "TrainingRun": "trainingruns", "Dataset": "datasets"}


class NotFound(Exception):
    """The object does not exist; the message lists the ones that do."""


def _crds_missing(e: ApiError) -> bool:
    return e.status == 404


def list_objects(target: Target, kind: str) -> list[dict[str, Any]]:
    try:
        return target.api.list_objects(kind, target.namespace)
    except ApiError as e:
        if _crds_missing(e):
            raise NotFound(f"this cluster does not know kultivar.io {PLURAL[kind]}: install Kultivar's CRDs "
                           f"(helm install kultivar charts/kultivar, or kubectl apply -f crds/)") from None
        raise


def get(target: Target, kind: str, name: str) -> dict[str, Any]:
    obj = target.api.get(kind, target.namespace, name)
    if obj is not None:
        return obj
    names = sorted(o["metadata"]["name"] for o in list_objects(target, kind))
    where = f"namespace {target.namespace!r}"
    if names:
        raise NotFound(f"{kind} {name!r} not found in {where}; {PLURAL[kind]} there: {', '.join(names)}")
    raise NotFound(f"{kind} {name!r} not found: there are no {PLURAL[kind]} in {where}; "
                   f"choose another namespace with -n NAMESPACE")


def get_or_none(target: Target, kind: str, name: str | None) -> dict[str, Any] | None:
    return target.api.get(kind, target.namespace, name) if name else None


def deployments_of(target: Target, model: str) -> list[dict[str, Any]]:
    """The Deployments serving the Model, by name."""
    found = [d for d in list_objects(target, "Deployment")
             if ((d.get("spec") or {}).get("modelRef") or {}).get("name") == model]
    return sorted(found, key=lambda d: d["metadata"]["name"])


def patch_spec(target: Target, kind: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
    """Merge-patch the user's object as the user (RBAC applies to them), named as our field manager."""
    path = custom_path(kind, target.namespace, name)
    return target.api.request("PATCH", path, patch, query={"fieldManager": FIELD_MANAGER}, content_type=MERGE_PATCH)


def create(target: Target, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    path = custom_path(kind, target.namespace)
    return target.api.request("POST", path, body, query={"fieldManager": FIELD_MANAGER})
