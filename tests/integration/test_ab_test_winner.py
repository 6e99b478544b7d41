"""An A/B test that decides, on the real control plane: a good version (logistic regression) against a bad one
(always the most frequent class), each answered by its own real `kultivar serve` pod, ground truth sent to the
feedback endpoint, and the mSPRT concluding for the good one: status.abTest.result, ABTestConcluded and its
Event, with the user's spec left as it was."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
from kapi import create, events_for, get, wait_reason
from test_loop import TIMEOUT, _ready_ips, explained, objects, write_data

from helpers import BackgroundLoop, post_json, wait_for

STRATEGY = {"type": "ABTest", "canary": {"analysis": {"interval": "2s"}},
            "abTest": {"variants": [{"version": 1, "weight": 50}, {"version": 2, "weight": 50}],
                       "decision": {"metric": "accuracy", "confidence": 0.95, "minSamples": 50}}}


class LabelledTraffic(BackgroundLoop):
    """Live requests to every Ready server, and the true class of each (x1 + x2 > 0, the rule the data follows)
    sent back as feedback, all of it to one replica: any pod counts feedback about any version."""

    def __init__(self, kube: Any, namespace: str) -> None:
        super().__init__()
        self.kube, self.namespace = kube, namespace
        self.rng = np.random.default_rng(11)
        self.counted: list[dict[str, Any]] = []
        self.versions: set[str] = set()

    def tick(self) -> None:
        ips = _ready_ips(self.kube, self.namespace)
        for ip in ips:
            rows = self.rng.normal(0.0, 1.0, size=(10, 2))
            actual = (rows.sum(axis=1) > 0).astype(int).tolist()
            with contextlib.suppress(OSError, ValueError):
                answer = post_json(f"http://{ip}:8080/v2/models/shop/infer", {"inputs": [
                    {"name": "x", "shape": [10, 2], "datatype": "FP64", "data": rows.ravel().tolist()}]})
                self.versions.add(answer["model_version"])
                items = [{"id": answer["id"], "version": answer["model_version"], "prediction": p, "actual": a}
                         for p, a in zip(answer["outputs"][0]["data"], actual, strict=True)]
                self.counted.append(post_json(f"http://{ips[0]}:8080/v2/models/shop/feedback", {"items": items}))


def test_ab_test_concludes_for_the_better_version(kube, namespace, kubelet, tmp_path: Path) -> None:
    data = tmp_path / "shop.csv"
    write_data(data, shift=0.0, noise=0.05)
    dataset, model, good, deployment = objects(data)
    bad = {**good, "metadata": {"name": "shop-2"},
           "spec": {**good["spec"], "estimator": {"className": "sklearn.dummy.DummyClassifier",
                                                  "params": {"strategy": "most_frequent"}}}}
    deployment["spec"]["strategy"] = STRATEGY
    deployment["spec"]["monitoring"] = {"enabled": False}  # no drift retraining in the way
    for body in (dataset, model, good):
        create(kube, namespace, body)
    with explained(kube, namespace):
        wait_reason(kube, namespace, "TrainingRun", "shop-1", "Registered", timeout=TIMEOUT)
        create(kube, namespace, bad)  # v2, after v1: the versions are numbered in registration order
        wait_reason(kube, namespace, "TrainingRun", "shop-2", "Registered", timeout=TIMEOUT)
        create(kube, namespace, deployment)
        wait_for(lambda: len(_ready_ips(kube, namespace)) == 2, timeout=TIMEOUT, message="a Ready server per variant")
        with LabelledTraffic(kube, namespace) as traffic:

            def concluded() -> dict[str, Any] | None:
                status = get(kube, namespace, "Deployment", "shop").get("status") or {}
                cond = next((c for c in status.get("conditions") or [] if c["type"] == "ABTestConcluded"), None)
                return status if cond and cond["status"] == "True" else None

            status = wait_for(concluded, timeout=TIMEOUT, message="ABTestConcluded=True")
        assert traffic.versions == {"1", "2"} and all(c["counted"] == 10 for c in traffic.counted)
        result = status["abTest"]["result"]
        assert result["verdict"] == "Concluded" and result["winner"] == 1
        assert result["pValue"] <= 0.05 and result["effectSize"] > 0 and result["effectLow"] > 0
        assert result["method"].startswith("mSPRT")
        values = {v["version"]: v for v in result["variants"]}
        assert values[1]["labels"] >= 50 and values[2]["labels"] >= 50
        assert values[1]["value"] > 0.85 and values[2]["value"] < 0.7
        cond = next(c for c in status["conditions"] if c["type"] == "ABTestConcluded")
        assert cond["reason"] == "WinnerSignificant" and cond["message"].startswith("v1 wins over v2 on live accuracy")
        wait_for(lambda: any(e["reason"] == "ABTestConcluded" and e["message"].startswith("v1 wins")
                             for e in events_for(kube, namespace, "shop")), timeout=30, message="the Event")
        # Reported, never applied: the user's spec still runs the 50/50 test.
        assert get(kube, namespace, "Deployment", "shop")["spec"]["strategy"]["abTest"] == STRATEGY["abTest"]
