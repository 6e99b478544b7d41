"""Objects as the API server returns them, for the plugin's tests: rendered in tests/unit/test_plugin_render.py
(which checks them against the API models, so they cannot drift from the schema) and created, with this status,
on the real control plane in tests/integration/test_plugin.py."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

NOW = datetime(2026, 5, 1, 12, 10, tzinfo=UTC)
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
A = "sha256:" + "a" * 64


def _version(n: int, accuracy: float, digest: str, gate: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"version": n, "trainingRun": f"iris-run-{n}", "trainingRunUid": f"uid-{n}", "datasetDigest": digest,
            "dataset": "iris-data", "artifact": {"uri": f"file:///store/ml/iris/v{n}/model.skops", "digest": A},
            "metric": "accuracy", "metrics": {"accuracy": accuracy, "f1": accuracy - 0.01},
            "image": "kultivar-runtime:0.1.0", "createdAt": f"2026-05-01T1{n}:00:00Z".replace("T13", "T11"),
            "gate": gate, **extra}


MODEL: dict[str, Any] = {
    "apiVersion": "kultivar.io/v1alpha1", "kind": "Model",
    "metadata": {"name": "iris", "namespace": "ml", "generation": 1, "resourceVersion": "100",
                 "creationTimestamp": "2026-05-01T10:00:00Z"},
    "spec": {"promotion": {"policy": "Automatic", "metric": "accuracy", "minimum": 0.8}},
    "status": {
        "observedGeneration": 1, "latestVersion": 3, "productionVersion": 3, "productionMetric": 0.96,
        "conditions": [{"type": "Ready", "status": "True", "reason": "ProductionSet", "message": "v3 is production",
                        "lastTransitionTime": "2026-05-01T12:00:00Z", "observedGeneration": 1}],
        "versions": [
            _version(1, 0.9, D1, {"passed": True, "reason": "Passed", "message": "accuracy=0.9 passes the gate"}),
            _version(2, 0.7, D1, {"passed": False, "reason": "BelowMinimum",
                                  "message": "accuracy=0.7 misses the minimum 0.8"}),
            _version(3, 0.96, D2, {"passed": True, "reason": "Improved",
                                   "message": "accuracy=0.96 beats production v1 (0.9)"}),
        ],
    },
}

def _window(minute: int, psi: dict[str, float], drifted: bool = False, version: int = 1) -> dict[str, Any]:
    hour, minute = divmod(11 * 60 + minute, 60)
    features = sorted(({"feature": f, "psi": v} for f, v in psi.items()), key=lambda f: -f["psi"])
    return {"time": f"2026-05-01T{hour:02d}:{minute:02d}:00Z", "version": version, "samples": 400,
            "drifted": drifted, "driftedShare": sum(v > 0.2 for v in psi.values()) / 4, "unseenShare": 0.0,
            "features": features}


# The judged drift windows of the iris Deployment, oldest first (status.drift.history): petal_length drifts, and
# in the 11:45 window petal_width with it (judged drifted); the last entry is status.drift's own check.
DRIFT_HISTORY: list[dict[str, Any]] = [
    _window(15, {"petal_length": 0.04, "sepal_width": 0.02, "petal_width": 0.03}),
    _window(25, {"petal_length": 0.12, "sepal_width": 0.03, "petal_width": 0.08}),
    _window(35, {"petal_length": 0.26, "sepal_width": 0.04, "petal_width": 0.15}),
    _window(45, {"petal_length": 0.38, "sepal_width": 0.06, "petal_width": 0.24}, drifted=True),
    _window(55, {"petal_length": 0.35, "sepal_width": 0.05, "petal_width": 0.18}),
    _window(65, {"petal_length": 0.41, "sepal_width": 0.05}),
]

CANARY: dict[str, Any] = {
    "apiVersion": "kultivar.io/v1alpha1", "kind": "Deployment",
    "metadata": {"name": "iris", "namespace": "ml", "generation": 2, "resourceVersion": "200",
                 "creationTimestamp": "2026-05-01T10:30:00Z"},
    "spec": {"modelRef": {"name": "iris"}, "replicas": 2,
             "strategy": {"type": "Canary", "canary": {
                 "steps": [{"weight": 10, "pause": "2m"}, {"weight": 50, "pause": "2m"}],
                 "analysis": {"minRequests": 20, "maxErrorRate": 0.05, "maxLatencyP95Seconds": 0.5}}},
             "monitoring": {"threshold": 0.2}},
    "status": {
        "observedGeneration": 2, "url": "http://iris.ml.svc/v2/models/iris",
        "stableVersion": 1, "canaryVersion": 3, "canaryWeight": 50, "canaryStep": 2,
        "rollout": {"version": 3, "step": 1, "stepStartedAt": "2026-05-01T12:09:00Z", "state": "Stepping"},
        "variants": [
            {"version": 1, "role": "stable", "weight": 50, "replicas": 2, "readyReplicas": 2, "requests": 120,
             "errorRate": 0.0, "latencyP95Seconds": 0.01},
            {"version": 3, "role": "canary", "weight": 50, "replicas": 2, "readyReplicas": 2, "requests": 118,
             "errorRate": 0.01, "latencyP95Seconds": 0.02},
        ],
        "lastAnalysis": {"time": "2026-05-01T12:09:00Z", "verdict": "Pass", "message": "118 requests, 1% errors",
                         "requests": 118, "errorRate": 0.01, "latencyP95Seconds": 0.02, "predictionShift": 0.31,
                         "metricsSource": "pods"},
        "drift": {"checkedAt": "2026-05-01T12:05:00Z", "version": 1, "samples": 400, "window": "10m",
                  "driftedShare": 0.25, "drifted": False,
                  "topFeatures": [{"feature": "petal_length", "psi": 0.41}, {"feature": "sepal_width", "psi": 0.05}],
                  "history": DRIFT_HISTORY},
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Serving", "message": "v1 serves",
             "lastTransitionTime": "2026-05-01T11:00:00Z"},
            {"type": "Progressing", "status": "True", "reason": "CanaryStepping", "message": "step 2/2",
             "lastTransitionTime": "2026-05-01T12:09:00Z"},
            {"type": "Degraded", "status": "False", "reason": "AsExpected", "message": "",
             "lastTransitionTime": "2026-05-01T11:00:00Z"},
        ],
    },
}


def settled(dep: dict[str, Any], version: int = 3) -> dict[str, Any]:
    """The same Deployment after its canary was promoted."""
    out = copy.deepcopy(dep)
    st = out["status"]
    for key in ("canaryVersion", "canaryWeight", "canaryStep", "rollout"):
        st.pop(key, None)
    st["stableVersion"] = version
    st["variants"] = [{"version": version, "role": "stable", "weight": 100, "replicas": 2, "readyReplicas": 2}]
    st["conditions"][1] = {"type": "Progressing", "status": "False", "reason": "Stable", "message": "",
                           "lastTransitionTime": "2026-05-01T12:11:00Z"}
    return out


AB: dict[str, Any] = {
    "apiVersion": "kultivar.io/v1alpha1", "kind": "Deployment",
    "metadata": {"name": "iris-ab", "namespace": "ml", "generation": 1, "resourceVersion": "300"},
    "spec": {"modelRef": {"name": "iris"}, "strategy": {"type": "ABTest", "abTest": {
        "variants": [{"version": 1, "weight": 70}, {"version": 3, "weight": 30}]}}},
    "status": {
        "observedGeneration": 1, "stableVersion": 1,
        "abTest": {"versions": [1, 3], "startedAt": "2026-05-01T12:00:00Z", "measuredAt": "2026-05-01T12:09:30Z"},
        "variants": [
            {"version": 1, "role": "variant", "weight": 70, "replicas": 1, "readyReplicas": 1, "requests": 700,
             "errorRate": 0.002, "latencyP95Seconds": 0.012},
            {"version": 3, "role": "variant", "weight": 30, "replicas": 1, "readyReplicas": 1, "requests": 300,
             "errorRate": 0.0, "latencyP95Seconds": 0.011},
        ],
        "conditions": [{"type": "Progressing", "status": "False", "reason": "ABTestRunning",
                        "message": "v1=70%, v3=30%", "lastTransitionTime": "2026-05-01T12:00:00Z"}],
    },
}


# The same A/B test deciding from feedback labels, concluded for v3; and the canary with live performance.
AB_DECIDED: dict[str, Any] = copy.deepcopy(AB)
AB_DECIDED["spec"]["strategy"]["abTest"]["decision"] = {"metric": "accuracy", "confidence": 0.95, "minSamples": 100}
AB_DECIDED["status"]["abTest"]["result"] = {
    "metric": "accuracy", "confidence": 0.95, "method": "mSPRT (Johari et al. 2022), normal mixture",
    "verdict": "Concluded", "variants": [{"version": 1, "value": 0.8612, "labels": 418},
                                         {"version": 3, "value": 0.9305, "labels": 187}],
    "pValue": 0.0031, "looks": 17, "winner": 3, "effectSize": 0.0693, "effectLow": 0.0211, "effectHigh": 0.1175,
    "concludedAt": "2026-05-01T12:09:30Z",
    "message": "v3 wins over v1 on live accuracy: v1 0.8612 (418 labels) vs v3 0.9305 (187 labels), effect +0.0693"}
AB_DECIDED["status"]["conditions"].append(
    {"type": "ABTestConcluded", "status": "True", "reason": "WinnerSignificant",
     "message": AB_DECIDED["status"]["abTest"]["result"]["message"], "lastTransitionTime": "2026-05-01T12:09:30Z"})
WATCHED: dict[str, Any] = copy.deepcopy(CANARY)
WATCHED["spec"]["monitoring"]["performance"] = {"metric": "accuracy", "floor": 0.85, "minLabels": 200, "window": "1h"}
WATCHED["status"]["performance"] = {
    "checkedAt": "2026-05-01T12:08:00Z", "metric": "accuracy", "floor": 0.85, "window": "1h",
    "windowStart": "2026-05-01T12:08:00Z", "version": 1, "belowFloor": True, "since": "2026-05-01T12:08:00Z",
    "versions": [{"version": 1, "value": 0.8012, "labels": 640}, {"version": 3, "value": 0.9, "labels": 40}]}
WATCHED["status"]["conditions"].append(
    {"type": "Underperforming", "status": "True", "reason": "BelowFloor",
     "message": "live accuracy of v1 is 0.8012 on 640 labelled predictions in the last 1h: 0.0488 below the floor "
                "0.85", "lastTransitionTime": "2026-05-01T12:08:00Z"})


def run(n: int, params: dict[str, Any], digest: str, best: dict[str, Any] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"datasetDigest": digest, "metric": "accuracy", "modelVersion": n,
                              "completionTime": "2026-05-01T11:00:00Z"}
    if best:
        status["bestParams"] = best
    return {"apiVersion": "kultivar.io/v1alpha1", "kind": "TrainingRun",
            "metadata": {"name": f"iris-run-{n}", "namespace": "ml", "uid": f"uid-{n}"},
            "spec": {"datasetRef": {"name": "iris-data", "digest": digest}, "modelRef": {"name": "iris"},
                     "estimator": {"className": "sklearn.linear_model.LogisticRegression", "params": params},
                     "evaluation": {"testFraction": 0.2, "seed": 42}},
            "status": status}


DATASET: dict[str, Any] = {
    "apiVersion": "kultivar.io/v1alpha1", "kind": "Dataset",
    "metadata": {"name": "iris-data", "namespace": "ml"},
    "spec": {"source": {"uri": "s3://bucket/iris.csv"},
             "schema": {"target": "species", "task": "classification", "features": []}},
    "status": {"digest": D2, "versions": [
        {"digest": D1, "rows": 150, "snapshotUri": "file:///store/ml/iris-data/1.parquet",
         "profileUri": "file:///store/ml/iris-data/1.profile.json", "validatedAt": "2026-05-01T10:05:00Z"},
        {"digest": D2, "rows": 180, "snapshotUri": "file:///store/ml/iris-data/2.parquet",
         "profileUri": "file:///store/ml/iris-data/2.profile.json", "validatedAt": "2026-05-01T11:05:00Z"},
    ]},
}


def evaluated(model: dict[str, Any]) -> dict[str, Any]:
    """The Model with v3's held-out evaluation recorded: candidate, production and baseline on the same rows (the
    shape of status.versions[].evaluation being added to the API) and its confusion matrix, for the report."""
    out = copy.deepcopy(model)
    v3 = out["status"]["versions"][2]
    v3["evaluation"] = {
        "source": "split", "dataDigest": D2, "rows": 36, "splitSeed": 42, "metric": "accuracy",
        "candidate": {"accuracy": 0.96, "f1": 0.95}, "baseline": {"accuracy": 0.33, "f1": 0.17},
        "baselineStrategy": "most_frequent",
        "production": {"version": 1, "digest": A, "metrics": {"accuracy": 0.9, "f1": 0.89}},
        "difference": 0.06,
        "interval": {"against": "production", "metric": "accuracy", "estimate": 0.06, "low": 0.01, "high": 0.11,
                     "confidence": 0.95, "resamples": 2000, "seed": 7, "method": "paired bootstrap (percentile)"},
        "segments": [{"feature": "site", "value": "north", "rows": 20, "candidate": 0.95, "production": 0.9}],
        "confusionMatrix": {"labels": ["setosa", "versicolor", "virginica"],
                            "counts": [[12, 0, 0], [0, 11, 1], [0, 0, 12]]},
    }
    v3["cardUri"] = "file:///store/ml/iris/v3/card.md"
    for n, minute in ((1, "00"), (2, "20"), (3, "40")):  # distinct registration times: a line over time
        out["status"]["versions"][n - 1]["createdAt"] = f"2026-05-01T11:{minute}:00Z"
    return out


# A settled v1 with v3 as its shadow (router replicas, live accuracy from feedback): status.shadow as the operator
# writes it after a measured interval.
SHADOWED: dict[str, Any] = settled(WATCHED, version=1)
SHADOWED["metadata"]["name"] = "iris-shadowed"
SHADOWED["spec"]["strategy"]["shadow"] = {"version": 3, "percent": 20}
SHADOWED["status"].pop("performance")
SHADOWED["status"].pop("lastAnalysis")
SHADOWED["status"]["conditions"] = [c for c in SHADOWED["status"]["conditions"] if c["type"] != "Underperforming"]
SHADOWED["status"]["shadow"] = {
    "version": 3, "percent": 20, "stableVersion": 1, "state": "Running", "router": "replicas",
    "startedAt": "2026-05-01T12:00:00Z", "measuredAt": "2026-05-01T12:09:30Z", "metricsSource": "pods",
    "requests": 480, "errorRate": 0.0021, "latencyP95Seconds": 0.013, "compared": 1200, "agreement": 0.965,
    "forwardErrors": 2, "dropped": 5, "predictionShift": 0.031, "liveMetric": "accuracy", "liveValue": 0.93,
    "labels": 85, "stableLiveValue": 0.91,
    "message": "480 copies answered; agreement 96.50% over 1200 rows; error rate 0.21%; p95 0.013s; 5 copies "
               "dropped (queue full); live accuracy 0.93 on 85 labels"}
