"""A canary retrained on drifted data is not judged by how differently it predicts from its drifted stable.

Issue #7: on drifted inputs the stale v1 predicts almost only one class while the retrained v2 predicts both, so
the PSI of their predictions is ~4.6 (an empty class is floored at 1e-4). Against the default maxPredictionShift
0.25 every drift retraining was rolled back; against a loosened 5.0 it was a coin flip on the step's few requests.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kultivar.api.deployment import DeploymentSpec
from kultivar.domain.metrics import Snapshot
from kultivar.domain.rollout import Pods, RolloutInput, decide, stale_reference

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
OLD, NEW = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def model(v2_digest: str = NEW, v2_run: str = "shop-drift-1") -> dict:
    return {"status": {"productionVersion": 2, "versions": [
        {"version": 1, "trainingRun": "shop-1", "datasetDigest": OLD},
        {"version": 2, "trainingRun": v2_run, "datasetDigest": v2_digest}]}}


DRIFTED = {"drift": {"version": 1, "drifted": True}}
RETRAINED = {"drift": {"version": 1, "drifted": False}, "lastRetrain": {"trainingRun": "shop-drift-1"}}


def test_stale_reference_needs_newer_data_and_a_drifted_stable() -> None:
    assert "not enforced" in stale_reference(model(), DRIFTED, 1, 2)
    # the drift retraining run this Deployment started, even if the latest window did not judge drift
    assert stale_reference(model(), RETRAINED, 1, 2)
    assert stale_reference(model(v2_digest=OLD), DRIFTED, 1, 2) is None  # same data: shift is meaningful
    assert stale_reference(model(), {}, 1, 2) is None  # no drift seen: shift is meaningful
    assert stale_reference(model(v2_run="by-hand"), {"lastRetrain": {"trainingRun": "shop-drift-1"}}, 1, 2) is None
    assert stale_reference(model(), {"drift": {"version": 2, "drifted": True}}, 1, 2) is None  # another version
    assert stale_reference(model(), DRIFTED, None, 2) is None
    assert stale_reference(None, DRIFTED, 1, 2) is None


def spec() -> DeploymentSpec:
    return DeploymentSpec.model_validate({"modelRef": {"name": "shop"}, "replicas": 1, "strategy": {
        "type": "Canary", "canary": {"steps": [{"weight": 50, "pause": "3s"}],
                                     "analysis": {"minRequests": 10, "maxPredictionShift": 0.25}}}})


def traffic(class0: float, requests: int = 200) -> Snapshot:
    return Snapshot(requests={"success": float(requests)}, latency={0.01: float(requests), float("inf"): requests},
                    predictions={"0": requests * class0, "1": requests * (1 - class0)})


def analysed(reason: str | None):
    rollout = {"version": 2, "step": 0, "state": "Stepping", "stepStartedAt": "2026-05-01T12:00:00Z"}
    return decide(RolloutInput(
        spec=spec(), target=2, stable=1, rollout=rollout, rolled_back=[], pods={1: Pods(1, 1), 2: Pods(1, 1)},
        metrics={1: traffic(0.0), 2: traffic(0.5)}, now=T0 + timedelta(seconds=5), stale_reference=reason))


def test_a_drift_retrained_canary_passes_with_its_shift_reported() -> None:
    reason = stale_reference(model(), DRIFTED, 1, 2)
    d = analysed(reason)
    assert d.analysis["verdict"] == "Pass" and d.rollout["state"] == "Promoting"
    assert d.analysis["predictionShift"] > 4 and reason in d.analysis["message"]


def test_otherwise_the_same_shift_rolls_the_canary_back() -> None:
    d = analysed(None)
    assert d.analysis["verdict"] == "Fail" and d.analysis["failedCheck"] == "PredictionShift"
    assert d.rolled_back == [2]


def test_errors_still_roll_a_drift_retrained_canary_back() -> None:
    rollout = {"version": 2, "step": 0, "state": "Stepping", "stepStartedAt": "2026-05-01T12:00:00Z"}
    broken = Snapshot(requests={"success": 100.0, "error": 100.0}, latency={0.01: 200.0, float("inf"): 200.0},
                      predictions={"0": 50.0, "1": 50.0})
    d = decide(RolloutInput(
        spec=spec(), target=2, stable=1, rollout=rollout, rolled_back=[], pods={1: Pods(1, 1), 2: Pods(1, 1)},
        metrics={1: traffic(0.0), 2: broken}, now=T0 + timedelta(seconds=5),
        stale_reference=stale_reference(model(), DRIFTED, 1, 2)))
    assert d.analysis["verdict"] == "Fail" and d.analysis["failedCheck"] == "ErrorRate"
