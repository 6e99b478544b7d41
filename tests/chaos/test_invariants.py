"""The chaos tier's checks catch what they are meant to (no cluster: they read objects given here)."""

from __future__ import annotations

from invariants import TEST_MANAGER, duplicate_jobs, orphans, spec_writers, unsettled, version_problems


def _obj(kind: str, name: str, uid: str, generation: int = 1, ready: str = "True", reason: str = "Registered",
         observed: int | None = 1, **extra) -> dict:
    return {"kind": kind, "metadata": {"name": name, "uid": uid, "generation": generation},
            "spec": {"modelRef": {"name": "iris"}},
            "status": {"observedGeneration": observed,
                       "conditions": [{"type": "Ready", "status": ready, "reason": reason, "message": "m"}],
                       **extra}}


def _job(name: str, owner: dict, generation: str = "1", workload: str = "train") -> dict:
    meta = owner["metadata"]
    return {"metadata": {"name": name, "uid": f"job-{name}", "labels": {"kultivar.io/workload": workload},
                         "annotations": {"kultivar.io/generation": generation},
                         "ownerReferences": [{"kind": owner["kind"], "name": meta["name"], "uid": meta["uid"]}]}}


def test_unsettled_names_stale_generations_and_pending_reasons() -> None:
    assert unsettled(_obj("TrainingRun", "a", "u1")) is None
    assert unsettled(_obj("TrainingRun", "a", "u1", ready="False", reason="BackoffLimitExceeded")) is None
    assert "observedGeneration 1 != generation 2" in unsettled(_obj("TrainingRun", "a", "u1", generation=2))
    assert "Training" in unsettled(_obj("TrainingRun", "a", "u1", ready="False", reason="Training"))


def test_duplicate_jobs_counts_per_run_generation() -> None:
    run = _obj("TrainingRun", "a", "u1")
    assert duplicate_jobs([run], [_job("a-train-1", run), _job("a-train-2", run, "2")]) == []
    assert duplicate_jobs([run], [_job("a-train-1", run), _job("a-train-1-x", run)]) == [
        "TrainingRun a generation 1: 2 training Jobs"]


def test_version_problems_find_lost_duplicated_and_gapped_versions() -> None:
    a, b = _obj("TrainingRun", "a", "u1", modelVersion=1), _obj("TrainingRun", "b", "u2", modelVersion=2)
    good = {"metadata": {"name": "iris"}, "status": {"versions": [{"version": 1, "trainingRun": "a"},
                                                                   {"version": 2, "trainingRun": "b"}]}}
    assert version_problems([a, b], [good]) == []
    lost = {"metadata": {"name": "iris"}, "status": {"versions": [{"version": 1, "trainingRun": "a"}]}}
    assert any("lost its version" in p for p in version_problems([a, b], [lost]))
    doubled = {"metadata": {"name": "iris"}, "status": {"versions": [{"version": 1, "trainingRun": "a"},
                                                                     {"version": 3, "trainingRun": "a"}]}}
    problems = version_problems([a], [doubled])
    assert any("not unique and contiguous" in p for p in problems) and any("2 versions" in p for p in problems)


def test_orphans_are_children_whose_owner_is_gone() -> None:
    run = _obj("TrainingRun", "a", "u1")
    job = _job("a-train-1", run)
    pod = {"metadata": {"name": "p", "ownerReferences": [{"name": "a-train-1", "uid": "job-a-train-1"}]}}
    assert orphans([run], [job], [pod]) == []
    assert orphans([], [job], [pod]) == ["Job a-train-1: owner ['a'] is gone"]


def test_spec_writers_are_managers_other_than_the_test() -> None:
    obj = _obj("TrainingRun", "a", "u1")
    mine = {"manager": TEST_MANAGER, "operation": "Update", "fieldsV1": {"f:spec": {"f:estimator": {}}}}
    status = {"manager": "kopf", "operation": "Update", "subresource": "status", "fieldsV1": {"f:status": {}}}
    obj["metadata"]["managedFields"] = [mine, status]
    assert spec_writers(obj) == []
    obj["metadata"]["managedFields"].append({"manager": "kopf", "operation": "Update", "fieldsV1": {"f:spec": {}}})
    assert spec_writers(obj) == ["TrainingRun a: manager 'kopf' (Update) owns spec fields"]
    obj["metadata"]["managedFields"] = [status]
    assert "no managedFields entry" in spec_writers(obj)[0]
