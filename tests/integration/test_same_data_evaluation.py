"""Champion and challenger on the same rows, on the real control plane (#14).

v1 is trained on data A; the source changes to data B and the Dataset is refreshed; v2's record holds v1 and v2
scored on the same held-out rows of B (with the baseline and the bootstrap interval), and the gate decides on
them. Then production's model file is tampered with: the next candidate cannot be compared and is not promoted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from kapi import create, get, path, wait_reason
from test_loop import write_data

from helpers import wait_for

TIMEOUT = 300


REGIONS = ("north", "south")  # a segment feature with no signal of its own


def objects(data: Path) -> list[dict]:
    meta = {"name": "shop"}
    return [
        {"apiVersion": "kultivar.io/v1alpha1", "kind": "Dataset", "metadata": meta, "spec": {
            "source": {"uri": str(data)},
            "schema": {"target": "y", "task": "classification",
                       "features": [{"name": "x1", "type": "numeric"}, {"name": "x2", "type": "numeric"},
                                    {"name": "region", "type": "categorical"}]}}},
        {"apiVersion": "kultivar.io/v1alpha1", "kind": "Model", "metadata": meta, "spec": {
            "description": "Predicts whether a shopper buys.",
            "promotion": {"metric": "accuracy", "significance": {"confidence": 0.95},
                          "segmentMargin": 0.2, "segmentMinRows": 30}}},
    ]


def training_run(name: str) -> dict:
    return {"apiVersion": "kultivar.io/v1alpha1", "kind": "TrainingRun", "metadata": {"name": name}, "spec": {
        "datasetRef": {"name": "shop"}, "modelRef": {"name": "shop"},
        "estimator": {"className": "sklearn.linear_model.LogisticRegression", "params": {}},
        "evaluation": {"testFraction": 0.3, "seed": 1, "segments": ["region"]}}}


def registered(kube, namespace: str, run: str) -> dict:
    wait_reason(kube, namespace, "TrainingRun", run, "Registered", timeout=TIMEOUT)
    number = get(kube, namespace, "TrainingRun", run)["status"]["modelVersion"]
    model = get(kube, namespace, "Model", "shop")["status"]
    return {"model": model, "version": next(v for v in model["versions"] if v["version"] == number)}


def refresh(kube, namespace: str, old_digest: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    status, out = kube.raw_patch(path("Dataset", namespace, "shop"),
                                 {"metadata": {"annotations": {"kultivar.io/refresh-requested": stamp}}})
    assert status == 200, out
    return wait_for(lambda: (d := get(kube, namespace, "Dataset", "shop")["status"].get("digest")) != old_digest and d,
                    timeout=TIMEOUT, message="the Dataset's new version after the refresh")


def test_v2_is_compared_with_v1_on_the_same_rows_of_the_new_data(kube, namespace, kubelet, tmp_path,
                                                                    store_dir) -> None:
    data = tmp_path / "shop.csv"
    write_data(data, shift=0.0, noise=0.15, regions=REGIONS)  # data A
    for body in objects(data):
        create(kube, namespace, body)
    create(kube, namespace, training_run("shop-1"))
    first = registered(kube, namespace, "shop-1")
    v1 = first["version"]
    digest_a = v1["datasetDigest"]
    # A first version: judged by the baseline, significantly (no production to compare with).
    assert v1["gate"]["passed"] is True and v1["gate"]["reason"] == "Passed", v1["gate"]
    assert "no production version to compare with" in v1["gate"]["message"]
    ev1 = v1["evaluation"]
    assert ev1["dataDigest"] == digest_a and ev1["rows"] == 180 and ev1["splitSeed"] == 1
    assert "production" not in ev1 and ev1["interval"]["against"] == "baseline"
    assert ev1["candidate"]["accuracy"] > ev1["baseline"]["accuracy"]
    card = Path(v1["cardUri"].removeprefix("file://")).read_text()
    assert card.startswith("# Model card: shop") and "Predicts whether a shopper buys." in card
    assert first["model"]["productionVersion"] == 1

    write_data(data, shift=3.0, noise=0.0, seed=1, regions=REGIONS)  # data B: the population moved
    digest_b = refresh(kube, namespace, digest_a)
    create(kube, namespace, training_run("shop-2"))
    second = registered(kube, namespace, "shop-2")
    v2 = second["version"]
    ev2 = v2["evaluation"]
    # v1 and v2 on the same 180 held-out rows of B, with the baseline fitted on B's training rows.
    assert v2["datasetDigest"] == digest_b and ev2["dataDigest"] == digest_b and ev2["rows"] == 180
    assert ev2["production"]["version"] == 1 and ev2["production"]["digest"] == v1["artifact"]["digest"]
    v1_on_b, v2_on_b = ev2["production"]["metrics"]["accuracy"], ev2["candidate"]["accuracy"]
    assert v1_on_b < ev1["candidate"]["accuracy"]  # v1 is worse on B than on its own split of A
    assert abs(ev2["difference"] - (v2_on_b - v1_on_b)) < 1e-9
    interval = ev2["interval"]
    assert interval["against"] == "production" and interval["confidence"] == 0.95
    assert interval["low"] <= ev2["difference"] <= interval["high"]
    assert {s["value"] for s in ev2["segments"]} == {"north", "south"}
    assert all(s["production"] is not None for s in ev2["segments"])
    # The decision follows these numbers: on B, v1 is near chance and v2 near perfect, significantly.
    assert interval["low"] > 0 and v2_on_b > v1_on_b + 0.3
    assert v2["gate"]["passed"] is True and v2["gate"]["reason"] == "Improved", v2["gate"]
    assert second["model"]["productionVersion"] == 2
    assert f"vs v1 {v1_on_b:.4g} on the same 180 held-out rows of {digest_b[:19]}…" in v2["gate"]["message"]
    assert "95 % interval" in v2["gate"]["message"]
    card = Path(v2["cardUri"].removeprefix("file://")).read_text()
    assert "| Metric | This version | Baseline | production v1 |" in card and "### accuracy by segment" in card

    # Bad input: production's model file no longer has its registered digest.
    production = get(kube, namespace, "Model", "shop")["status"]["productionVersion"]
    record = next(v for v in get(kube, namespace, "Model", "shop")["status"]["versions"]
                  if v["version"] == production)
    model_file = Path(record["artifact"]["uri"].removeprefix("file://"))
    assert model_file.is_relative_to(store_dir)
    model_file.write_bytes(model_file.read_bytes() + b"tampered")
    create(kube, namespace, training_run("shop-3"))
    third = registered(kube, namespace, "shop-3")
    v3 = third["version"]
    assert v3["gate"]["passed"] is False and v3["gate"]["reason"] == "ComparisonFailed", v3["gate"]
    assert f"could not compare with production v{production}" in v3["gate"]["message"]
    assert "has digest" in v3["evaluation"]["productionError"]
    assert third["model"]["productionVersion"] == production
