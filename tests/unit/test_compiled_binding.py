"""The compiled model bound by the operator (#15): training reports model.onnx's digest, the TrainingRun and the
Model version record keep it, the serving pods get it (KULTIVAR_COMPILED_DIGEST), and a pod that refused its
compiled model becomes a Warning Event (CompiledModelRejected) and status.variants[].backend."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from factories import dataset, finished_job, model, obj, run, succeeded_run, valid_dataset_status
from test_contracts import _manifest

from kultivar.api.contracts import TrainingResult, success
from kultivar.config import OperatorConfig
from kultivar.domain.reasons import Reason
from kultivar.domain.registry import ModelObserved, plan_model
from kultivar.domain.rollout import Pods
from kultivar.domain.serving import DeploymentObserved, ServedBackend, backends_needed, plan_serving
from kultivar.domain.trainingrun import TrainingRunObserved, plan_training_run

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
CONFIG = OperatorConfig(store_url="file:///store", store_pvc="")
ONNX = {"uri": "file:///s/ns/runs/r-1/model.onnx", "digest": "sha256:" + "c" * 64, "sizeBytes": 7}


def _compiled(ok: bool) -> dict[str, Any]:
    return {"compiled": True, "format": "onnx", "artifact": ONNX} if ok else {"compiled": False, "reason": "no"}


def test_training_reports_the_compiled_digest_and_the_registry_keeps_it() -> None:
    result = _manifest(compiled=_compiled(True)).training_result("file:///s/ns/runs/r-1/manifest.json")
    assert result.compiledArtifact is not None and result.compiledArtifact.wire() == ONNX
    assert _manifest(compiled=_compiled(False)).training_result("m").compiledArtifact is None
    assert _manifest().training_result("m").compiledArtifact is None  # trained before models were compiled

    status = {"specAttempt": 1, "jobName": "run-1-train-1", "datasetDigest": "sha256:" + "a" * 64}
    reported = success(TrainingResult, result.wire())
    assert reported is not None
    trained = plan_training_run(TrainingRunObserved(run(status=status), dataset(status=valid_dataset_status()),
                                                    model(), finished_job(True, result.wire()), None), CONFIG, NOW)
    assert trained.status["compiledArtifact"] == ONNX

    finished = succeeded_run("a", 0.9)
    finished["status"]["compiledArtifact"] = ONNX
    registered, _ = plan_model(ModelObserved(model(), [finished, succeeded_run("b", 0.8)], frozenset()), NOW)
    records = {v["trainingRun"]: v for v in registered.status["versions"]}
    assert records["a"]["compiledArtifact"] == ONNX and "compiledArtifact" not in records["b"]


def _deployment(status: dict[str, Any] | None = None) -> dict[str, Any]:
    return obj("Deployment", "iris", {"modelRef": {"name": "iris"}, "replicas": 1}, status)


def _registry(compiled: bool) -> dict[str, Any]:
    record = {"version": 1, "artifact": {"uri": "file:///store/v1/model.skops", "digest": "sha256:" + "b" * 64}}
    if compiled:
        record["compiledArtifact"] = ONNX
    return model(status={"productionVersion": 1, "versions": [record]})


def _env(planned: Any) -> dict[str, str]:
    container = planned.deployments[0]["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"]}


def test_the_serving_pods_get_the_registrys_compiled_digest() -> None:
    with_onnx = plan_serving(DeploymentObserved(obj=_deployment(), model=_registry(True), pods={}), CONFIG, NOW)
    assert _env(with_onnx)["KULTIVAR_COMPILED_DIGEST"] == ONNX["digest"]
    without = plan_serving(DeploymentObserved(obj=_deployment(), model=_registry(False), pods={}), CONFIG, NOW)
    assert "KULTIVAR_COMPILED_DIGEST" not in _env(without)  # the manifest alone decides (a version from before)


def test_the_backend_a_pod_reports() -> None:
    assert ServedBackend.from_metadata({"parameters": {"backend": "onnx"}}) == ServedBackend("onnx")
    rejected = ServedBackend.from_metadata({"parameters": {"backend": "sklearn", "compiledRejected": True,
                                                           "compiledNote": "x" * 2000}})
    assert rejected is not None and rejected.rejected and rejected.note == "x" * 1024
    assert ServedBackend.from_metadata({"name": "iris", "inputs": []}) is None  # still loading
    assert ServedBackend.from_metadata({"parameters": {"backend": "tensorrt"}}) is None


def test_each_versions_backend_is_asked_once_its_pods_are_ready() -> None:
    pods = {1: Pods(desired=1, ready=1, updated=True), 2: Pods(desired=1, ready=0, updated=False)}
    assert backends_needed(_deployment(), pods) == [1]
    known = _deployment({"variants": [{"version": 1, "role": "stable", "weight": 100, "backend": "onnx"}]})
    assert backends_needed(known, pods) == []


def test_a_refused_compiled_model_is_a_warning_event_once() -> None:
    pods = {1: Pods(desired=1, ready=1, updated=True)}
    note = "the compiled model file:///store/v1/model.onnx has digest sha256:dd.., not the sha256:cc.. the registry"
    observed = DeploymentObserved(obj=_deployment(), model=_registry(True), pods=pods,
                                  backends={1: ServedBackend("sklearn", True, note)})
    planned = plan_serving(observed, CONFIG, NOW)
    events = [e for e in planned.plan.events if e.reason == Reason.COMPILED_MODEL_REJECTED]
    assert len(events) == 1 and events[0].type == "Warning"
    assert events[0].message.startswith("v1 answers from its verified skops file") and note in events[0].message
    variant = planned.plan.status["variants"][0]
    assert (variant["backend"], variant["backendNote"]) == ("sklearn", note)

    # Next reconcile: status shows the backend, so the pods are not asked again and nothing is repeated.
    again = DeploymentObserved(obj=_deployment({"variants": planned.plan.status["variants"]}),
                               model=_registry(True), pods=pods)
    assert backends_needed(again.obj, pods) == []
    replanned = plan_serving(again, CONFIG, NOW)
    assert not [e for e in replanned.plan.events if e.reason == Reason.COMPILED_MODEL_REJECTED]
    assert replanned.plan.status["variants"][0]["backend"] == "sklearn"
    assert replanned.plan.status["variants"][0]["backendNote"] == note

    fine = plan_serving(DeploymentObserved(obj=_deployment(), model=_registry(True), pods=pods,
                                           backends={1: ServedBackend("onnx")}), CONFIG, NOW)
    assert not [e for e in fine.plan.events if e.reason == Reason.COMPILED_MODEL_REJECTED]
    assert fine.plan.status["variants"][0]["backend"] == "onnx" and "backendNote" not in fine.plan.status["variants"][0]
