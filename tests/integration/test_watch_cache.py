"""Reads from the watch cache (k8s/cache.py) on the real API server: what they must never cost in correctness."""

from __future__ import annotations

from collections import Counter

from kapi import create, events_for, get, jobs, sample, wait_reason

from kultivar.domain.labels import MANAGED_BY, MANAGER, OWNER_NAME, WORKLOAD
from kultivar.k8s.client import Api

TRAIN_TIMEOUT = 180


def test_list_names_reads_metadata_only_lists_of_our_kinds_and_jobs(kube, namespace) -> None:
    api = Api(kube.api_client)
    for name in ("a", "b"):
        run = sample("TrainingRun")
        run["metadata"]["name"] = name
        create(kube, namespace, run)
    names, version = api.list_names("TrainingRun", namespace)
    assert names == {"a", "b"} and version is not None and int(version) > 0
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "mine", "labels": {MANAGED_BY: MANAGER}},
           "spec": {"template": {"spec": {"restartPolicy": "Never",
                                          "containers": [{"name": "c", "image": "busybox"}]}}}}
    assert api.create_job(namespace, job)
    assert api.create_job(namespace, {**job, "metadata": {"name": "theirs"}})
    assert api.list_names("Job", namespace)[0] == {"mine"}  # only Kultivar's Jobs are cached


def test_runs_started_together_each_start_one_job_once_and_register_once(kube, namespace, kubelet) -> None:
    """Runs read themselves, their Dataset and Model from the cache, and the Model reconciles only the runs that
    wait for it: still, each run gets one Job and one TrainingStarted Event, and one version each."""
    create(kube, namespace, sample("Dataset"))
    create(kube, namespace, sample("Model"))
    names = [f"run-{i}" for i in range(3)]
    for name in names:
        run = sample("TrainingRun")
        run["metadata"]["name"] = name
        create(kube, namespace, run)
    for name in names:
        wait_reason(kube, namespace, "TrainingRun", name, "Registered", timeout=TRAIN_TIMEOUT)
    owners = Counter(j["metadata"]["labels"].get(OWNER_NAME) for j in jobs(kube, namespace)
                     if j["metadata"]["labels"].get(WORKLOAD) == "train")
    assert owners == dict.fromkeys(names, 1)
    for name in names:
        started = [e for e in events_for(kube, namespace, name) if e["reason"] == "TrainingStarted"]
        assert len(started) == 1, started
    status = get(kube, namespace, "Model", "iris")["status"]
    assert sorted(v["version"] for v in status["versions"]) == [1, 2, 3]
    assert sorted(get(kube, namespace, "TrainingRun", n)["status"]["modelVersion"] for n in names) == [1, 2, 3]
    history = Counter((h["type"], h.get("trainingRun")) for h in status["history"])
    assert all(history[("TrainingStarted", n)] == 1 and history[("Registered", n)] == 1 for n in names), history
