"""The training path on the real control plane: Dataset -> TrainingRun Job -> Model version, for real.

Workload pods run as local processes with the pod's exact configuration (see local_kubelet.py), so
validation really reads scikit-learn's iris set and training really fits and saves a skops model.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import pytest
from kapi import create, events_for, get, jobs, patch_spec, ready, sample, wait_reason

from helpers import wait_for
from kultivar.devcluster.kubelet import finish_pod

TRAIN_TIMEOUT = 120


def _setup(kube, namespace: str, run_name: str = "iris-logreg-1", **run_spec) -> dict:
    create(kube, namespace, sample("Dataset"))
    create(kube, namespace, sample("Model"))
    run = sample("TrainingRun")
    run["metadata"]["name"] = run_name
    run["spec"].update(run_spec)
    return create(kube, namespace, run)


def _store_path(uri: str) -> Path:
    assert uri.startswith("file://"), uri
    return Path(uri[len("file://"):])


def test_train_first_model(kube, namespace, kubelet) -> None:
    _setup(kube, namespace)
    cond = wait_reason(kube, namespace, "Dataset", "iris", "Validated", timeout=TRAIN_TIMEOUT)
    dataset = get(kube, namespace, "Dataset", "iris")["status"]
    assert dataset["rows"] == 150 and dataset["digest"].startswith("sha256:") and dataset["digest"] in cond["message"]
    assert _store_path(dataset["profileUri"]).exists() and _store_path(dataset["snapshotUri"]).exists()

    wait_reason(kube, namespace, "TrainingRun", "iris-logreg-1", "Registered", timeout=TRAIN_TIMEOUT)
    run = get(kube, namespace, "TrainingRun", "iris-logreg-1")["status"]
    assert run["modelVersion"] == 1 and run["metric"] == "accuracy" and run["score"] > 0.85
    assert run["datasetDigest"] == dataset["digest"]
    artifact = _store_path(run["artifact"]["uri"])
    assert "sha256:" + hashlib.sha256(artifact.read_bytes()).hexdigest() == run["artifact"]["digest"]
    assert artifact.suffix == ".skops"

    model = get(kube, namespace, "Model", "iris")["status"]
    assert model["productionVersion"] == 1 and model["latestVersion"] == 1
    (version,) = model["versions"]
    assert version["trainingRun"] == "iris-logreg-1" and version["datasetDigest"] == dataset["digest"]
    assert version["artifact"]["digest"] == run["artifact"]["digest"] and version["gate"]["passed"] is True
    # the held-out confusion matrix, from the pod's result through the TrainingRun to the version record
    matrix = version["evaluation"]["confusionMatrix"]
    assert matrix == run["evaluation"]["confusionMatrix"]
    assert matrix["labels"] == ["0", "1", "2"] and len(matrix["counts"]) == 3  # iris codes its species 0-2
    rows = version["evaluation"]["rows"]
    assert sum(map(sum, matrix["counts"])) == rows > 0
    assert sum(matrix["counts"][i][i] for i in range(3)) / rows == pytest.approx(version["metrics"]["accuracy"])
    assert ready(kube, namespace, "Model", "iris")["status"] == "True"
    reasons = {e["reason"] for e in events_for(kube, namespace, "iris") if e["involvedObject"]["kind"] == "Model"}
    assert {"VersionRegistered", "Promoted"} <= reasons
    assert [j["metadata"]["name"] for j in jobs(kube, namespace)] == ["iris-logreg-1-train-1", "iris-validate-1"]


def test_bad_data_is_rejected_naming_the_check(kube, namespace, kubelet) -> None:
    dataset = sample("Dataset")
    dataset["spec"]["checks"]["minRows"] = 1000
    create(kube, namespace, dataset)
    cond = wait_reason(kube, namespace, "Dataset", "iris", "DataValidationFailed", timeout=TRAIN_TIMEOUT)
    assert "TooFewRows" in cond["message"] and "150" in cond["message"]
    # the failure is permanent: no retries burnt on it
    job = get_job(kube, namespace, "iris-validate-1")
    assert job["status"].get("failed") == 1


def get_job(kube, namespace: str, name: str) -> dict:
    status, out = kube.raw("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}")
    assert status == 200, out
    return out


def test_estimator_failure_then_fixed_spec(kube, namespace, kubelet) -> None:
    # A package outside operator.estimatorPackages is refused before any Job is spent on it.
    _setup(kube, namespace, estimator={"className": "nosuchlib.FancyClassifier", "params": {}}, backoffLimit=2)
    cond = wait_reason(kube, namespace, "TrainingRun", "iris-logreg-1", "EstimatorNotAllowed",
                       timeout=TRAIN_TIMEOUT)
    assert "'nosuchlib'" in cond["message"] and "operator.estimatorPackages" in cond["message"]
    status, _ = kube.raw("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs/iris-logreg-1-train-1")
    assert status == 404

    patch_spec(kube, namespace, "TrainingRun", "iris-logreg-1",
               {"estimator": {"className": "sklearn.tree.DecisionTreeClassifier", "params": {"max_depth": 3}}})
    wait_reason(kube, namespace, "TrainingRun", "iris-logreg-1", "Registered", timeout=TRAIN_TIMEOUT)
    assert get(kube, namespace, "TrainingRun", "iris-logreg-1")["status"]["jobName"] == "iris-logreg-1-train-2"


def _validated_then_paused(kube, namespace: str, kubelet, **run_spec) -> None:
    """Dataset validated for real, then the kubelet paused before the TrainingRun exists."""
    create(kube, namespace, sample("Dataset"))
    create(kube, namespace, sample("Model"))
    wait_reason(kube, namespace, "Dataset", "iris", "Validated", timeout=TRAIN_TIMEOUT)
    kubelet.paused.set()
    run = sample("TrainingRun")
    run["spec"].update(run_spec)
    create(kube, namespace, run)


def test_retries_then_backoff_limit(kube, namespace, kubelet) -> None:
    _validated_then_paused(kube, namespace, kubelet, backoffLimit=1)  # the test crashes every attempt itself
    for attempt in (1, 2):
        pod = wait_for(lambda: _running_train_pod(kube, namespace), timeout=60, message=f"training pod {attempt}")
        finish_pod(kube.core, namespace, pod, exit_code=1, message="Traceback: MemoryError")
    cond = wait_reason(kube, namespace, "TrainingRun", "iris-logreg-1", "BackoffLimitExceeded", timeout=60)
    assert "MemoryError" in cond["message"] or "backoff" in cond["message"].lower()
    assert get(kube, namespace, "TrainingRun", "iris-logreg-1")["status"]["attempts"] == 2


def _running_train_pod(kube, namespace: str) -> str | None:
    _, out = kube.raw("GET", f"/api/v1/namespaces/{namespace}/pods?labelSelector=kultivar.io/workload=train")
    running = [p["metadata"]["name"] for p in out["items"] if p["status"].get("phase") == "Running"]
    return running[0] if running else None


def test_deadline_exceeded(kube, namespace, kubelet) -> None:
    _validated_then_paused(kube, namespace, kubelet, activeDeadlineSeconds=30)  # the pod never finishes
    wait_reason(kube, namespace, "TrainingRun", "iris-logreg-1", "DeadlineExceeded", timeout=90)


def test_operator_restart_mid_run_gives_one_job_and_one_version(kube, namespace, kubelet, operator) -> None:
    _validated_then_paused(kube, namespace, kubelet)
    wait_for(lambda: _running_train_pod(kube, namespace), timeout=60, message="training pod running")
    operator.restart()  # killed mid-run, like an evicted pod
    kubelet.paused.clear()
    wait_reason(kube, namespace, "TrainingRun", "iris-logreg-1", "Registered", timeout=TRAIN_TIMEOUT)
    operator.restart()  # and once more after success: nothing new may appear
    wait_for(lambda: ready(kube, namespace, "Model", "iris")["status"] == "True", timeout=30, message="Model Ready")
    train_jobs = [j for j in jobs(kube, namespace) if "-train-" in j["metadata"]["name"]]
    assert [j["metadata"]["name"] for j in train_jobs] == ["iris-logreg-1-train-1"]
    assert [v["version"] for v in get(kube, namespace, "Model", "iris")["status"]["versions"]] == [1]


def test_two_runs_finishing_together_get_distinct_versions(kube, namespace, kubelet) -> None:
    _setup(kube, namespace)
    wait_reason(kube, namespace, "TrainingRun", "iris-logreg-1", "Registered", timeout=TRAIN_TIMEOUT)
    kubelet.paused.set()
    second = copy.deepcopy(sample("TrainingRun"))
    for name, c in (("iris-a", 0.5), ("iris-b", 2.0)):
        second["metadata"]["name"] = name
        second["spec"]["estimator"]["params"]["C"] = c
        create(kube, namespace, second)
    wait_for(lambda: len([p for p in _train_pods(kube, namespace) if p["status"].get("phase") == "Running"]) == 2,
             timeout=60, message="both training pods running")
    kubelet.paused.clear()  # both finish in the same sweep
    for name in ("iris-a", "iris-b"):
        wait_reason(kube, namespace, "TrainingRun", name, "Registered", timeout=TRAIN_TIMEOUT)
    versions = {v["trainingRun"]: v["version"] for v in get(kube, namespace, "Model", "iris")["status"]["versions"]}
    assert versions["iris-logreg-1"] == 1 and {versions["iris-a"], versions["iris-b"]} == {2, 3}
    runs = {n: get(kube, namespace, "TrainingRun", n)["status"]["modelVersion"] for n in ("iris-a", "iris-b")}
    assert runs == {"iris-a": versions["iris-a"], "iris-b": versions["iris-b"]}


def _train_pods(kube, namespace: str) -> list[dict]:
    _, out = kube.raw("GET", f"/api/v1/namespaces/{namespace}/pods?labelSelector=kultivar.io/workload=train")
    return out["items"]


def test_retention_removes_old_versions_and_their_artifacts(kube, namespace, kubelet) -> None:
    create(kube, namespace, sample("Dataset"))
    model = sample("Model")
    model["spec"]["retention"]["keepVersions"] = 1
    create(kube, namespace, model)
    run = sample("TrainingRun")
    run["metadata"]["name"] = "weak"
    run["spec"]["estimator"] = {"className": "sklearn.dummy.DummyClassifier", "params": {}}
    create(kube, namespace, run)
    wait_reason(kube, namespace, "TrainingRun", "weak", "Registered", timeout=TRAIN_TIMEOUT)
    weak = _store_path(get(kube, namespace, "TrainingRun", "weak")["status"]["artifact"]["uri"])
    assert weak.exists()
    run["metadata"]["name"] = "strong"
    run["spec"]["estimator"] = sample("TrainingRun")["spec"]["estimator"]
    create(kube, namespace, run)
    wait_reason(kube, namespace, "TrainingRun", "strong", "Registered", timeout=TRAIN_TIMEOUT)
    status = wait_for(lambda: (s := get(kube, namespace, "Model", "iris")["status"])
                      and [v["version"] for v in s["versions"]] == [2] and not s.get("retiring") and s,
                      timeout=TRAIN_TIMEOUT, message="v1 retired and its artifacts deleted")
    assert status["productionVersion"] == 2 and status["latestVersion"] == 2
    assert not weak.exists() and not weak.parent.exists()
    # The Events are posted after the status write, by a later reconcile: wait for them too.
    wanted = {"VersionRetired", "ArtifactsDeleted"}
    wait_for(lambda: wanted <= {e["reason"] for e in events_for(kube, namespace, "iris")},
             timeout=30, message="the VersionRetired and ArtifactsDeleted Events")
