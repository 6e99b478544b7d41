"""A model server that refuses to start for good: its pod's termination message read (server_failures) and the
Deployment's Ready=False ServerFailed that plan_deployment makes of it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from factories import model, obj

from kultivar.config import OperatorConfig
from kultivar.domain.conditions import READY
from kultivar.domain.deployment import plan_deployment
from kultivar.domain.labels import DEPLOYMENT_LABEL, VERSION_LABEL
from kultivar.domain.reasons import Reason, is_progress
from kultivar.domain.rollout import Pods
from kultivar.domain.server_failures import STARTING_RECHECK_SECONDS, ServerFailure, pod_failure, server_failures
from kultivar.domain.serving import DeploymentObserved

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
CONFIG = OperatorConfig(store_url="file:///store", store_pvc="")
REFUSED = json.dumps({"ok": False, "reason": "NoAllowedValues", "retryable": False,
                      "message": "spec.serving.unknownCategories is Refuse but model iris v1 records no "
                                 "allowed values"})


def pod(name: str = "iris-v1-abc", version: int = 1, state: dict[str, Any] | None = None,
        last: dict[str, Any] | None = None, ready: bool = False, **meta: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"name": "server", "ready": ready, "restartCount": 3,
                              "state": state or {"waiting": {"reason": "CrashLoopBackOff"}}}
    if last is not None:
        status["lastState"] = last
    return {"metadata": {"name": name, "labels": {DEPLOYMENT_LABEL: "iris", VERSION_LABEL: str(version)}, **meta},
            "status": {"phase": "Running", "containerStatuses": [status]}}


def terminated(message: str, code: int = 2) -> dict[str, Any]:
    return {"terminated": {"exitCode": code, "reason": "Error", "message": message}}


# --- reading the pods -----------------------------------------------------------------------------------


def test_a_crash_looping_server_reports_its_reason_from_last_state() -> None:
    found = pod_failure(pod(last=terminated(REFUSED)))
    assert found == ServerFailure(1, "iris-v1-abc", "NoAllowedValues",
                                  "spec.serving.unknownCategories is Refuse but model iris v1 records no allowed "
                                  "values")


def test_a_server_down_right_now_reports_from_its_current_state() -> None:
    found = pod_failure(pod(state=terminated(REFUSED)))
    assert found is not None and found.reason == "NoAllowedValues"


def test_retryable_failures_crashes_and_empty_messages_are_not_permanent() -> None:
    retryable = json.dumps({"ok": False, "reason": "StoreUnavailable", "message": "timeout", "retryable": True})
    assert pod_failure(pod(last=terminated(retryable, code=1))) is None
    assert pod_failure(pod(last=terminated("Traceback (most recent call last):\n  boom", code=1))) is None
    assert pod_failure(pod(last={"terminated": {"exitCode": 137, "reason": "OOMKilled"}})) is None
    assert pod_failure(pod()) is None


def test_a_server_running_and_ready_again_leaves_its_old_exit_behind() -> None:
    assert pod_failure(pod(state={"running": {}}, last=terminated(REFUSED), ready=True)) is None


def test_a_terminating_pod_is_not_reported() -> None:
    assert pod_failure(pod(last=terminated(REFUSED), deletionTimestamp="2026-05-01T12:00:00Z")) is None


def test_one_failure_per_version_whichever_order_the_pods_come_in() -> None:
    pods = [pod("iris-v2-b", 2, last=terminated(REFUSED)), pod("iris-v1-z", last=terminated(REFUSED)),
            pod("iris-v1-a", last=terminated(REFUSED)), pod("iris-v1-ok", state={"running": {}}, ready=True)]
    found = server_failures(pods)
    assert sorted(found) == [1, 2] and found[1].pod == "iris-v1-a"
    assert server_failures(list(reversed(pods))) == found


# --- the plan -----------------------------------------------------------------------------------------------


def registry() -> dict[str, Any]:
    return model(status={"productionVersion": 1, "versions": [
        {"version": 1, "artifact": {"uri": "file:///store/v1/model.skops", "digest": "sha256:" + "b" * 64}}]})


def observed(pods: dict[int, Pods], failures: dict[int, ServerFailure] | None) -> DeploymentObserved:
    dep = obj("Deployment", "iris", {"modelRef": {"name": "iris"}, "serving": {"unknownCategories": "Refuse"}})
    return DeploymentObserved(obj=dep, model=registry(), pods=pods, server_failures=failures)


def ready_of(planned: Any) -> Any:
    conditions = [c for c in planned.plan.conditions if c.type == READY]
    assert len(conditions) == 1
    return conditions[0]


def test_a_permanent_server_failure_makes_the_deployment_not_ready_naming_version_and_reason() -> None:
    failure = ServerFailure(1, "iris-v1-abc", "NoAllowedValues", "model iris v1 records no allowed values")
    planned = plan_deployment(observed({1: Pods(1, 0)}, {1: failure}), CONFIG, T0)
    ready = ready_of(planned)
    assert ready.status is False and ready.reason == Reason.SERVER_FAILED == "ServerFailed"
    assert "v1" in ready.message and "iris-v1-abc" in ready.message and "NoAllowedValues" in ready.message
    assert "records no allowed values" in ready.message
    assert planned.deployments, "the version's Deployment is still kept (the user fixes the cause)"


def test_old_pods_serving_do_not_hide_that_the_new_settings_cannot_run() -> None:
    failure = ServerFailure(1, "iris-v1-new", "NoAllowedValues", "no allowed values")
    planned = plan_deployment(observed({1: Pods(1, 1, updated=False)}, {1: failure}), CONFIG, T0)
    assert ready_of(planned).reason == "ServerFailed"


def test_without_failures_the_serving_plan_decides_ready() -> None:
    assert ready_of(plan_deployment(observed({1: Pods(1, 0)}, None), CONFIG, T0)).reason == "Deploying"
    assert ready_of(plan_deployment(observed({1: Pods(1, 1)}, {}), CONFIG, T0)).reason == "Serving"


def test_servers_still_starting_are_looked_at_again_soon_and_ready_ones_are_not() -> None:
    starting = plan_deployment(observed({1: Pods(1, 0)}, {}), CONFIG, T0)
    assert ready_of(starting).reason == "Deploying" and starting.plan.requeue_after == STARTING_RECHECK_SECONDS
    assert plan_deployment(observed({1: Pods(1, 1)}, None), CONFIG, T0).plan.requeue_after is None


def test_a_failure_of_a_version_no_longer_served_is_ignored() -> None:
    gone = ServerFailure(7, "iris-v7-x", "DigestMismatch", "altered")
    assert ready_of(plan_deployment(observed({1: Pods(1, 1)}, {7: gone}), CONFIG, T0)).reason == "Serving"


def test_server_failed_is_a_warning_not_progress() -> None:
    assert not is_progress("Deployment", Reason.SERVER_FAILED)
