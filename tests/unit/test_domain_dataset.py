from __future__ import annotations

from datetime import UTC, datetime, timedelta

from factories import dataset, finished_job, valid_dataset_status

from kultivar.config import OperatorConfig
from kultivar.domain.conditions import READY
from kultivar.domain.dataset import DatasetObserved, plan_dataset, validation_job_name
from kultivar.domain.jobs import JobOutcome

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
CONFIG = OperatorConfig()


def ready(plan):
    return plan.ready.status if plan.ready else "unchanged", plan.ready.reason if plan.ready else ""


def test_first_reconcile_starts_attempt_one() -> None:
    plan = plan_dataset(DatasetObserved(dataset(), None, None), CONFIG, NOW)
    assert [j["metadata"]["name"] for j in plan.jobs] == ["iris-validate-1"]
    assert plan.status["validation"]["attempt"] == 1
    assert ready(plan) == (False, "Validating")


def test_restart_before_status_write_plans_the_same_job_name() -> None:
    # Nothing was recorded: the same attempt number, hence the same Job name (create is then a no-op).
    first = plan_dataset(DatasetObserved(dataset(), None, None), CONFIG, NOW)
    again = plan_dataset(DatasetObserved(dataset(), None, None), CONFIG, NOW + timedelta(seconds=5))
    assert first.jobs[0]["metadata"]["name"] == again.jobs[0]["metadata"]["name"]


def _running(generation: int = 1, extra: dict | None = None) -> dict:
    return {"validation": {"attempt": 1, "generation": generation, "job": validation_job_name("iris", 1),
                           "startedAt": "2026-05-01T11:59:00Z"}, **(extra or {})}


def test_running_attempt_creates_nothing_new() -> None:
    plan = plan_dataset(DatasetObserved(dataset(status=_running()), None, JobOutcome("Running")), CONFIG, NOW)
    assert plan.jobs == []


def test_vanished_job_is_recreated_under_the_same_name() -> None:
    plan = plan_dataset(DatasetObserved(dataset(status=_running()), None, None), CONFIG, NOW)
    assert [j["metadata"]["name"] for j in plan.jobs] == ["iris-validate-1"]


def test_success_records_the_version() -> None:
    result = {"ok": True, "digest": "sha256:" + "c" * 64, "rows": 150, "columns": 5,
              "snapshotUri": "file:///x/data.parquet", "profileUri": "file:///x/profile.json",
              "features": [{"name": "a", "type": "numeric", "missingFraction": 0.0}]}
    plan = plan_dataset(DatasetObserved(dataset(status=_running()), None, finished_job(True, result)), CONFIG, NOW)
    assert ready(plan) == (True, "Validated")
    assert plan.status["digest"] == result["digest"]
    assert plan.status["versions"][-1]["digest"] == result["digest"]
    assert plan.status["validation"]["completedAttempt"] == 1
    assert plan.jobs == []  # no refresh configured: nothing more to do


def test_failed_check_keeps_last_good_version_and_names_the_check() -> None:
    status = {**valid_dataset_status(), **_running()}
    result = {"ok": False, "reason": "DataValidationFailed", "check": "TooFewRows", "message": "3 rows, need 10"}
    plan = plan_dataset(DatasetObserved(dataset(status=status), None, finished_job(False, result)), CONFIG, NOW)
    assert ready(plan) == (False, "DataValidationFailed")
    assert "TooFewRows" in plan.ready.message and "stays usable" in plan.ready.message
    assert "digest" not in plan.status  # the last good digest is untouched


def test_spec_change_starts_a_new_attempt() -> None:
    status = {**valid_dataset_status(), **_running()}
    status["validation"]["completedAttempt"] = 1
    plan = plan_dataset(DatasetObserved(dataset(status=status, generation=2), None, None), CONFIG, NOW)
    assert [j["metadata"]["name"] for j in plan.jobs] == ["iris-validate-2"]


def test_refresh_interval() -> None:
    status = {**valid_dataset_status(), **_running()}
    status["validation"].update(completedAttempt=1, completedAt="2026-05-01T11:30:00Z")
    obj = dataset(status=status, refresh={"interval": "1h"})
    plan = plan_dataset(DatasetObserved(obj, None, None), CONFIG, NOW)
    assert plan.jobs == [] and 1790 <= plan.requeue_after <= 1800
    later = plan_dataset(DatasetObserved(obj, None, None), CONFIG, NOW + timedelta(minutes=31))
    assert [j["metadata"]["name"] for j in later.jobs] == ["iris-validate-2"]


def test_unknown_sklearn_set_and_missing_secret_are_precise() -> None:
    plan = plan_dataset(DatasetObserved(dataset(source={"uri": "sklearn://nope"}), None, None), CONFIG, NOW)
    assert ready(plan) == (False, "UnknownSklearnDataset") and "sklearn://iris" in plan.ready.message
    obj = dataset(source={"uri": "s3://bucket/data.csv", "secretRef": {"name": "creds"}})
    plan = plan_dataset(DatasetObserved(obj, False, None), CONFIG, NOW)
    assert ready(plan) == (False, "SecretNotFound") and plan.jobs == []


def test_validation_job_is_restricted_and_owned() -> None:
    job = plan_dataset(DatasetObserved(dataset(), None, None), CONFIG, NOW).jobs[0]
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert pod["automountServiceAccountToken"] is False
    owner = job["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "Dataset" and owner["controller"] is True
    assert job["metadata"]["labels"]["kultivar.io/owner-name"] == "iris"
    assert READY  # conditions module is importable from domain


def test_pvc_source_is_mounted_read_only_where_the_workload_reads_it() -> None:
    obj = dataset(source={"uri": "pvc://shared-data/iris/iris.csv"})
    job = plan_dataset(DatasetObserved(obj, None, None), CONFIG, NOW).jobs[0]
    pod = job["spec"]["template"]["spec"]
    assert {"name": "source", "persistentVolumeClaim": {"claimName": "shared-data", "readOnly": True}} in pod["volumes"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "source")
    assert mount == {"name": "source", "mountPath": "/var/lib/kultivar/pvc/shared-data", "readOnly": True}


def test_a_source_on_the_store_claim_is_a_second_read_only_mount_of_the_same_volume() -> None:
    """The kubelet never finishes mounting one claim declared as two volumes of a pod (examples/iris does this)."""
    obj = dataset(source={"uri": f"pvc://{CONFIG.store_pvc}/sources/iris.csv"})
    pod = plan_dataset(DatasetObserved(obj, None, None), CONFIG, NOW).jobs[0]["spec"]["template"]["spec"]
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert claims == [CONFIG.store_pvc]
    mounts = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "artifacts"]
    assert mounts == [{"name": "artifacts", "mountPath": CONFIG.store_path},
                      {"name": "artifacts", "mountPath": f"/var/lib/kultivar/pvc/{CONFIG.store_pvc}", "readOnly": True}]


def test_refresh_annotation_starts_a_new_attempt_once() -> None:
    status = {**valid_dataset_status(), **_running()}
    status["validation"].update(completedAttempt=1, completedAt="2026-05-01T11:59:30Z")
    obj = dataset(status=status)
    obj["metadata"]["annotations"] = {"kultivar.io/refresh-requested": "2026-05-01T12:00:00Z"}
    plan = plan_dataset(DatasetObserved(obj, None, None), CONFIG, NOW)
    assert [j["metadata"]["name"] for j in plan.jobs] == ["iris-validate-2"]
    obj["status"]["validation"] = {**plan.status["validation"], "completedAttempt": 2}
    assert plan_dataset(DatasetObserved(obj, None, None), CONFIG, NOW).jobs == []


def test_refresh_never_starts_jobs_faster_than_the_floor() -> None:
    """refresh.interval 0s once started ~20 validation Jobs a minute (issue 18); the schema now says 1m at least,
    and the planner holds to it too, for requested refreshes as well."""
    from kultivar.domain.dataset import MIN_REFRESH_INTERVAL

    status = {**valid_dataset_status(), **_running()}  # attempt 1 started 11:59:00
    status["validation"].update(completedAttempt=1, completedAt="2026-05-01T11:59:20Z")
    obj = dataset(status=status, refresh={"interval": "1m"})  # the minimum the schema allows
    soon = plan_dataset(DatasetObserved(obj, None, None), CONFIG, NOW - timedelta(seconds=30))
    assert soon.jobs == [] and soon.requeue_after == 50  # the interval counts from the end, floored
    floor_over = datetime(2026, 5, 1, 11, 59, 20, tzinfo=UTC) + MIN_REFRESH_INTERVAL
    assert [j["metadata"]["name"] for j in
            plan_dataset(DatasetObserved(obj, None, None), CONFIG, floor_over).jobs] == ["iris-validate-2"]
    # A requested refresh waits for the floor too; a spec change does not.
    requested = dataset(status=status)
    requested["metadata"]["annotations"] = {"kultivar.io/refresh-requested": "2026-05-01T11:59:30Z"}
    held = plan_dataset(DatasetObserved(requested, None, None), CONFIG, NOW - timedelta(seconds=30))
    assert held.jobs == [] and held.requeue_after == 30
    assert plan_dataset(DatasetObserved(requested, None, None), CONFIG, NOW).jobs
    changed = plan_dataset(DatasetObserved(dataset(status=status, generation=2), None, None), CONFIG,
                           NOW - timedelta(seconds=30))
    assert [j["metadata"]["name"] for j in changed.jobs] == ["iris-validate-2"]
