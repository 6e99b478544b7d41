"""A model server that refuses to start for good, on the real control plane: the Kultivar Deployment says why.

iris has no categorical feature, so its versions record no allowed values: with ``spec.serving.unknownCategories:
Refuse`` the real ``kultivar serve`` process (run by the local kubelet with the pod's configuration) stops with
NoAllowedValues in its termination message, and its apps/v1 Deployment would restart it forever. The operator
reads that message from the pod and sets Ready=False ServerFailed naming the version and the server's reason.
"""

from __future__ import annotations

from kapi import create, events_for, patch_spec, sample, wait_reason, weak_first_run

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
