"""Live performance on the real control plane: answers from a real `kultivar serve` pod, ground truth sent to its
feedback endpoint, counted for the version that answered, judged below the floor, and a retraining run
(trigger performance) started by itself."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
from kapi import create, get, wait_reason
from test_loop import TIMEOUT, _ready_ips, explained, objects, write_data

from helpers import BackgroundLoop, post_json, wait_for


class WrongAnswers(BackgroundLoop):
    """Live requests whose true outcome turns out to be the other class: feedback says the model is wrong."""

    def __init__(self, kube: Any, namespace: str) -> None:
        super().__init__()
        self.kube, self.namespace = kube, namespace
        self.rng = np.random.default_rng(9)
        self.counted: list[dict[str, Any]] = []

    def tick(self) -> None:
        for ip in _ready_ips(self.kube, self.namespace)[:1]:  # one replica takes every label
            rows = self.rng.normal(0.0, 1.0, size=(10, 2))
            with contextlib.suppress(OSError, ValueError):
                answer = post_json(f"http://{ip}:8080/v2/models/shop/infer", {"inputs": [
                    {"name": "x", "shape": [10, 2], "datatype": "FP64", "data": rows.ravel().tolist()}]})
                items = [{"id": answer["id"], "version": answer["model_version"], "prediction": p,
                          "actual": 1 - p} for p in answer["outputs"][0]["data"]]
                self.counted.append(post_json(f"http://{ip}:8080/v2/models/shop/feedback", {"items": items}))


def test_wrong_answers_trip_the_floor_and_start_a_performance_run(kube, namespace, kubelet, tmp_path: Path) -> None:
    data = tmp_path / "shop.csv"
    write_data(data, shift=0.0, noise=0.15)
    bodies = objects(data)
    deployment = bodies[-1]
    deployment["spec"]["monitoring"] = {
        "enabled": False,  # drift off: only live performance can start a run
        "performance": {"metric": "accuracy", "floor": 0.8, "minLabels": 30, "window": "4s"},
        "retrain": {"enabled": True, "cooldown": "1h", "maxRunsPerDay": 3}}
    for body in bodies:
        create(kube, namespace, body)
    with explained(kube, namespace):
        wait_reason(kube, namespace, "TrainingRun", "shop-1", "Registered", timeout=TIMEOUT)
        wait_reason(kube, namespace, "Deployment", "shop", "Serving", timeout=TIMEOUT)
        wait_for(lambda: _ready_ips(kube, namespace), timeout=60, message="a Ready v1 server")
        with WrongAnswers(kube, namespace) as traffic:

            def below() -> dict[str, Any] | None:
                status = get(kube, namespace, "Deployment", "shop").get("status") or {}
                cond = next((c for c in status.get("conditions") or [] if c["type"] == "Underperforming"), None)
                return status if cond and cond["status"] == "True" else None

            status = wait_for(below, timeout=TIMEOUT, message="Underperforming=True")
        assert traffic.counted and all(c["counted"] == 10 for c in traffic.counted)
        cond = next(c for c in status["conditions"] if c["type"] == "Underperforming")
        assert cond["reason"] == "BelowFloor" and "live accuracy of v1 is 0.0000" in cond["message"]
        assert "0.8000 below the floor 0.8" in cond["message"]
        perf = status["performance"]
        assert perf["metric"] == "accuracy" and perf["belowFloor"] is True
        (v1,) = perf["versions"]
        assert v1["version"] == 1 and v1["value"] == 0.0 and v1["labels"] >= 30
        def performance_run() -> dict[str, Any] | None:
            _, runs = kube.raw("GET", f"/apis/kultivar.io/v1alpha1/namespaces/{namespace}/trainingruns")
            return next((r for r in runs["items"] if r["metadata"]["name"] == "shop-performance-1"), None)

        run = wait_for(performance_run, timeout=60, message="the performance retraining run")
        assert run["spec"]["trigger"] == "performance"
        last = get(kube, namespace, "Deployment", "shop")["status"]["lastRetrain"]
        assert last["trainingRun"] == "shop-performance-1" and last["trigger"] == "performance"
