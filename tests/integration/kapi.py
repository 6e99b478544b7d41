"""Small helpers for Kultivar objects on the test cluster, sent as raw JSON (see Kube.raw)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from helpers import wait_for

SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"
API = "/apis/kultivar.io/v1alpha1"
PLURALS = {"Dataset": "datasets", "TrainingRun": "trainingruns", "Model": "models", "Deployment": "deployments"}


def sample(kind: str) -> dict[str, Any]:
    return yaml.safe_load((SAMPLES / f"{kind.lower()}.yaml").read_text())


def path(kind: str, namespace: str, name: str = "") -> str:
    return f"{API}/namespaces/{namespace}/{PLURALS[kind]}" + (f"/{name}" if name else "")


def create(kube, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    status, out = kube.raw("POST", path(body["kind"], namespace), body)
    assert status == 201, out
    return out


def get(kube, namespace: str, kind: str, name: str) -> dict[str, Any]:
    status, out = kube.raw("GET", path(kind, namespace, name))
    assert status == 200, out
    return out


def ready(kube, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    for c in (get(kube, namespace, kind, name).get("status") or {}).get("conditions") or []:
        if c["type"] == "Ready":
            return c
    return None


def wait_reason(kube, namespace: str, kind: str, name: str, reason: str, timeout: float = 30) -> dict[str, Any]:
    return wait_for(lambda: (c := ready(kube, namespace, kind, name)) and c["reason"] == reason and c,
                    timeout=timeout, message=f"{kind} {name} Ready reason {reason}")


def events_for(kube, namespace: str, name: str) -> list[dict[str, Any]]:
    _, out = kube.raw("GET", f"/api/v1/namespaces/{namespace}/events")
    return [e for e in out["items"] if e["involvedObject"]["name"] == name]


def jobs(kube, namespace: str) -> list[dict[str, Any]]:
    _, out = kube.raw("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs")
    return out["items"]


def patch_spec(kube, namespace: str, kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    status, out = kube.raw_patch(path(kind, namespace, name), {"spec": spec})
    assert status == 200, out
    return out
