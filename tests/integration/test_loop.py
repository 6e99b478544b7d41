"""The whole loop on the real control plane: data -> v1 -> serving -> drifted traffic -> retraining on the
newest data -> v2 through the gate -> canary -> promoted; and the variant where v2 loses the gate.

Every workload runs for real (validation, training, and `kultivar serve` processes on loopback pod IPs).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from kapi import create, events_for, get, wait_reason

from helpers import BackgroundLoop, post_json, wait_for

TIMEOUT = 240


def write_data(path: Path, shift: float, noise: float, rows: int = 600, seed: int = 0,
               regions: Sequence[str] = ()) -> None:
    """Two numeric features; the class is x1 + x2 > 2*shift, with a share `noise` of labels flipped. With
    ``regions``, a categorical column ``region`` drawn from them, with no signal of its own."""
    rng = np.random.default_rng(seed)
    x = rng.normal(shift, 1.0, size=(rows, 2))
    y = (x.sum(axis=1) > 2 * shift).astype(int)
    flip = rng.random(rows) < noise
    y[flip] = 1 - y[flip]
    if regions:
        region = rng.choice(list(regions), rows)
        lines = ["x1,x2,region,y"] + [f"{a:.6f},{b:.6f},{r},{c}"
                                      for (a, b), r, c in zip(x, region, y, strict=True)]
    else:
        lines = ["x1,x2,y"] + [f"{a:.6f},{b:.6f},{c}" for (a, b), c in zip(x, y, strict=True)]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


def objects(data: Path) -> list[dict]:
    meta = {"name": "shop"}
    return [
        {"apiVersion": "kultivar.io/v1alpha1", "kind": "Dataset", "metadata": meta, "spec": {
            "source": {"uri": str(data)},
            "schema": {"target": "y", "task": "classification",
                       "features": [{"name": "x1", "type": "numeric"}, {"name": "x2", "type": "numeric"}]}}},
        {"apiVersion": "kultivar.io/v1alpha1", "kind": "Model", "metadata": meta, "spec": {
            # Same-data gate with significance: on the noisy new data of the second test v2 scores a few points
            # above v1 on the same rows, within the bootstrap interval, so it does not replace v1.
            "promotion": {"metric": "accuracy", "minImprovement": 0.02, "significance": {"confidence": 0.95}}}},
        {"apiVersion": "kultivar.io/v1alpha1", "kind": "TrainingRun", "metadata": {"name": "shop-1"}, "spec": {
            "datasetRef": {"name": "shop"}, "modelRef": {"name": "shop"},
            "estimator": {"className": "sklearn.linear_model.LogisticRegression", "params": {}},
            "evaluation": {"testFraction": 0.3, "seed": 1}}},
        {"apiVersion": "kultivar.io/v1alpha1", "kind": "Deployment", "metadata": meta, "spec": {
            "modelRef": {"name": "shop"}, "replicas": 1,
            "strategy": {"type": "Canary", "canary": {
                "steps": [{"weight": 50, "pause": "3s"}],
                # maxPredictionShift stays at its default (0.25): v2 is retrained on drifted data, and its
                # predictions legitimately differ from v1's (PSI ~4.6); the check is reported, not enforced.
                "analysis": {"interval": "2s", "minRequests": 10, "maxErrorRate": 0.2,
                             "maxLatencyP95Seconds": 10.0}}},
            "monitoring": {"threshold": 0.2, "driftedShare": 0.5, "minSamples": 50, "window": "4s",
                           "retrain": {"enabled": True, "cooldown": "1h", "maxRunsPerDay": 3}}}},
    ]


def _ready_ips(kube, namespace: str) -> list[str]:
    _, out = kube.raw("GET", f"/api/v1/namespaces/{namespace}/pods?labelSelector=kultivar.io/deployment=shop")
    return [p["status"]["podIP"] for p in out["items"]
            if p["status"].get("podIP", "").startswith("127.") and not p["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])]


class DriftedTraffic(BackgroundLoop):
    """Live inputs from a shifted distribution, sent to every Ready serving pod."""

    pause = 0.01

    def __init__(self, kube, namespace: str, shift: float) -> None:
        super().__init__()
        self.kube, self.namespace, self.shift = kube, namespace, shift
        self.rng = np.random.default_rng(5)

    def tick(self) -> None:
        for ip in _ready_ips(self.kube, self.namespace):
            row = self.rng.normal(self.shift, 1.0, size=2).tolist()
            body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": row}]}
            with contextlib.suppress(OSError, ValueError):
                post_json(f"http://{ip}:8080/v2/models/shop/infer", body, timeout=2)


def explain(kube, namespace: str) -> str:
    """The loop's state right now: the Deployment's rollout and analysis, the Model's versions and the recent
    Events. Appended to a failed wait, so a failure says why (a rolled-back canary, a paused step, ...)."""
    lines: list[str] = []
    try:
        st = get(kube, namespace, "Deployment", "shop").get("status") or {}
        rollout = {k: v for k, v in (st.get("rollout") or {}).items() if k != "baseline"}
        drift = {k: v for k, v in (st.get("drift") or {}).items() if k != "baseline"}
        lines += ["Deployment shop:",
                  f"  stableVersion={st.get('stableVersion')} canaryVersion={st.get('canaryVersion')} "
                  f"canaryStep={st.get('canaryStep')} canaryWeight={st.get('canaryWeight')} "
                  f"rolledBack={st.get('rolledBack')}",
                  f"  rollout={json.dumps(rollout)}",
                  f"  lastAnalysis={json.dumps(st.get('lastAnalysis'))}",
                  f"  drift={json.dumps(drift)}",
                  f"  lastRetrain={json.dumps(st.get('lastRetrain'))}"]
        lines += [f"  {c['type']}={c['status']} {c.get('reason')}: {c.get('message')}"
                  for c in st.get("conditions") or []]
        model = get(kube, namespace, "Model", "shop").get("status") or {}
        lines.append(f"Model shop: productionVersion={model.get('productionVersion')}")
        lines += [f"  v{v.get('version')} run={v.get('trainingRun')} data={str(v.get('datasetDigest'))[:19]} "
                  f"metrics={v.get('metrics')} gate={v.get('gate')}" for v in model.get("versions") or []]
        _, out = kube.raw("GET", f"/api/v1/namespaces/{namespace}/events")
        items = sorted(out["items"], key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        lines.append("Events (newest last):")
        lines += [f"  {e.get('lastTimestamp') or e.get('eventTime')} {e['type']} {e['involvedObject']['kind']}/"
                  f"{e['involvedObject']['name']} {e['reason']}: {e.get('message', '')}" for e in items[-30:]]
    except Exception as e:  # the explanation must never hide the original failure
        lines.append(f"(could not read the state: {e!r})")
    return "\n".join(lines)


@contextlib.contextmanager
def explained(kube, namespace: str):
    try:
        yield
    except AssertionError as e:
        raise AssertionError(f"{e}\n\n{explain(kube, namespace)}") from e


def _serving_v1(kube, namespace: str, data: Path) -> None:
    write_data(data, shift=0.0, noise=0.15)  # v1: noisy labels, accuracy around 0.85
    for body in objects(data):
        create(kube, namespace, body)
    wait_reason(kube, namespace, "TrainingRun", "shop-1", "Registered", timeout=TIMEOUT)
    wait_reason(kube, namespace, "Deployment", "shop", "Serving", timeout=TIMEOUT)
    wait_for(lambda: _ready_ips(kube, namespace), timeout=60, message="a Ready v1 server")


def test_drift_retrains_and_a_better_version_rolls_out_by_itself(kube, namespace, kubelet, tmp_path) -> None:
    with explained(kube, namespace):
        data = tmp_path / "shop.csv"
        _serving_v1(kube, namespace, data)
        # The world moved: new data (clean labels) lands at the source, and live traffic comes from it.
        write_data(data, shift=3.0, noise=0.0, seed=1)
        with DriftedTraffic(kube, namespace, shift=3.0):
            drift = wait_for(lambda: (s := get(kube, namespace, "Deployment", "shop")["status"]).get("lastRetrain")
                             and s, timeout=TIMEOUT, message="a drift retraining run")
            assert drift["drift"]["drifted"] is True and drift["drift"]["driftedShare"] >= 0.5
            run_name = drift["lastRetrain"]["trainingRun"]
            assert run_name == "shop-drift-1"
            run = get(kube, namespace, "TrainingRun", run_name)
            assert run["spec"]["trigger"] == "drift" and run["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
            wait_reason(kube, namespace, "TrainingRun", run_name, "Registered", timeout=TIMEOUT)
            model = get(kube, namespace, "Model", "shop")["status"]
            assert model["productionVersion"] == 2, model["versions"][-1]["gate"]
            # v2 trained on the refreshed data, not the old version
            assert model["versions"][1]["datasetDigest"] != model["versions"][0]["datasetDigest"]
            status = wait_for(lambda: (s := get(kube, namespace, "Deployment", "shop")["status"])
                              .get("stableVersion") == 2 and s, timeout=TIMEOUT, message="v2 promoted by the canary")
        print(f"v2's canary analysis: {status['lastAnalysis']}")
        # v1's drifted window stays in the bounded history after v2 took over (its drift check starts afresh)
        history = status["drift"]["history"]
        assert any(h["version"] == 1 and h["drifted"] and h["features"] for h in history), history
        assert [h["time"] for h in history] == sorted(h["time"] for h in history)
        reasons = {e["reason"] for e in events_for(kube, namespace, "shop")}
        assert {"DriftDetected", "RetrainingStarted", "CanaryStarted", "Promoted"} <= reasons
        assert status["lastAnalysis"]["verdict"] == "Pass"
        assert "prediction shift not enforced" in status["lastAnalysis"]["message"]
        # exactly one drift run: the cooldown holds off another
        _, runs = kube.raw("GET", f"/apis/kultivar.io/v1alpha1/namespaces/{namespace}/trainingruns")
        assert sorted(r["metadata"]["name"] for r in runs["items"]) == ["shop-1", "shop-drift-1"]


def test_a_retrained_version_that_loses_the_gate_leaves_production_alone(kube, namespace, kubelet,
                                                                         tmp_path) -> None:
    with explained(kube, namespace):
        data = tmp_path / "shop.csv"
        _serving_v1(kube, namespace, data)
        write_data(data, shift=3.0, noise=0.45, seed=2)  # the new data is mostly noise: a worse model
        with DriftedTraffic(kube, namespace, shift=3.0):
            status = wait_for(lambda: (s := get(kube, namespace, "Deployment", "shop")["status"]).get("lastRetrain")
                              and s, timeout=TIMEOUT, message="a drift retraining run")
            wait_reason(kube, namespace, "TrainingRun", status["lastRetrain"]["trainingRun"], "Registered",
                        timeout=TIMEOUT)
        model = get(kube, namespace, "Model", "shop")["status"]
        assert model["productionVersion"] == 1
        gate = model["versions"][1]["gate"]
        assert gate["passed"] is False and gate["reason"] in ("NoImprovement", "NotSignificant") and gate["message"]
        assert any(e["reason"] == "GateFailed" for e in events_for(kube, namespace, "shop"))
        assert get(kube, namespace, "Deployment", "shop")["status"]["stableVersion"] == 1


def test_a_drift_retraining_on_unchanged_data_is_skipped_until_new_data_lands(kube, namespace, kubelet,
                                                                              tmp_path) -> None:
    with explained(kube, namespace):
        data = tmp_path / "shop.csv"
        _serving_v1(kube, namespace, data)
        v1_digest = get(kube, namespace, "Model", "shop")["status"]["versions"][0]["datasetDigest"]

        def deployment() -> dict:
            return get(kube, namespace, "Deployment", "shop")["status"]

        def drifted_condition(status: dict) -> dict:
            return next(c for c in status.get("conditions") or [] if c["type"] == "Drifted")

        # Live inputs drift, but nothing new lands at the source: a retraining could only learn v1 again.
        with DriftedTraffic(kube, namespace, shift=3.0):
            status = wait_for(lambda: ((s := deployment()).get("retrainWait") or {}).get("skippedAt") and s,
                              timeout=TIMEOUT, message="the drift retraining skipped on unchanged data")
            assert status["retrainWait"]["productionDigest"] == v1_digest
            condition = drifted_condition(status)
            assert condition["status"] == "True" and condition["reason"] == "RetrainSkipped"
            assert condition["message"].startswith(f"the source has no new data since v1 ({v1_digest[:19]}")
            reasons = [e["reason"] for e in events_for(kube, namespace, "shop")]
            assert "RetrainRequested" in reasons and "RetrainSkipped" in reasons
            assert "RetrainingStarted" not in reasons and "lastRetrain" not in status
            # Two more drifted windows close: still no run, and the source is not validated again (no loop).
            attempt = get(kube, namespace, "Dataset", "shop")["status"]["validation"]["attempt"]
            for _ in range(2):
                checked = status["drift"]["checkedAt"]
                status = wait_for(lambda c=checked: (s := deployment())["drift"]["checkedAt"] != c and s,
                                  timeout=60, message="another drift window judged")
            assert status["drift"]["drifted"] is True and drifted_condition(status)["reason"] == "RetrainSkipped"
            assert get(kube, namespace, "Dataset", "shop")["status"]["validation"]["attempt"] == attempt
            _, runs = kube.raw("GET", f"/apis/kultivar.io/v1alpha1/namespaces/{namespace}/trainingruns")
            assert [r["metadata"]["name"] for r in runs["items"]] == ["shop-1"]

            # New labelled data lands and the Dataset is refreshed (a user's request; or its refresh schedule):
            # the next drifted window retrains on it.
            write_data(data, shift=3.0, noise=0.0, seed=1)
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            code, out = kube.raw_patch(f"/apis/kultivar.io/v1alpha1/namespaces/{namespace}/datasets/shop",
                                       {"metadata": {"annotations": {"kultivar.io/refresh-requested": stamp}}})
            assert code == 200, out
            status = wait_for(lambda: (s := deployment()).get("lastRetrain") and s, timeout=TIMEOUT,
                              message="a drift retraining run on the new data")
            assert status["lastRetrain"]["trainingRun"] == "shop-drift-1" and "retrainWait" not in status
            wait_reason(kube, namespace, "TrainingRun", "shop-drift-1", "Registered", timeout=TIMEOUT)
        model = get(kube, namespace, "Model", "shop")["status"]
        assert model["versions"][1]["datasetDigest"] != v1_digest
