"""The serving path on the real control plane: a Kultivar Deployment serves the production version, rolls a
new one out as a canary analysed on real server metrics, promotes it, and rolls a bad one back.

Serving pods run as real `kultivar serve` processes, each on its own loopback address (the pod IP), started
by the local kubelet with exactly the pod's configuration; the operator scrapes their /metrics.
"""

from __future__ import annotations

import json
import urllib.request

from kapi import (
    BETTER_C,
    assert_promoted,
    create,
    events_for,
    get,
    patch_spec,
    ready,
    sample,
    wait_reason,
)

from helpers import BackgroundLoop, wait_for

TIMEOUT = 180
IRIS_ROW = [5.1, 3.5, 1.4, 0.2]


def _serving_pods(kube, namespace: str, name: str = "iris") -> dict[int, list[str]]:
    _, out = kube.raw("GET", f"/api/v1/namespaces/{namespace}/pods?labelSelector=kultivar.io/deployment={name}")
    pods: dict[int, list[str]] = {}
    for p in out["items"]:
        ip = p["status"].get("podIP", "")
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])
        # like a Service's endpoints: only Ready pods get traffic
        if ip.startswith("127.") and ready and not p["metadata"].get("deletionTimestamp"):
            pods.setdefault(int(p["metadata"]["labels"]["kultivar.io/model-version"]), []).append(ip)
    return pods


def infer(ip: str, row: list[float] = IRIS_ROW, timeout: float = 5) -> dict:
    body = {"inputs": [{"name": "input-0", "shape": [1, len(row)], "datatype": "FP64", "data": row}]}
    request = urllib.request.Request(f"http://{ip}:8080/v2/models/iris/infer", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def _ready_server(ip: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{ip}:8080/v2/health/ready", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


class Traffic(BackgroundLoop):
    """Sends requests to every serving pod until stopped, as a Service spreading load over pods would."""

    pause = 0.05
    rows = (IRIS_ROW, [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5])

    def __init__(self, kube, namespace: str) -> None:
        super().__init__()
        self.kube, self.namespace = kube, namespace
        self.sent = 0

    def tick(self) -> None:
        ips = [ip for group in _serving_pods(self.kube, self.namespace).values() for ip in group]
        for ip in ips:
            for row in self.rows:
                try:
                    infer(ip, row, timeout=2)
                    self.sent += 1
                except OSError:
                    pass


def _deployment(**strategy) -> dict:
    body = sample("Deployment")
    body["spec"]["replicas"] = 1
    body["spec"]["strategy"] = {"type": "Canary", "canary": {
        "steps": [{"weight": 25, "pause": "4s"}, {"weight": 50, "pause": "4s"}],
        "analysis": {"interval": "2s", "minRequests": 10, "maxErrorRate": 0.05, "maxLatencyP95Seconds": 10.0,
                     "maxPredictionShift": 0.5}}, **strategy}
    return body


def test_serves_production_version(kube, namespace, iris_v1) -> None:
    create(kube, namespace, _deployment())
    cond = wait_reason(kube, namespace, "Deployment", "iris", "Serving", timeout=TIMEOUT)
    assert "v1" in cond["message"]
    status = get(kube, namespace, "Deployment", "iris")["status"]
    assert status["stableVersion"] == 1 and status["url"].startswith("http://iris.")
    _, dep = kube.raw("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/iris-v1")
    assert dep["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    pod_spec = dep["spec"]["template"]["spec"]
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    container = pod_spec["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    _, svc = kube.raw("GET", f"/api/v1/namespaces/{namespace}/services/iris")
    assert svc["spec"]["selector"] == {"kultivar.io/deployment": "iris"}
    ips = wait_for(lambda: _serving_pods(kube, namespace).get(1), timeout=60, message="a v1 server")
    wait_for(lambda: _ready_server(ips[0]), timeout=60, message="v1 server ready")
    answer = infer(ips[0])
    assert answer["model_name"] == "iris" and answer["outputs"]
    # The registry's digest of the compiled model is bound to the pods, and the operator records what runs it.
    record = get(kube, namespace, "Model", "iris")["status"]["versions"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KULTIVAR_COMPILED_DIGEST"] == record["compiledArtifact"]["digest"]
    variants = wait_for(lambda: [v for v in get(kube, namespace, "Deployment", "iris")["status"]["variants"]
                                 if v.get("backend")], timeout=60, message="the served version's backend in status")
    assert variants[0]["version"] == 1 and variants[0]["backend"] == "onnx" and "backendNote" not in variants[0]


def test_canary_promotes_a_better_version(kube, namespace, iris_v1) -> None:
    create(kube, namespace, _deployment())
    wait_reason(kube, namespace, "Deployment", "iris", "Serving", timeout=TIMEOUT)
    run = sample("TrainingRun")
    run["metadata"]["name"] = "iris-logreg-2"
    run["spec"]["estimator"]["params"]["C"] = BETTER_C  # strictly better than v1: passes the gate
    create(kube, namespace, run)
    wait_reason(kube, namespace, "TrainingRun", "iris-logreg-2", "Registered", timeout=TIMEOUT)
    assert_promoted(kube, namespace, "iris", 2)
    with Traffic(kube, namespace):
        wait_for(lambda: get(kube, namespace, "Deployment", "iris")["status"].get("canaryVersion") == 2,
                 timeout=60, message="canary v2 started")
        status = wait_for(lambda: (s := get(kube, namespace, "Deployment", "iris")["status"])
                          .get("stableVersion") == 2 and s, timeout=TIMEOUT,
                          message=f"v2 promoted (status: {get(kube, namespace, 'Deployment', 'iris')['status']})")
    assert status.get("canaryVersion") is None and status["lastAnalysis"]["verdict"] == "Pass"
    reasons = [e["reason"] for e in events_for(kube, namespace, "iris")]
    assert "CanaryStarted" in reasons and "Promoted" in reasons
    wait_for(lambda: kube.raw("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/iris-v1")[0] == 404,
             timeout=60, message="old stable removed")


def test_bad_canary_is_rolled_back(kube, namespace, iris_v1) -> None:
    create(kube, namespace, _deployment())
    wait_reason(kube, namespace, "Deployment", "iris", "Serving", timeout=TIMEOUT)
    # A model that always predicts one class: its predictions shift far from the stable version's.
    run = sample("TrainingRun")
    run["metadata"]["name"] = "iris-dummy"
    run["spec"]["estimator"] = {"className": "sklearn.dummy.DummyClassifier", "params": {"strategy": "most_frequent"}}
    create(kube, namespace, run)
    wait_reason(kube, namespace, "TrainingRun", "iris-dummy", "Registered", timeout=TIMEOUT)
    # The override is declarative: pin v2 as production in the Model (as a Git commit would).
    patch_spec(kube, namespace, "Model", "iris", {"promotion": {"policy": "Manual"}, "production": 2})
    with Traffic(kube, namespace):
        cond = wait_for(lambda: (c := _condition(kube, namespace, "Degraded")) and c["status"] == "True" and c,
                        timeout=TIMEOUT, message="canary rolled back")
    assert "PredictionShift" in cond["message"]
    status = get(kube, namespace, "Deployment", "iris")["status"]
    assert status["stableVersion"] == 1 and status.get("canaryVersion") is None and status["rolledBack"] == [2]
    assert ready(kube, namespace, "Deployment", "iris")["status"] == "True"  # still serving v1
    wait_for(lambda: any(v.get("rolledBack") for v in get(kube, namespace, "Model", "iris")["status"]["versions"]),
             timeout=30, message="Model records the rollback")
    # Manual: the pin stands, and both objects say that v2 is not what is served.
    model_ready = wait_reason(kube, namespace, "Model", "iris", "ProductionRolledBack", timeout=30)
    assert model_ready["status"] == "False" and "spec.production pins v2" in model_ready["message"]
    assert "v2" in cond["message"] and ready(kube, namespace, "Deployment", "iris")["status"] == "True"
    # Automatic: production returns to the last good version, and says why.
    patch_spec(kube, namespace, "Model", "iris", {"promotion": {"policy": "Automatic"}, "production": None})
    model_ready = wait_for(lambda: (c := ready(kube, namespace, "Model", "iris")) and c["status"] == "True" and c,
                           timeout=30, message="Model production back to v1")
    assert model_ready["message"] == ("v1 is production (v2 was rolled back: its canary in Deployment iris failed "
                                      "analysis)")
    model = get(kube, namespace, "Model", "iris")["status"]
    assert model["productionVersion"] == 1 and model["versions"][1]["rolledBack"] is True
    assert any(e["reason"] == "ProductionRolledBack" and "production is v1 again" in e["message"]
               for e in events_for(kube, namespace, "iris"))
    assert get(kube, namespace, "Deployment", "iris")["status"]["stableVersion"] == 1


def _condition(kube, namespace: str, type_: str) -> dict | None:
    for c in get(kube, namespace, "Deployment", "iris").get("status", {}).get("conditions", []):
        if c["type"] == type_:
            return c
    return None
