"""Small helpers for Kultivar objects on the test cluster, sent as raw JSON (see Kube.raw)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from helpers import wait_for

SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"
API = "/apis/kultivar.io/v1alpha1"
PLURALS = {"Dataset": "datasets", "TrainingRun": "trainingruns", "Model": "models", "Deployment": "deployments"}


# Logistic regression on the sample iris split (seed 7, a quarter held out): C=0.1 scores accuracy 0.921 (above the
# sample Model's minimum 0.9), C=1.0 scores 0.974. A v1 at WEAK_C and a v2 at BETTER_C therefore pass the promotion
# gate by construction: a canary test asserts the promotion instead of skipping when it does not happen.
WEAK_C = 0.1
BETTER_C = 1.0


def weak_first_run() -> dict[str, Any]:
    """The sample TrainingRun, made weaker so that a later run at BETTER_C strictly beats it."""
    run = sample("TrainingRun")
    run["spec"]["estimator"]["params"]["C"] = WEAK_C
    return run


def assert_promoted(kube, namespace: str, model: str, version: int) -> None:
    """The gate's decision is deterministic on fixed data and seeds: assert it, never skip on it."""
    status = get(kube, namespace, "Model", model)["status"]
    assert status.get("productionVersion") == version, (
        f"v{version} did not pass the promotion gate: {[v.get('gate') for v in status.get('versions', [])]}")


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


CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def install_crds(kube, documents: list[dict[str, Any]], timeout: float = 60) -> list[str]:
    """Create (or replace, on a reused cluster) CustomResourceDefinitions exactly as given; wait until Established."""
    names = []
    for document in documents:
        name = document["metadata"]["name"]
        status, out = kube.raw("POST", CRD_PATH, document)
        if status == 409:
            _, current = kube.raw("GET", f"{CRD_PATH}/{name}")
            document = {**document, "metadata": {**document["metadata"],
                                                 "resourceVersion": current["metadata"]["resourceVersion"]}}
            status, out = kube.raw("PUT", f"{CRD_PATH}/{name}", document)
        assert status in (200, 201), f"CRD {name}: HTTP {status}: {out}"
        names.append(name)

    def established(name: str) -> bool:
        status, crd = kube.raw("GET", f"{CRD_PATH}/{name}")
        return status == 200 and any(c["type"] == "Established" and c["status"] == "True"
                                     for c in (crd.get("status") or {}).get("conditions") or [])

    for name in names:
        wait_for(lambda n=name: established(n), timeout=timeout, message=f"CRD {name} Established")
    return names
