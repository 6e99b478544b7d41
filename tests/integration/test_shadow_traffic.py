"""Shadow traffic on the replicas router, on the real control plane with real servers: the stable version's
servers forward a copy of each answered request to the shadow version's Service, users only ever get the
stable's answers, and status.shadow reports what the copies showed.

The stable servers call the shadow through its Service URL; the local kubelet's service proxy plays cluster
DNS and kube-proxy for that (kultivar.devcluster.serviceproxy), sending each copy to a Ready shadow pod.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
from kapi import BETTER_C, WEAK_C, assert_promoted, create, get, sample, wait_reason
from test_serving_path import IRIS_ROW, TIMEOUT, _serving_pods, infer

from helpers import wait_for
from kultivar.domain.metrics import parse

ROWS = [IRIS_ROW, [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


def train(kube, namespace: str, name: str, C: float) -> None:
    run = sample("TrainingRun")
    run["metadata"]["name"] = name
    run["spec"]["estimator"]["params"].update(C=C)
    create(kube, namespace, run)
    wait_reason(kube, namespace, "TrainingRun", name, "Registered", timeout=TIMEOUT)


def pods(kube, namespace: str, selector: str) -> list[dict[str, Any]]:
    _, out = kube.raw("GET", f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}")
    return [p for p in out["items"] if not p["metadata"].get("deletionTimestamp")]


def env(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in pod["spec"]["containers"][0].get("env") or []}


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])


def test_a_shadow_gets_copies_while_users_only_see_stable_answers(kube, namespace, kubelet) -> None:
    create(kube, namespace, sample("Dataset"))
    create(kube, namespace, sample("Model"))
    train(kube, namespace, "iris-logreg-1", WEAK_C)
    train(kube, namespace, "iris-logreg-2", BETTER_C)
    assert_promoted(kube, namespace, "iris", 2)
    body = sample("Deployment")
    body["spec"].update(modelRef={"name": "iris", "version": 1}, replicas=1, strategy={
        "type": "Canary", "canary": {"analysis": {"interval": "2s"}}, "shadow": {"version": 2, "percent": 100}},
        monitoring={"enabled": False, "performance": {"metric": "accuracy", "floor": 0.0, "minLabels": 1},
                    "retrain": {"enabled": False}})
    create(kube, namespace, body)

    # The stable's servers are restarted once with the forwarding settings, after the shadow is ready.
    def forwarding() -> list[str] | None:
        stable = pods(kube, namespace, "kultivar.io/deployment=iris")
        ok = stable and all(env(p).get("KULTIVAR_SHADOW_VERSION") == "2" and is_ready(p) and p["status"].get("podIP")
                            for p in stable)
        return [p["status"]["podIP"] for p in stable] if ok else None

    stable_ips = wait_for(forwarding, timeout=TIMEOUT, message="stable servers forwarding to the shadow")
    shadow_pods = pods(kube, namespace, "kultivar.io/shadow-of=iris")
    assert [p["metadata"]["labels"]["kultivar.io/model-version"] for p in shadow_pods] == ["2"]
    assert "kultivar.io/deployment" not in shadow_pods[0]["metadata"]["labels"]  # never behind the users' Service
    assert env(shadow_pods[0]).get("KULTIVAR_SHADOW_URL") is None
    _, service = kube.raw("GET", f"/api/v1/namespaces/{namespace}/services/iris")
    assert service["spec"]["selector"] == {"kultivar.io/deployment": "iris"}
    assert set(_serving_pods(kube, namespace)) == {1}  # what the users' Service selects: v1 alone
    wait_for(lambda: (get(kube, namespace, "Deployment", "iris")["status"].get("shadow") or {}).get("state")
             == "Running" and get(kube, namespace, "Deployment", "iris")["status"]["shadow"].get("baseline")
             is not None, timeout=60, message="the shadow's window open")

    sent = 30
    answers = [infer(stable_ips[i % len(stable_ips)], ROWS[i % 3]) for i in range(sent)]
    assert {a["model_version"] for a in answers} == {"1"}  # users only ever see the stable's answers

    def measured() -> dict[str, Any] | None:
        shadow = get(kube, namespace, "Deployment", "iris")["status"]["shadow"]
        return shadow if shadow.get("requests") == sent and shadow.get("compared") == sent else None

    shadow = wait_for(measured, timeout=90, message=f"status.shadow counting {sent} copies")
    assert shadow["state"] == "Running" and shadow["version"] == 2 and shadow["stableVersion"] == 1
    assert shadow["forwardErrors"] == 0 and shadow["dropped"] == 0 and shadow["errorRate"] == 0.0
    assert 0.0 <= shadow["agreement"] <= 1.0 and shadow["latencyP95Seconds"] > 0
    assert shadow["predictionShift"] is not None and shadow["metricsSource"] == "pods"
    # The shadow's own counters say the same: it answered every copy.
    ip = shadow_pods[0]["status"]["podIP"]
    with urllib.request.urlopen(f"http://{ip}:8080/metrics", timeout=5) as response:
        own = parse(response.read().decode())
    assert own.requests.get("success") == sent

    # Labels for the answers users got reach the stable server that forwarded them: they count for the shadow
    # too. With the stable's own answers as the labels, the stable scores 1 and the shadow its agreement.
    feedback = {"items": [{"id": a["id"], "version": a["model_version"], "prediction": a["outputs"][0]["data"][0],
                           "actual": a["outputs"][0]["data"][0]} for a in answers]}
    request = urllib.request.Request(f"http://{stable_ips[0]}:8080/v2/models/iris/feedback",
                                     json.dumps(feedback).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert json.loads(response.read())["counted"] == sent
    shadow = wait_for(lambda: (s := get(kube, namespace, "Deployment", "iris")["status"]["shadow"]).get("labels")
                      == sent and s, timeout=60, message="the shadow's live metric from the labels")
    assert shadow["liveMetric"] == "accuracy" and shadow["stableLiveValue"] == 1.0
    assert shadow["liveValue"] == pytest.approx(shadow["agreement"], abs=1e-6)

    # Taking the shadow out of the spec removes its pods and status.
    _, current = kube.raw("GET", f"/apis/kultivar.io/v1alpha1/namespaces/{namespace}/deployments/iris")
    current["spec"]["strategy"].pop("shadow")
    status, out = kube.raw("PUT", f"/apis/kultivar.io/v1alpha1/namespaces/{namespace}/deployments/iris", current)
    assert status == 200, out
    wait_for(lambda: kube.raw("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/iris-shadow")[0] == 404
             and "shadow" not in get(kube, namespace, "Deployment", "iris")["status"], timeout=60,
             message="the shadow's Deployment and status removed")
