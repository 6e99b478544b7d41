"""The operator <-> pod contracts: what one side builds, the other side parses, in both directions.

Each test goes through the real code of both sides (the operator's planners and the pods' workloads) so that a
field renamed, added or dropped on one side only fails here rather than in a cluster.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from factories import dataset, finished_job, model, run, valid_dataset_status

from kultivar.api.contracts import (
    DEFAULT_ESTIMATOR_PACKAGES,
    ContractError,
    FailureResult,
    HoldoutRef,
    ModelManifest,
    RetentionInput,
    TrainingInput,
    TrainingResult,
    ValidationInput,
    ValidationResult,
    decode_termination,
    encode_termination,
    failure,
    success,
)
from kultivar.api.dataset import DatasetSpec
from kultivar.api.trainingrun import TrainingRunSpec
from kultivar.config import OperatorConfig
from kultivar.domain.dataset import DatasetObserved, plan_dataset, plan_validation_job
from kultivar.domain.registry import plan_retire_job
from kultivar.domain.trainingrun import TrainingRunObserved, plan_training_job, plan_training_run
from kultivar.workloads.storage import ArtifactStore

CONFIG = OperatorConfig(store_url="s3://bucket/kultivar", estimator_packages=("sklearn", "lightgbm"))
NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)
NOW_RUNNING = {"validation": {"attempt": 1, "generation": 1, "job": "iris-validate-1",
                              "startedAt": "2026-05-01T11:59:00Z"}}


def _env(job: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


# -------------------------------------------------------------------------------------------- inputs


def test_validation_job_env_is_what_the_pod_reads() -> None:
    ds = dataset()
    job = plan_validation_job(ds, DatasetSpec.model_validate(ds["spec"]), 1, CONFIG)
    env = _env(job)
    assert set(env) == {*ValidationInput.ENV.values(), "HOME"}
    given = ValidationInput.from_env(env)
    assert given == ValidationInput(spec=ds["spec"], namespace="team-a", name="iris", store=CONFIG.store_url)
    assert json.loads(env["KULTIVAR_SPEC"]) == ds["spec"]  # the user's spec, not a re-serialised model


def test_training_job_env_is_what_the_pod_reads() -> None:
    ds = dataset(status=valid_dataset_status())
    tr = run()
    version = ds["status"]["versions"][0]
    production = {"version": 3, "trainingRun": "r3", "datasetDigest": "sha256:" + "a" * 64, "createdAt": "x",
                  "artifact": {"uri": "s3://bucket/kultivar/r3/model.skops", "digest": "sha256:" + "c" * 64,
                               "sizeBytes": 1}}
    mdl = model(status={"productionVersion": 3, "versions": [production]}, description="Iris species",
                promotion={"metric": "f1", "significance": {"confidence": 0.9}})
    holdout = HoldoutRef(name="iris-holdout", snapshot="s3://bucket/kultivar/h/data.parquet",
                         digest="sha256:" + "f" * 64)
    job = plan_training_job(tr, TrainingRunSpec.model_validate(tr["spec"]), ds, version, CONFIG, mdl, holdout)
    env = _env(job)
    assert set(env) == {*TrainingInput.ENV.values(), "HOME"}
    # The production version the pod compares with, and the Model's policy and description.
    assert given_production(env) == (3, "s3://bucket/kultivar/r3/model.skops", "sha256:" + "c" * 64)
    given = TrainingInput.from_env(env)
    assert given.spec == tr["spec"] and given.uid == tr["metadata"]["uid"]
    assert given.dataset_snapshot == version["snapshotUri"] and given.dataset_digest == version["digest"]
    assert given.profile_uri == version["profileUri"]
    assert (given.task, given.target) == ("classification", "species")
    assert [(f.name, f.type) for f in given.features] == [("sepal_length", "numeric")]
    # The chart value operator.estimatorPackages reaches the pod.
    assert given.estimator_packages == ("sklearn", "lightgbm")
    assert given.promotion == {"metric": "f1", "significance": {"confidence": 0.9}}
    assert (given.model, given.model_description) == ("iris", "Iris species")
    assert given.holdout == holdout
    assert TrainingInput.from_env(given.to_env()) == given


def given_production(env: dict[str, str]) -> tuple[int, str, str] | None:
    ref = TrainingInput.from_env(env).production
    return (ref.version, ref.uri, ref.digest) if ref else None


def test_a_first_version_is_trained_without_production() -> None:
    ds = dataset(status=valid_dataset_status())
    tr = run()
    env = _env(plan_training_job(tr, TrainingRunSpec.model_validate(tr["spec"]), ds, ds["status"]["versions"][0],
                                 CONFIG, model()))
    assert given_production(env) is None and "KULTIVAR_PRODUCTION" not in env


def test_training_input_without_a_profile_and_from_an_older_operator() -> None:
    ds = dataset(status=valid_dataset_status())
    version = {**ds["status"]["versions"][0], "profileUri": None}
    tr = run()
    env = _env(plan_training_job(tr, TrainingRunSpec.model_validate(tr["spec"]), ds, version, OperatorConfig()))
    assert "KULTIVAR_PROFILE_URI" not in env
    del env["KULTIVAR_ESTIMATOR_PACKAGES"]  # an operator that predates the variable
    given = TrainingInput.from_env({**env, "KULTIVAR_SOMETHING_NEW": "x"})
    assert given.profile_uri is None and given.estimator_packages == DEFAULT_ESTIMATOR_PACKAGES


def test_retention_job_env_is_what_the_pod_reads() -> None:
    mdl = model()
    job = plan_retire_job(mdl, {"job": "iris-retire-v1", "artifactUri": "s3://bucket/kultivar/x/model.skops"},
                          CONFIG)
    given = RetentionInput.from_env(_env(job))
    assert given.delete == ["s3://bucket/kultivar/x/model.skops"] and given.store == CONFIG.store_url


@pytest.mark.parametrize("change,needle", [
    ({"KULTIVAR_NAME": ""}, "missing input: set the KULTIVAR_NAME environment variable"),
    ({"KULTIVAR_FEATURES": "[]"}, "KULTIVAR_FEATURES"),
    ({"KULTIVAR_FEATURES": '[{"name": "a", "type": "text"}]'}, "KULTIVAR_FEATURES[0].type"),
    ({"KULTIVAR_TASK": "ranking"}, "KULTIVAR_TASK"),
    ({"KULTIVAR_SPEC": "{oops"}, "KULTIVAR_SPEC is not valid JSON"),
])
def test_bad_inputs_name_their_variable(change: dict[str, str], needle: str) -> None:
    env = TrainingInput(spec={}, namespace="ns", name="r", store="/s", uid="u", dataset_snapshot="/s/x",
                        dataset_digest="sha256:x", task="regression", target="y",
                        features=[{"name": "a", "type": "numeric"}]).to_env()  # type: ignore[list-item]
    with pytest.raises(ContractError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        TrainingInput.from_env({**env, **change})


def test_flags_override_the_environment() -> None:
    env = ValidationInput(spec={"a": 1}, namespace="ns", name="d", store="/s").to_env()
    given = ValidationInput.from_env(env, {"name": "other", "namespace": None})
    assert (given.name, given.namespace) == ("other", "ns")


# ------------------------------------------------------------------------------------------- results


def test_validation_result_from_the_pod_is_recorded_by_the_operator(tmp_path: Path) -> None:
    from kultivar.workloads.validation import run_validation

    spec = DatasetSpec.model_validate(dataset()["spec"])
    produced = run_validation(spec, "team-a", "iris", ArtifactStore(str(tmp_path)))
    assert set(produced) <= set(ValidationResult.model_fields)  # nothing the operator would silently ignore
    reported = decode_termination(encode_termination(produced))
    parsed = success(ValidationResult, reported)
    assert parsed is not None and parsed.wire() == produced
    plan = plan_dataset(DatasetObserved(dataset(status=NOW_RUNNING), None, finished_job(True, reported)),
                        CONFIG, NOW)
    assert plan.status["digest"] == produced["digest"] and plan.status["rows"] == 150
    assert plan.status["features"] == produced["features"]


def test_failures_survive_the_round_trip() -> None:
    produced = FailureResult(reason="DataValidationFailed", check="TooFewRows", message="m",
                             failures=[{"check": "TooFewRows", "message": "m"}]).wire()
    reported = decode_termination(encode_termination(produced))
    assert reported == produced
    parsed = failure(reported)
    assert parsed is not None and (parsed.reason, parsed.check, parsed.retryable) == ("DataValidationFailed",
                                                                                      "TooFewRows", False)
    assert success(ValidationResult, reported) is None


def _manifest(**extra: Any) -> ModelManifest:
    return ModelManifest.model_validate({
        "format": "kultivar.io/model-manifest/v1", "createdAt": "2026-01-01T00:00:00Z",
        "artifact": {"uri": "file:///s/ns/runs/r-1/model.skops", "digest": "sha256:" + "b" * 64, "sizeBytes": 10},
        "sha256": "b" * 64, "estimator": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 200},
        "bestParams": None, "task": "classification", "target": "species",
        "features": [{"name": "x", "type": "numeric", "dtype": "float64"},
                     {"name": "c", "type": "categorical", "dtype": "string"}],
        "classes": [0, 1], "metric": "accuracy", "score": 0.9, "metrics": {"accuracy": 0.9, "f1": 0.8},
        "datasetDigest": "sha256:" + "a" * 64, "datasetSnapshotUri": "file:///s/snap", "profileUri": None,
        "trainRows": 80, "testRows": 20, "seed": 42, "sklearnVersion": "1.5.2", "skopsVersion": "0.10.0",
        "numpyVersion": "2.1.0", "pythonVersion": "3.11.9", "trustedTypes": ["numpy.dtype"], **extra,
    })


def test_training_result_from_the_pod_is_recorded_by_the_operator() -> None:
    produced = _manifest().training_result("file:///s/ns/runs/r-1/manifest.json")
    produced.timings = {"fit": 1.0}
    reported = decode_termination(encode_termination(produced))
    parsed = success(TrainingResult, reported)
    assert parsed == produced
    status = {"specAttempt": 1, "jobName": "run-1-train-1", "datasetDigest": "sha256:" + "a" * 64}
    observed = TrainingRunObserved(run(status=status), dataset(status=valid_dataset_status()), model(),
                                   finished_job(True, reported), None)
    plan = plan_training_run(observed, CONFIG, NOW)
    assert plan.status["artifact"] == produced.artifact.wire()
    assert plan.status["manifestUri"] == produced.manifestUri and plan.status["metrics"] == produced.metrics


def test_termination_log_tail_ending_in_the_result_is_that_result() -> None:
    produced = FailureResult(reason="DataValidationFailed", message="bad").wire()
    tail = f"2026-01-01T00:00:00 reading\nTraceback? no\n{encode_termination(produced)}\n"
    assert decode_termination(tail) == produced


# ------------------------------------------------------------------------------------------ manifest


def test_manifest_of_an_earlier_version_still_loads() -> None:
    # _manifest() is a manifest as the previous, dict-literal training code wrote it; serving needs only artifact,
    # task and features, and ignores fields it does not know.
    written = _manifest().to_json()
    again = ModelManifest.from_json(written)
    assert again == _manifest()
    minimal = {"artifact": {"uri": "u", "digest": "sha256:x", "sizeBytes": 1}, "task": "regression",
               "features": [{"name": "x", "type": "numeric"}], "someFutureField": {"a": 1}}
    assert ModelManifest.from_json(json.dumps(minimal)).features[0].name == "x"


def test_manifest_written_by_training_is_loaded_by_serving(tmp_path: Path) -> None:
    from kultivar.serving.config import ServingConfig
    from kultivar.serving.model import load_served_model
    from kultivar.workloads.training import run_training
    from kultivar.workloads.validation import run_validation

    store = ArtifactStore(str(tmp_path))
    validated = run_validation(DatasetSpec.model_validate(dataset()["spec"]), "team-a", "iris", store)
    trained = run_training(TrainingRunSpec.model_validate(run()["spec"]), validated["snapshotUri"],
                           validated["digest"], validated["profileUri"], "classification", "species",
                           validated["features"], "team-a", "run-1", "0" * 36, store)
    assert set(trained) <= set(TrainingResult.model_fields)  # nothing the operator would silently ignore
    result = success(TrainingResult, trained)
    assert result is not None
    written = json.loads(store.read_bytes(result.manifestUri))
    assert set(written) == set(ModelManifest.model_fields)  # every field written, none outside the model
    config = ServingConfig(model_name="iris", model_uri=result.artifact.uri, model_digest=result.artifact.digest,
                           store=str(tmp_path))
    served = load_served_model(config)
    assert served.manifest == ModelManifest.from_json(store.read_bytes(result.manifestUri))
    assert [f.name for f in served.features] == [f["name"] for f in validated["features"]]
    assert served.classes == [0, 1, 2] and served.profile is not None


def test_a_manifest_that_is_not_one_is_refused_by_name() -> None:
    with pytest.raises(ContractError, match="features"):
        ModelManifest.from_json(json.dumps({"artifact": {"uri": "u", "digest": "d", "sizeBytes": 1},
                                            "task": "regression", "features": []}))
