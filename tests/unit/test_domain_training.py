from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from factories import dataset, finished_job, model, run, valid_dataset_status

from kultivar.api.contracts import DEFAULT_ESTIMATOR_PACKAGES, estimator_not_allowed
from kultivar.config import OperatorConfig
from kultivar.domain.jobs import JobOutcome
from kultivar.domain.trainingrun import TrainingRunObserved, plan_training_run

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
CONFIG = OperatorConfig()
DS = dataset(status=valid_dataset_status())
MODEL = model()


def plan(obj, ds=DS, mdl=MODEL, job=None, registered=None):
    return plan_training_run(TrainingRunObserved(obj, ds, mdl, job, registered), CONFIG, NOW)


def test_missing_references_are_named() -> None:
    p = plan(run(), ds=None)
    assert (p.ready.status, p.ready.reason) == (False, "DatasetNotFound") and "'iris'" in p.ready.message
    p = plan(run(), mdl=None)
    assert p.ready.reason == "ModelNotFound"


def test_estimator_that_does_not_import() -> None:
    # The import is observed (k8s.observe.estimator_problem) and handed to the planner as a fact.
    spec = {"className": "sklearn.linear_model.NoSuchModel"}
    problem = "'sklearn.linear_model' has no class 'NoSuchModel'; check spec.estimator.className"
    observed = TrainingRunObserved(run(estimator=spec), DS, MODEL, None, None, estimator_problem=problem)
    p = plan_training_run(observed, CONFIG, NOW)
    assert p.ready.reason == "EstimatorImportFailed" and "NoSuchModel" in p.ready.message
    assert p.jobs == []


def test_estimator_from_a_package_that_is_not_permitted() -> None:
    p = plan(run(estimator={"className": "catboost.CatBoostClassifier"}))
    assert p.ready.reason == "EstimatorNotAllowed" and p.jobs == []
    assert "'catboost'" in p.ready.message and "operator.estimatorPackages" in p.ready.message
    # The chart value widens it, and the training pod gets the same list.
    wider = replace(CONFIG, estimator_packages=("sklearn", "catboost"))
    p = plan_training_run(TrainingRunObserved(run(estimator={"className": "catboost.CatBoostClassifier"}), DS,
                                              MODEL, None, None), wider, NOW)
    env = {e["name"]: e["value"] for e in p.jobs[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KULTIVAR_ESTIMATOR_PACKAGES"] == "sklearn,catboost"


@pytest.mark.parametrize("class_name", ["xgboost.XGBClassifier", "xgboost.XGBRegressor", "lightgbm.LGBMClassifier",
                                        "lightgbm.LGBMRegressor"])
def test_boosting_estimators_are_permitted_by_default(class_name: str) -> None:
    assert DEFAULT_ESTIMATOR_PACKAGES == ("sklearn", "xgboost", "lightgbm") == CONFIG.estimator_packages
    assert estimator_not_allowed(class_name, DEFAULT_ESTIMATOR_PACKAGES) is None
    p = plan(run(estimator={"className": class_name}))
    assert p.ready.reason != "EstimatorNotAllowed" and len(p.jobs) == 1
    # A chart value that leaves the package out refuses it, naming that value.
    message = estimator_not_allowed(class_name, ("sklearn",))
    assert message is not None and "operator.estimatorPackages" in message


def test_observing_an_estimator_imports_only_permitted_packages() -> None:
    from kultivar.k8s.observe import estimator_problem

    assert estimator_problem("sklearn.linear_model.LogisticRegression", ("sklearn",)) is None
    assert "has no class" in str(estimator_problem("sklearn.linear_model.NoSuchModel", ("sklearn",)))
    assert "cannot be imported" in str(estimator_problem("sklearn.nope.Model", ("sklearn",)))
    assert "not a scikit-learn estimator" in str(estimator_problem("sklearn.utils.Bunch", ("sklearn",)))
    assert estimator_problem("os.system", ("sklearn",)) is None  # never imported: the planner refuses it
    # A permitted package the operator's image lacks is left to the training pod, which runs the runtime image.
    assert estimator_problem("notinstalledpkg.Model", ("sklearn", "notinstalledpkg")) is None
    assert estimator_problem("xgboost.XGBClassifier", ("sklearn", "xgboost")) is None


def test_a_package_the_operator_lacks_is_looked_for_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Asked on every reconcile of every run: the image's packages do not change, so find_spec runs once."""
    import importlib.util

    from kultivar.k8s.observe import estimator_problem

    looked: list[str] = []
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: looked.append(name) or real(name, *a))
    for _ in range(3):
        assert estimator_problem("absentpkg.Model", ("sklearn", "absentpkg")) is None
    assert looked == ["absentpkg"]


def test_waits_for_dataset_without_a_valid_version() -> None:
    p = plan(run(), ds=dataset(status={}))
    assert p.ready.reason == "WaitingForDataset" and p.jobs == []


def test_pinned_digest_must_exist() -> None:
    p = plan(run(datasetRef={"name": "iris", "digest": "sha256:" + "f" * 64}))
    assert p.ready.reason == "DatasetVersionNotFound"


def test_starts_one_deterministic_job_with_the_dataset_version() -> None:
    p = plan(run(resources={"limits": {"cpu": "2"}}, backoffLimit=3, activeDeadlineSeconds=600))
    (job,) = p.jobs
    assert job["metadata"]["name"] == "run-1-train-1"
    assert job["spec"]["backoffLimit"] == 3 and job["spec"]["activeDeadlineSeconds"] == 600
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {"limits": {"cpu": "2"}}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["KULTIVAR_DATASET_DIGEST"] == "sha256:" + "a" * 64
    assert json.loads(env["KULTIVAR_FEATURES"]) == [{"name": "sepal_length", "type": "numeric"}]
    assert p.status["specAttempt"] == 1 and p.status["jobName"] == "run-1-train-1"
    # Pending until the Job's pod starts, in the very words the next reconcile uses (no second status write)
    assert p.ready.reason == "Pending"
    again = plan(run(status={**p.status, "conditions": []}), job=JobOutcome("Pending"))
    assert again.ready.reason == "Pending" and again.ready.message == p.ready.message


def _started(generation: int = 1, **extra):
    return {"jobName": f"run-1-train-{generation}", "specAttempt": generation,
            "datasetDigest": "sha256:" + "a" * 64, **extra}


def test_running_job_reports_attempts() -> None:
    p = plan(run(status=_started()), job=JobOutcome("Running", attempts=2, start_time="2026-05-01T11:00:00Z"))
    assert p.jobs == [] and p.ready.reason == "Training" and p.status["attempts"] == 2


def test_success_records_metrics_then_waits_for_registration() -> None:
    result = {"ok": True, "metric": "accuracy", "score": 0.97, "metrics": {"accuracy": 0.97},
              "artifact": {"uri": "file:///a/model.skops", "digest": "sha256:" + "b" * 64, "sizeBytes": 5},
              "manifestUri": "file:///a/manifest.json", "datasetDigest": "sha256:" + "a" * 64}
    p = plan(run(status=_started()), job=finished_job(True, result))
    assert p.status["score"] == 0.97 and p.status["artifact"]["uri"].endswith("model.skops")
    assert p.ready.reason == "Registering"
    assert any(c.type == "Succeeded" and c.status is True for c in p.conditions)


def test_registered_version_makes_it_ready() -> None:
    obj = run(status={**_started(), "completionTime": "x", "conditions": [
        {"type": "Succeeded", "status": "True", "reason": "Trained", "message": "", "lastTransitionTime": "x"}]})
    p = plan(obj, registered=4)
    assert (p.ready.status, p.ready.reason) == (True, "Registered") and p.status["modelVersion"] == 4
    # after success, a spec edit starts nothing new
    obj["metadata"]["generation"] = 2
    assert plan(obj, registered=4).jobs == []


def test_a_registered_run_stays_registered_once_retention_dropped_its_version() -> None:
    obj = run(status={**_started(), "completionTime": "x", "modelVersion": 4, "conditions": [
        {"type": "Succeeded", "status": "True", "reason": "Trained", "message": "", "lastTransitionTime": "x"}]})
    p = plan(obj, registered=None)  # the Model no longer lists v4
    assert (p.ready.status, p.ready.reason) == (True, "Registered") and "version 4" in p.ready.message
    assert p.events == [] and "modelVersion" not in p.status


def test_failures_have_precise_reasons() -> None:
    for job, reason in [
        (finished_job(False, {"ok": False, "reason": "EstimatorImportFailed", "message": "no module x"}),
         "EstimatorImportFailed"),
        (finished_job(False, None, reason="BackoffLimitExceeded"), "BackoffLimitExceeded"),
        (finished_job(False, None, reason="DeadlineExceeded"), "DeadlineExceeded"),
        (finished_job(False, {"ok": False, "reason": "DataValidationFailed", "message": "digest mismatch"}),
         "DataValidationFailed"),
    ]:
        p = plan(run(status=_started()), job=job)
        assert (p.ready.status, p.ready.reason) == (False, reason)
        assert "completionTime" in p.status


def test_fixed_spec_after_failure_starts_a_new_job() -> None:
    failed = run(status=_started(completionTime="2026-05-01T11:00:00Z"), generation=2)
    p = plan(failed)
    assert [j["metadata"]["name"] for j in p.jobs] == ["run-1-train-2"]


def test_failed_generation_waits_for_a_fix() -> None:
    failed = run(status=_started(completionTime="2026-05-01T11:00:00Z"))
    assert plan(failed).jobs == []


def test_spec_change_while_running_replaces_the_job() -> None:
    p = plan(run(status=_started(), generation=2), job=JobOutcome("Running"))
    assert p.delete_jobs == ["run-1-train-1"] and p.jobs[0]["metadata"]["name"] == "run-1-train-2"


def test_missing_store_claim_is_explained() -> None:
    p = plan_training_run(TrainingRunObserved(run(), DS, MODEL, None, None, store_claim_found=False), CONFIG, NOW)
    assert p.ready.reason == "ArtifactStoreUnavailable" and "kultivar-artifacts" in p.ready.message
    assert p.jobs == []


def test_job_limits_win_over_the_last_attempts_crash() -> None:
    from kultivar.api.contracts import decode_termination

    crash = decode_termination("Traceback (most recent call last):\nMemoryError")
    p = plan(run(status=_started()), job=finished_job(False, crash, reason="BackoffLimitExceeded"))
    assert p.ready.reason == "BackoffLimitExceeded" and "MemoryError" in p.ready.message


def test_a_new_run_waits_while_newer_data_is_validated() -> None:
    status = valid_dataset_status()
    status["validation"] = {"attempt": 2, "completedAttempt": 1, "generation": 1, "job": "iris-validate-2",
                            "startedAt": "2026-05-01T11:00:00Z"}
    p = plan(run(), ds=dataset(status=status))
    assert p.ready.reason == "WaitingForDataset" and "attempt 2" in p.ready.message and p.jobs == []


def test_the_estimator_check_keeps_scikit_learn_out_of_the_operator_process() -> None:
    """~150 MiB of RSS: the operator asks a child Python (k8s/estimators.py), once per class path."""
    import subprocess
    import sys

    code = ("import sys; import kultivar.controllers.handlers\n"
            "from kultivar.k8s.observe import estimator_problem\n"
            "assert estimator_problem('sklearn.linear_model.LogisticRegression', ('sklearn',)) is None\n"
            "assert 'has no class' in estimator_problem('sklearn.linear_model.Nope', ('sklearn',))\n"
            "print(sorted(m for m in ('sklearn', 'pandas', 'scipy.stats') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    # scipy.stats too (~60 MiB): only a canary's analysis imports it, when it runs (domain/stats/canary.py)
    assert out.stdout.strip() == "[]", out.stderr


def _created_job(obj, generation: int = 1, digest: str = "sha256:" + "c" * 64):
    """The Job an earlier reconcile created for obj, as the watch cache holds it (its status not yet recorded)."""
    p = plan_training_run(TrainingRunObserved(obj, DS, MODEL, None, None), CONFIG, NOW)
    (job,) = p.jobs
    assert job["metadata"]["name"] == f"run-1-train-{generation}"
    job["metadata"]["annotations"]["kultivar.io/dataset-digest"] = digest
    return job


def test_a_job_created_before_its_status_was_written_is_recorded_not_created_again() -> None:
    from kultivar.domain.trainingrun import generation_job

    obj = run()
    job = _created_job(obj)
    assert generation_job(obj, job) is job
    # Recorded with the data it trains on (the Job's, even if the Dataset moved on since), references unread.
    p = plan_training_run(TrainingRunObserved(obj, None, None, None, None, generation_job=job), CONFIG, NOW)
    assert p.jobs == [] and p.delete_jobs == []
    assert p.status["jobName"] == "run-1-train-1" and p.status["specAttempt"] == 1
    assert p.status["datasetDigest"] == "sha256:" + "c" * 64
    assert p.ready.reason == "Pending" and [e.reason for e in p.events] == ["TrainingStarted"]
    # What the reconcile that created it would have written, but for the digest: one status, one set of Events.
    fresh = plan(obj)
    assert {**fresh.status, "datasetDigest": None} == {**p.status, "datasetDigest": None}
    assert fresh.ready == p.ready and fresh.events[0].reason == "TrainingStarted"


def test_only_this_generations_job_of_this_run_is_adopted() -> None:
    from kultivar.domain.trainingrun import generation_job

    job = _created_job(run())
    assert generation_job(run(generation=2), job) is None  # an older generation's Job: a new one starts
    other = run()
    other["metadata"]["uid"] = "another-run-of-the-same-name"
    assert generation_job(other, job) is None  # a deleted run's Job, waiting for garbage collection
    assert generation_job(run(status=_started()), job) is None  # recorded already


def test_a_job_found_running_is_recorded_running_in_one_write() -> None:
    obj = run()
    job = _created_job(obj)
    running = JobOutcome("Running", attempts=1, start_time="2026-05-01T11:59:00Z")
    p = plan_training_run(TrainingRunObserved(obj, DS, MODEL, running, None, generation_job=job), CONFIG, NOW)
    assert p.jobs == [] and p.status["jobName"] == "run-1-train-1"
    assert p.status["startTime"] == "2026-05-01T11:59:00Z" and p.status["attempts"] == 1
    assert p.ready.reason == "Training" and [e.reason for e in p.events] == ["TrainingStarted"]
    # The next reconcile, with the status written, finds nothing to change.
    again = plan(run(status={**p.status, "conditions": []}), job=running)
    assert again.ready == p.ready and again.status == {"attempts": 1}


def test_a_job_created_but_never_recorded_is_superseded_by_a_spec_edit() -> None:
    from kultivar.domain.trainingrun import unrecorded_jobs

    first = run()
    old = _created_job(first)  # created for generation 1; the spec changed before the status recorded it
    edited = run(generation=2)
    assert unrecorded_jobs(edited, [old]) == ("run-1-train-1",)
    assert unrecorded_jobs(first, [old]) == ()  # the current generation's is adopted, not superseded
    finished = {**old, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    assert unrecorded_jobs(edited, [finished]) == ()  # kept, as a recorded finished Job is
    assert unrecorded_jobs(run(generation=2, status={"jobName": "run-1-train-1"}), [old]) == ()  # the status's own
    p = plan_training_run(TrainingRunObserved(edited, DS, MODEL, None, None, unrecorded_jobs=("run-1-train-1",)),
                          CONFIG, NOW)
    assert p.delete_jobs == ["run-1-train-1"] and [j["metadata"]["name"] for j in p.jobs] == ["run-1-train-2"]
