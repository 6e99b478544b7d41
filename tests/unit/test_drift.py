"""Drift windows, PSI on known distributions, and the retraining budget."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from kultivar.api.deployment import Monitoring
from kultivar.domain.drift import check_drift, feature_psi, retraining_run, should_retrain, unseen_shares
from kultivar.domain.profile import bin_counts, expected_proportions, numeric_profile

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
MON = Monitoring(threshold=0.2, driftedShare=0.5, minSamples=100, window="10m")
RNG = np.random.default_rng(7)
TRAIN = RNG.normal(0, 1, 20_000)
PROFILE = numeric_profile(TRAIN)
REFERENCE = {"x": {str(i): float(p) for i, p in enumerate(expected_proportions(PROFILE))}}


def counts(values: np.ndarray) -> dict[str, dict[str, float]]:
    return {"x": {str(i): float(c) for i, c in enumerate(bin_counts(PROFILE, values))}}


def test_same_distribution_has_psi_near_zero() -> None:
    assert feature_psi(counts(RNG.normal(0, 1, 5000)), REFERENCE)["x"] < 0.02


def test_shifted_mean_is_drift() -> None:
    assert feature_psi(counts(RNG.normal(1.0, 1, 5000)), REFERENCE)["x"] > 0.2


def test_new_category_is_drift() -> None:
    reference = {"colour": {"red": 0.5, "blue": 0.5, "__other__": 0.0}}
    live = {"colour": {"red": 200.0, "blue": 200.0, "__other__": 600.0}}
    assert feature_psi(live, reference)["colour"] > 0.2


def _window(previous, live, minutes=10):
    return check_drift(MON, previous, 1, live, REFERENCE, T0 + timedelta(minutes=minutes))


def test_window_opens_then_judges_the_delta() -> None:
    before = counts(RNG.normal(0, 1, 1000))  # traffic before the window: in the baseline, not judged
    start = check_drift(MON, None, 1, before, REFERENCE, T0)
    assert not start.evaluated and start.status["windowStart"] and start.requeue_after == 600
    mid = check_drift(MON, start.status, 1, before, REFERENCE, T0 + timedelta(minutes=5))
    assert not mid.evaluated and mid.requeue_after == 300
    during = counts(RNG.normal(2, 1, 2000))
    now = {"x": {k: v + during["x"][k] for k, v in before["x"].items()}}
    end = _window(start.status, now)
    assert end.evaluated and end.drifted and end.status["driftedShare"] == 1.0 and end.status["samples"] == 2000
    assert end.status["topFeatures"][0]["feature"] == "x" and end.events[0][1] == "DriftDetected"


def test_too_few_samples_is_not_drift() -> None:
    start = check_drift(MON, None, 1, counts(np.array([])), REFERENCE, T0)
    end = _window(start.status, counts(RNG.normal(3, 1, 50)))
    assert end.evaluated and not end.drifted and "needed" in end.message


def test_retraining_budget() -> None:
    start = check_drift(MON, None, 1, counts(np.array([])), REFERENCE, T0)
    drifted = _window(start.status, counts(RNG.normal(3, 1, 500)))
    now = T0 + timedelta(minutes=10)
    assert should_retrain(MON, drifted, None, False, now).retrain
    assert should_retrain(MON, drifted, None, True, now).reason == "RetrainInProgress"
    recent = {"time": (now - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ"), "recent": []}
    assert should_retrain(MON, drifted, recent, False, now).reason == "RetrainCooldown"
    many = {"time": (now - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "recent": [(now - timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%SZ") for h in (2, 3, 4)]}
    assert should_retrain(MON, drifted, many, False, now).reason == "RetrainBudgetExhausted"
    off = Monitoring(retrain={"enabled": False})
    assert should_retrain(off, drifted, None, False, now).reason == "RetrainDisabled"


def test_retraining_run_clones_the_production_run() -> None:
    source = {"metadata": {"name": "iris-logreg-1"}, "spec": {
        "datasetRef": {"name": "iris", "digest": "sha256:" + "a" * 64}, "modelRef": {"name": "iris"},
        "estimator": {"className": "sklearn.linear_model.LogisticRegression", "params": {"C": 2}},
        "evaluation": {"metric": "accuracy"}, "trigger": "manual"}}
    deployment = {"metadata": {"name": "iris", "namespace": "ns", "uid": "u"}}
    run = retraining_run(deployment, source, 3, {"kind": "Deployment", "name": "iris", "uid": "u"})
    assert run["metadata"]["name"] == "iris-drift-3" and run["spec"]["trigger"] == "drift"
    assert run["spec"]["datasetRef"] == {"name": "iris"} and run["spec"]["estimator"]["params"] == {"C": 2}
    assert run["metadata"]["labels"]["kultivar.io/retrained-from"] == "iris-logreg-1"


def test_drift_due_in_counts_down_the_open_window() -> None:
    from kultivar.domain.drift import drift_due_in, drift_since

    opened = check_drift(MON, None, 1, {}, REFERENCE, T0, windowed=True).status
    assert "baseline" not in opened and drift_since(opened, 1) == T0
    assert drift_due_in(MON, opened, 1, T0 + timedelta(minutes=4)) == 360
    assert drift_due_in(MON, opened, 1, T0 + timedelta(minutes=11)) == 0
    assert drift_due_in(MON, opened, 2, T0) is None and drift_due_in(MON, None, 1, T0) is None
    assert drift_due_in(Monitoring(enabled=False), opened, 1, T0) is None


COLOURS = {"colour": {"red": 0.5, "blue": 0.5, "__other__": 0.0, "__missing__": 0.0}}


def test_unseen_share_counts_present_values_outside_the_training_categories() -> None:
    live = {"colour": {"red": 45.0, "blue": 45.0, "__other__": 10.0, "__missing__": 100.0}}
    assert unseen_shares(live, COLOURS) == {"colour": 0.1}  # 10 of the 100 present values
    # Training folded rare categories into __other__ (10 % of its present values): only the excess is unseen.
    folded = {"colour": {"red": 0.45, "blue": 0.45, "__other__": 0.1, "__missing__": 0.0}}
    assert unseen_shares(live, folded)["colour"] == 0.0
    assert abs(unseen_shares({"colour": {"red": 40.0, "__other__": 60.0}}, folded)["colour"] - 0.5) < 1e-12
    assert unseen_shares(counts(RNG.normal(0, 1, 100)), REFERENCE) == {}  # numeric features have no categories


def test_unseen_categories_are_drift_whatever_the_psi() -> None:
    monitoring = Monitoring(threshold=0.2, driftedShare=0.6, minSamples=100, window="10m", maxUnseenShare=0.05)
    reference = {**REFERENCE, **COLOURS}
    x = counts(RNG.normal(0, 1, 1000))["x"]  # the numeric feature does not move
    for other, drifted in ((40.0, False), (80.0, True)):  # 4 % and 8 % of the values unseen
        live = {"x": x, "colour": {"red": 500.0 - other / 2, "blue": 500.0 - other / 2, "__other__": other}}
        start = check_drift(monitoring, None, 1, {"x": {k: 0.0 for k in x}, "colour": {}}, reference, T0, False)
        judged = check_drift(monitoring, start.status, 1, live, reference, T0 + timedelta(minutes=10))
        assert judged.evaluated and judged.drifted is drifted, judged.message
        assert judged.status["unseenCategories"] == [{"feature": "colour", "share": other / 1000}]
        assert judged.status["driftedShare"] < 0.6  # at most one feature of two: PSI alone would not call it drift
    assert "colour=8%" in judged.message and "unseen in training" in judged.message
