"""examples/churn/ as the README tells a user to run it: the CSV placed on the claim kultivar-artifacts, the four
resources applied unchanged, a Dataset validated with its missing values, a version trained by the grid search
and promoted, and the served model answering the README's mixed-type request (request.json) at the pod address
the README points to; values outside a feature's allowed list refused (the example's unknownCategories: Refuse)."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import yaml
from kapi import create, get, wait_reason

from helpers import wait_for

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "churn"
TIMEOUT = 240  # validation, a 15-fit grid search and a model server, on a busy 2-core machine


def _example(kind: str) -> dict:
    return yaml.safe_load((EXAMPLE / f"{kind.lower()}.yaml").read_text())


def _served_address(kube, namespace: str) -> str | None:
    """`kubectl get pods -l kultivar.io/deployment=churn -o wide`: the Ready pod's IP (port 8080)."""
    _, out = kube.raw("GET", f"/api/v1/namespaces/{namespace}/pods?labelSelector=kultivar.io/deployment=churn")
    for pod in out["items"]:
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])
        if ready and pod["status"].get("podIP"):
            return f"http://{pod['status']['podIP']}:8080"
    return None


def _with(**columns: list) -> dict:
    """request.json with the given features' values replaced."""
    body = json.loads((EXAMPLE / "request.json").read_text())
    for tensor in body["inputs"]:
        if tensor["name"] in columns:
            tensor["data"] = columns[tensor["name"]]
    return body


def _infer(url: str, body: dict) -> tuple[int, dict]:
    """The status and JSON answer of a V2 request, 4xx included."""
    request = urllib.request.Request(f"{url}/v2/models/churn/infer", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_churn_example_validates_trains_and_serves_mixed_types(kube, namespace, kubelet, store_dir) -> None:
    # The README's step for the local cluster: copy the file into the store directory behind the claim.
    data = store_dir / "data"
    data.mkdir(exist_ok=True)
    shutil.copyfile(EXAMPLE / "churn.csv", data / "churn.csv")
    for kind in ("Dataset", "Model", "TrainingRun"):
        create(kube, namespace, _example(kind))
    deployment = _example("Deployment")
    # Drift judged over seconds instead of minutes, without retraining (not what this test is about).
    deployment["spec"]["monitoring"].update(window="10s", minSamples=40, retrain={"enabled": False})
    create(kube, namespace, deployment)

    try:
        wait_reason(kube, namespace, "Dataset", "churn", "Validated", timeout=TIMEOUT)
    except AssertionError as exc:  # say why: e.g. the scheduler's FailedScheduling message
        _, events = kube.raw("GET", f"/api/v1/namespaces/{namespace}/events")
        lines = [f"{e['involvedObject']['name']}: {e['reason']}: {e.get('message', '')}" for e in events["items"]]
        raise AssertionError(f"{exc}\nevents:\n" + "\n".join(lines)) from exc
    dataset = get(kube, namespace, "Dataset", "churn")["status"]
    assert dataset["rows"] == 2000
    missing = {f["name"]: f["missingFraction"] for f in dataset["features"]}
    assert missing["tenure_months"] > 0 and missing["payment_method"] > 0 and missing["contract"] == 0
    assert "customer_id" not in missing  # an extra column, ignored

    wait_reason(kube, namespace, "TrainingRun", "churn-logreg-1", "Registered", timeout=TIMEOUT)
    run = get(kube, namespace, "TrainingRun", "churn-logreg-1")["status"]
    assert run["metric"] == "roc_auc" and run["score"] >= 0.75
    assert set(run["bestParams"]) == {"C"}
    wait_reason(kube, namespace, "Model", "churn", "ProductionSet", timeout=30)

    wait_reason(kube, namespace, "Deployment", "churn", "Serving", timeout=TIMEOUT)
    url = wait_for(lambda: _served_address(kube, namespace), timeout=60, message="a Ready churn server pod")
    request = urllib.request.Request(f"{url}/v2/models/churn/infer", (EXAMPLE / "request.json").read_bytes(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.loads(response.read())
    (output,) = answer["outputs"]
    assert output["name"] == "predict" and output["datatype"] == "BYTES" and output["shape"] == [2]
    assert set(output["data"]) <= {"churned", "stayed"}

    # The example refuses unknown categories (spec.serving.unknownCategories: Refuse): a region outside the
    # Dataset's allowed list is a 400 naming the feature and the value; "None" read from the CSV was a missing
    # value in training, so it is one here too (answered, not refused).
    assert get(kube, namespace, "Deployment", "churn")["spec"]["serving"]["unknownCategories"] == "Refuse"
    status, error = _infer(url, _with(region=["mars", "north"]))
    assert status == 400, error
    assert "'region'" in error["error"] and "'mars'" in error["error"] and "allowed" in error["error"]
    status, answer = _infer(url, _with(region=["None", "north"], payment_method=["None", "nan"]))
    assert status == 200 and len(answer["outputs"][0]["data"]) == 2, answer

    # A category the training data never had is answered (all-zero indicators) and counted: reported with drift.
    body = json.loads((EXAMPLE / "request.json").read_text())
    for tensor in body["inputs"]:
        if tensor["name"] == "internet_service":
            tensor["data"] = ["satellite", "dsl"]

    def unseen_reported() -> dict | None:
        request = urllib.request.Request(f"{url}/v2/models/churn/infer", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
        for _ in range(10):
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
        drift = get(kube, namespace, "Deployment", "churn")["status"].get("drift") or {}
        return drift if drift.get("unseenCategories") else None

    drift = wait_for(unseen_reported, timeout=120, interval=1, message="unseen categories in status.drift")
    shares = {u["feature"]: u["share"] for u in drift["unseenCategories"]}
    assert set(shares) == {"internet_service"} and shares["internet_service"] >= 0.4, drift
    assert drift["drifted"] is True  # half the values unseen: drift, whatever the PSI of the other features
