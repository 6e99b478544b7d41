"""Several server processes per pod: the worker count from the CPU limit, the setting, and the pod's metrics
merged from every worker (each sample labelled with its worker, so the operator's sums stay the pod's counts)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from factories import model, obj

from kultivar.api.common import ResourceRequirements
from kultivar.config import OperatorConfig
from kultivar.domain.metrics import parse
from kultivar.domain.serving import DeploymentObserved, plan_serving, server_threads, server_workers
from kultivar.serving.config import ConfigError, ServingConfig
from kultivar.serving.monitoring import ServingMetrics
from kultivar.serving.payload import FeatureSpec, Rows
from kultivar.serving.workers import SiblingUnavailable, WorkerGroup, merge_expositions

BASE = {"KULTIVAR_MODEL_NAME": "iris", "KULTIVAR_MODEL_URI": "/m/model.skops",
        "KULTIVAR_MODEL_DIGEST": "sha256:" + "ab" * 32}


@pytest.mark.parametrize("limits,workers", [
    (None, 1), ({"memory": "1Gi"}, 1), ({"cpu": "500m"}, 1), ({"cpu": "1"}, 1), ({"cpu": "1500m"}, 1),
    ({"cpu": "2"}, 2), ({"cpu": "2500m"}, 2), ({"cpu": 4}, 4), ({"cpu": "1000"}, 256),
])
def test_one_worker_per_whole_core_of_the_cpu_limit(limits: dict[str, str] | None, workers: int) -> None:
    resources = ResourceRequirements(limits=limits) if limits is not None else None
    assert server_workers(resources) == workers
    # Requests alone do not decide it: a pod may burst to its limit, not beyond.
    assert server_workers(ResourceRequirements(requests={"cpu": "4"})) == 1


def test_the_server_pods_get_the_worker_count() -> None:
    registry = model(status={"productionVersion": 1, "versions": [
        {"version": 1, "artifact": {"uri": "file:///store/v1/model.skops", "digest": "sha256:" + "b" * 64}}]})
    deployment = obj("Deployment", "iris", {"modelRef": {"name": "iris"}, "replicas": 1,
                                            "resources": {"limits": {"cpu": "2", "memory": "1Gi"}}}, None)
    planned = plan_serving(DeploymentObserved(obj=deployment, model=registry, pods={}),
                           OperatorConfig(store_url="file:///store", store_pvc=""), datetime(2026, 5, 1, tzinfo=UTC))
    env = {e["name"]: e["value"] for e in planned.deployments[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KULTIVAR_SERVE_WORKERS"] == "2"


def test_worker_setting() -> None:
    assert ServingConfig.from_env(BASE).workers == 1
    assert ServingConfig.from_env({**BASE, "KULTIVAR_SERVE_WORKERS": "3"}).workers == 3
    with pytest.raises(ConfigError, match="KULTIVAR_SERVE_WORKERS must be between 1 and 256"):
        ServingConfig.from_env({**BASE, "KULTIVAR_SERVE_WORKERS": "0"})


def _metrics(requests: int, labels: list[str]) -> ServingMetrics:
    metrics = ServingMetrics("iris", "3", "sha256:" + "ab" * 32, deployment=("team-a", "iris"))
    metrics.bind_model((FeatureSpec("x", "numeric"),), "classification", ["a", "b"], None, False)
    for _ in range(requests):
        metrics.request("success", 0.003)
    metrics.batch(Rows((np.zeros(len(labels)),), len(labels)), np.array(labels, dtype=object))
    return metrics


def test_merged_exposition_sums_to_the_pod_counts() -> None:
    first, second = _metrics(5, ["a", "a", "b"]), _metrics(7, ["b"])
    text = merge_expositions({0: first.exposition(), 1: second.exposition()}).decode()
    # Each series once per worker, told apart by the worker label: a valid exposition (parsed without error).
    assert 'worker="0"' in text and 'worker="1"' in text
    assert text.count("# TYPE kultivar_inference_requests_total counter") == 1
    pod = parse(text)
    assert pod.requests["success"] == 12
    assert pod.predictions == {"a": 2, "b": 2}
    assert sum(v for k, v in pod.latency.items() if k == float("inf")) == 12


def test_group_reads_its_siblings_and_fails_without_them(tmp_path: Path) -> None:
    first, second = _metrics(2, ["a"]), _metrics(3, ["b"])
    one, two = WorkerGroup(str(tmp_path), 0, 2), WorkerGroup(str(tmp_path), 1, 2)

    async def scenario() -> None:
        with pytest.raises(SiblingUnavailable, match="worker 1 of 2"):
            await one.exposition(first.exposition())
        server = await two.serve_samples(second.exposition)
        try:
            pod = parse((await one.exposition(first.exposition())).decode())
        finally:
            server.close()
        assert pod.requests["success"] == 5

    asyncio.run(scenario())
    assert not one.all_ready()
    one.mark_ready()
    assert not one.all_ready()
    two.mark_ready()
    assert one.all_ready() and two.all_ready()


@pytest.mark.parametrize("limits,threads", [
    (None, 1), ({"memory": "1Gi"}, 1), ({"cpu": "500m"}, 1), ({"cpu": "1"}, 1), ({"cpu": "1500m"}, 1),
    ({"cpu": "2"}, 1), ({"cpu": "3500m"}, 1), ({"cpu": "512"}, 2), ({"cpu": "1000"}, 3),
])
def test_onnx_threads_are_the_cpu_limits_cores_per_worker(limits: dict[str, str] | None, threads: int) -> None:
    resources = ResourceRequirements(limits=limits) if limits is not None else None
    assert server_threads(resources) == threads


def test_the_server_pods_get_the_onnx_thread_count() -> None:
    registry = model(status={"productionVersion": 1, "versions": [
        {"version": 1, "artifact": {"uri": "file:///store/v1/model.skops", "digest": "sha256:" + "b" * 64}}]})
    deployment = obj("Deployment", "iris", {"modelRef": {"name": "iris"}, "replicas": 1,
                                            "resources": {"limits": {"cpu": "600", "memory": "1Gi"}}}, None)
    planned = plan_serving(DeploymentObserved(obj=deployment, model=registry, pods={}),
                           OperatorConfig(store_url="file:///store", store_pvc=""), datetime(2026, 5, 1, tzinfo=UTC))
    env = {e["name"]: e["value"] for e in planned.deployments[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KULTIVAR_SERVE_WORKERS"] == "256"
    assert env["KULTIVAR_ONNX_THREADS"] == "2"
