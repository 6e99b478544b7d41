"""Small builders of API objects as the API server returns them (dicts), for pure-logic tests."""

from __future__ import annotations

import uuid
from typing import Any

from kultivar.domain.jobs import JobOutcome

NS = "team-a"


def obj(kind: str, name: str, spec: dict[str, Any], status: dict[str, Any] | None = None,
        generation: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "kultivar.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": NS, "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, kind + name)),
                     "generation": generation, "resourceVersion": "1"},
        "spec": spec,
        **({"status": status} if status is not None else {}),
    }


def dataset(name: str = "iris", status: dict[str, Any] | None = None, generation: int = 1, **spec: Any):
    base = {"source": {"uri": "sklearn://iris"}, "schema": {"target": "species", "task": "classification"}}
    return obj("Dataset", name, {**base, **spec}, status, generation)


def valid_dataset_status(digest: str = "sha256:" + "a" * 64) -> dict[str, Any]:
    return {
        "digest": digest, "rows": 150, "snapshotUri": "file:///s/data.parquet", "profileUri": "file:///s/p.json",
        "features": [{"name": "sepal_length", "type": "numeric"}],
        "versions": [{"digest": digest, "rows": 150, "snapshotUri": "file:///s/data.parquet",
                      "profileUri": "file:///s/p.json", "validatedAt": "2026-01-01T00:00:00Z"}],
        "conditions": [{"type": "Ready", "status": "True", "reason": "Validated", "message": "",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}],
    }


def run(name: str = "run-1", status: dict[str, Any] | None = None, generation: int = 1, **spec: Any):
    base = {"datasetRef": {"name": "iris"}, "modelRef": {"name": "iris"},
            "estimator": {"className": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 200}}}
    return obj("TrainingRun", name, {**base, **spec}, status, generation)


def model(name: str = "iris", status: dict[str, Any] | None = None, **spec: Any):
    return obj("Model", name, spec, status)


def succeeded_run(name: str, score: float, completed: str = "2026-01-01T00:00:00Z", metric: str = "accuracy"):
    return run(name, status={
        "conditions": [{"type": "Succeeded", "status": "True", "reason": "Trained", "message": "",
                        "lastTransitionTime": completed}],
        "completionTime": completed, "datasetDigest": "sha256:" + "a" * 64, "metric": metric, "score": score,
        "metrics": {metric: score},
        "artifact": {"uri": f"file:///store/{name}/model.skops", "digest": "sha256:" + "b" * 64, "sizeBytes": 10},
    })


def finished_job(ok: bool, result: dict[str, Any] | None, reason: str = "") -> JobOutcome:
    return JobOutcome("Succeeded" if ok else "Failed", reason=reason, result=result, attempts=1,
                      completion_time="2026-01-01T00:01:00Z")
