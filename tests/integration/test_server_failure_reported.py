"""A model server that refuses to start for good, on the real control plane: the Kultivar Deployment says why.

iris has no categorical feature, so its versions record no allowed values: with ``spec.serving.unknownCategories:
Refuse`` the real ``kultivar serve`` process (run by the local kubelet with the pod's configuration) stops with
NoAllowedValues in its termination message, and its apps/v1 Deployment would restart it forever. The operator
reads that message from the pod and sets Ready=False ServerFailed naming the version and the server's reason.

A canary whose model file no longer has its registered digest fails the same way (ModelDigestMismatch); there the
stable version is there to fall back to, so the rollout ends rolled back, as a failed analysis ends it.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from kapi import (
    BETTER_C,
    assert_promoted,
    create,
    events_for,
    get,
    patch_spec,
    sample,
    wait_reason,
    weak_first_run,
)

from helpers import wait_for

TIMEOUT = 180


def test_a_server_refusing_to_start_is_reported_on_the_deployment_and_a_fix_serves(kube, namespace, kubelet) -> None:
    create(kube, namespace, sample("Dataset"))
    create(kube, namespace, sample("Model"))
    create(kube, namespace, weak_first_run())
    wait_reason(kube, namespace, "TrainingRun", "iris-logreg-1", "Registered", timeout=TIMEOUT)
    body = sample("Deployment")
    body["spec"]["replicas"] = 1
    body["spec"]["serving"] = {"unknownCategories": "Refuse"}
    create(kube, namespace, body)

    cond = wait_reason(kube, namespace, "Deployment", "iris", "ServerFailed", timeout=TIMEOUT)
    assert cond["status"] == "False"
    assert "NoAllowedValues" in cond["message"] and "v1" in cond["message"], cond["message"]
    # The pod's own record, as a kubelet keeps it: the server's message in the last terminated state.
    _, pods = kube.raw("GET", f"/api/v1/namespaces/{namespace}/pods?labelSelector=kultivar.io/deployment=iris")
    last = [(cs.get("lastState") or {}).get("terminated") or {} for p in pods["items"]
            for cs in p["status"].get("containerStatuses") or []]
    assert any(t.get("exitCode") == 2 and "NoAllowedValues" in t.get("message", "") for t in last), last
    warnings = [e for e in events_for(kube, namespace, "iris") if e["reason"] == "ServerFailed"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning", warnings
    assert "NoAllowedValues" in warnings[0]["message"]

    # The cause removed: the new pods serve, the crashing one goes, and Ready says so.
    patch_spec(kube, namespace, "Deployment", "iris", {"serving": {"unknownCategories": "Accept"}})
    cond = wait_reason(kube, namespace, "Deployment", "iris", "Serving", timeout=TIMEOUT)
    assert "v1" in cond["message"]


def _server_pods(kube, namespace: str) -> list[dict[str, Any]]:
    _, pods = kube.raw("GET", f"/api/v1/namespaces/{namespace}/pods?labelSelector=kultivar.io/deployment=iris")
    return [p for p in pods["items"] if not p["metadata"].get("deletionTimestamp")]


def _answers(ip: str) -> bool:
    body = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]}
    request = urllib.request.Request(f"http://{ip}:8080/v2/models/iris/infer", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return bool(json.loads(response.read())["outputs"])


def _stable_v1_and_an_altered_v2(kube, namespace: str, strategy: dict[str, Any]) -> dict[str, Any]:
    """Deployment iris serving v1 (pinned, so nothing rolls out yet) and v2 registered and production, whose
    stored model file is then altered: its server refuses it (ModelDigestMismatch) on every start. Returns v1's
    serving pod."""
    body = sample("Deployment")
    body["spec"]["replicas"] = 1
    body["spec"]["modelRef"]["version"] = 1  # held on v1 until v2's file is altered: no race with a rollout
    body["spec"]["strategy"] = strategy
    create(kube, namespace, body)
    wait_reason(kube, namespace, "Deployment", "iris", "Serving", timeout=TIMEOUT)
    [stable_pod] = _server_pods(kube, namespace)

    run = sample("TrainingRun")
    run["metadata"]["name"] = "iris-logreg-2"
    run["spec"]["estimator"]["params"]["C"] = BETTER_C
    create(kube, namespace, run)
    wait_reason(kube, namespace, "TrainingRun", "iris-logreg-2", "Registered", timeout=TIMEOUT)
    assert_promoted(kube, namespace, "iris", 2)
    v2 = get(kube, namespace, "Model", "iris")["status"]["versions"][1]
    with Path(v2["artifact"]["uri"].removeprefix("file://")).open("ab") as model_file:
        model_file.write(b"altered after registration")
    return stable_pod


def _still_serving(kube, namespace: str, stable_pod: dict[str, Any]) -> None:
    """v1's pod is the one from before, never restarted, and answers."""
    [pod] = wait_for(lambda: len(p := _server_pods(kube, namespace)) == 1 and p, timeout=60,
                     message="only v1's pod serving")
    assert pod["metadata"]["uid"] == stable_pod["metadata"]["uid"]
    assert all(cs.get("restartCount", 0) == 0 for cs in pod["status"]["containerStatuses"])
    assert _answers(pod["status"]["podIP"])


def test_a_canary_whose_server_fails_for_good_is_rolled_back_and_stable_serves_on(kube, namespace, iris_v1) -> None:
    stable_pod = _stable_v1_and_an_altered_v2(kube, namespace, {"type": "Canary", "canary": {
        "steps": [{"weight": 50, "pause": "5s"}]}})
    patch_spec(kube, namespace, "Deployment", "iris", {"modelRef": {"version": None}})  # serve production: v2
    status = wait_for(lambda: (s := get(kube, namespace, "Deployment", "iris")["status"]).get("rolledBack") and s,
                      timeout=TIMEOUT, message="the canary rolled back")
    assert status["rolledBack"] == [2] and status["stableVersion"] == 1 and status.get("canaryVersion") is None
    assert status.get("rollout") is None
    assert status["lastAnalysis"]["verdict"] == "Fail" and status["lastAnalysis"]["failedCheck"] == "ServerFailed"
    assert "ModelDigestMismatch" in status["lastAnalysis"]["message"], status["lastAnalysis"]

    # Under Automatic the Model's production returns to v1, naming the server's failure.
    model = wait_for(lambda: (m := get(kube, namespace, "Model", "iris")["status"]).get("productionVersion") == 1
                     and m, timeout=60, message="the Model's production back to v1")
    assert model["versions"][1]["rolledBack"] is True
    assert "model server failed" in model["versions"][1]["rollbackReason"], model["versions"][1]
    assert "ModelDigestMismatch" in model["versions"][1]["rollbackReason"]

    # The canary's apps/v1 Deployment goes; v1's pod never stopped answering and still does.
    wait_for(lambda: kube.raw("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/iris-v2")[0] == 404,
             timeout=60, message="the failed canary's Deployment removed")
    cond = wait_reason(kube, namespace, "Deployment", "iris", "Serving", timeout=60)
    assert cond["status"] == "True" and "v1" in cond["message"]
    _still_serving(kube, namespace, stable_pod)

    # One Warning Event on the Deployment, with the server's reason and message; v2 is not tried again.
    warnings = [e for e in events_for(kube, namespace, "iris") if e["type"] == "Warning"
                and e["involvedObject"]["kind"] == "Deployment"]
    assert [e["reason"] for e in warnings] == ["RolledBack"], warnings
    message = warnings[0]["message"]
    assert "v2's model server failed: ModelDigestMismatch" in message and "rolled back to v1" in message, message
    after = get(kube, namespace, "Deployment", "iris")["status"]
    assert after["rolledBack"] == [2] and after["stableVersion"] == 1 and after.get("canaryVersion") is None


def test_a_shadow_whose_server_fails_for_good_is_reported_and_never_touches_the_stable(kube, namespace,
                                                                                       iris_v1) -> None:
    stable_pod = _stable_v1_and_an_altered_v2(kube, namespace, {"type": "Canary"})
    patch_spec(kube, namespace, "Deployment", "iris", {"strategy": {"shadow": {"version": 2, "percent": 50}}})
    shadow = wait_for(lambda: (s := get(kube, namespace, "Deployment", "iris")["status"].get("shadow") or {})
                      .get("state") == "Failed" and s, timeout=TIMEOUT, message="status.shadow Failed")
    assert shadow["version"] == 2 and "v2's model server failed: ModelDigestMismatch" in shadow["message"], shadow
    status = get(kube, namespace, "Deployment", "iris")["status"]
    assert status["stableVersion"] == 1 and not status.get("rolledBack")
    assert wait_reason(kube, namespace, "Deployment", "iris", "Serving", timeout=30)["status"] == "True"
    _still_serving(kube, namespace, stable_pod)  # no forwarding settings: the stable's servers never restarted
    warnings = [e for e in events_for(kube, namespace, "iris") if e["type"] == "Warning"
                and e["involvedObject"]["kind"] == "Deployment"]
    assert [e["reason"] for e in warnings] == ["ShadowFailed"], warnings
    assert get(kube, namespace, "Model", "iris")["status"]["productionVersion"] == 2  # a shadow judges nothing
