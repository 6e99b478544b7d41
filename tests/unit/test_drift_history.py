"""status.drift.history: one entry per judged drift window, in time order, bounded, carried across checks and
versions by the Deployment planner (every planned status here is also checked against the CRD's model and written
through a merge patch: tests/unit/conftest.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from factories import model, obj, run

from kultivar.api.deployment import DRIFT_HISTORY_FEATURES, DRIFT_HISTORY_LIMIT, DeploymentStatus
from kultivar.config import OperatorConfig
from kultivar.domain.deployment import plan_deployment
from kultivar.domain.drift_history import appended, entry, with_history
from kultivar.domain.metrics import Snapshot
from kultivar.domain.rollout import Pods
from kultivar.domain.serving import DeploymentObserved, DriftObserved

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
CONFIG = OperatorConfig(store_url="file:///store", store_pvc="")
REFERENCE = {f"x{i}": {"a": 0.5, "b": 0.5} for i in range(12)}


def stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def check(minute: int, version: int = 1, psi: float = 0.1) -> dict[str, Any]:
    return {"time": stamp(T0 + timedelta(minutes=minute)), "version": version, "samples": 300, "drifted": False,
            "driftedShare": 0.0, "unseenShare": 0.0, "features": [{"feature": "x0", "psi": psi}]}


def test_entries_stay_in_time_order_and_the_newest_are_kept() -> None:
    history: list[dict[str, Any]] = []
    for minute in range(0, 10 * (DRIFT_HISTORY_LIMIT + 5), 10):
        history = appended(history, check(minute))
    assert len(history) == DRIFT_HISTORY_LIMIT
    assert [h["time"] for h in history] == [stamp(T0 + timedelta(minutes=m))
                                            for m in range(50, 10 * (DRIFT_HISTORY_LIMIT + 5), 10)]
    # an entry written late (a leader whose clock ran behind) lands in its place, and the oldest one goes
    late = appended(history, check(55))
    assert [h["time"] for h in late] == [stamp(T0 + timedelta(minutes=55)), *(h["time"] for h in history[1:])]
    # the same check planned again (a retried write) replaces its entry rather than adding one
    again = appended(history, check(10 * (DRIFT_HISTORY_LIMIT + 4), psi=0.3))
    assert len(again) == DRIFT_HISTORY_LIMIT and again[-1]["features"][0]["psi"] == 0.3
    assert again[:-1] == history[:-1]


def test_an_entry_is_the_judged_check_in_short() -> None:
    drift = {"checkedAt": "2026-05-01T12:10:00Z", "version": 3, "samples": 512, "window": "10m", "drifted": True,
             "driftedShare": 0.5, "windowStart": "2026-05-01T12:10:00Z", "baseline": "{}",
             "topFeatures": [{"feature": f"x{i}", "psi": 1.0 - i / 20} for i in range(12)],
             "unseenCategories": [{"feature": "city", "share": 0.2}, {"feature": "plan", "share": 0.4}]}
    e = entry(drift)
    assert e == {"time": "2026-05-01T12:10:00Z", "version": 3, "samples": 512, "drifted": True, "driftedShare": 0.5,
                 "unseenShare": 0.4, "features": drift["topFeatures"][:DRIFT_HISTORY_FEATURES]}
    carried = with_history(drift, [check(0)], judged=True)
    assert carried["history"] == [check(0), e] and {k: v for k, v in carried.items() if k != "history"} == drift
    assert with_history(drift, [check(0)], judged=False)["history"] == [check(0)]
    assert "history" not in with_history(drift, None, judged=False)
    DeploymentStatus.model_validate({"drift": carried})


# --- through the Deployment planner ------------------------------------------------------------------------


def deployment(drift: dict[str, Any], stable: int = 1) -> dict[str, Any]:
    spec = {"modelRef": {"name": "iris"}, "monitoring": {"minSamples": 100, "window": "10m"}}
    return obj("Deployment", "iris", spec, {"stableVersion": stable, "drift": drift})


def observed(dep: dict[str, Any], counts: dict[str, dict[str, float]], version: int = 1) -> DeploymentObserved:
    versions = [{"version": v, "trainingRun": f"iris-run-{v}",
                 "artifact": {"uri": f"file:///store/v{v}/model.skops", "digest": "sha256:" + "b" * 64}}
                for v in (1, 2)]
    registry = model(status={"productionVersion": version, "versions": versions})
    return DeploymentObserved(obj=dep, model=registry, pods={version: Pods(1, 1)},
                              drift=DriftObserved(version, Snapshot(features=counts, reference=REFERENCE),
                                                  [run(f"iris-run-{version}")]))


def closed_window(history: list[dict[str, Any]], version: int = 1) -> dict[str, Any]:
    start = stamp(T0 - timedelta(minutes=11))
    zeros = {f: {"a": 0.0, "b": 0.0} for f in REFERENCE}
    return {"checkedAt": start, "version": version, "samples": 0, "window": "10m", "drifted": False,
            "windowStart": start, "baseline": json.dumps(zeros), "history": history}


def shifted(n: int) -> dict[str, dict[str, float]]:
    """Inputs where feature x<i> drifts more the smaller i is (every feature has n requests)."""
    return {f"x{i}": {"a": n * (0.95 - 0.45 * i / 12), "b": n * (0.05 + 0.45 * i / 12)} for i in range(12)}


def test_a_judged_window_appends_one_entry_with_the_top_features() -> None:
    before = [check(-30), check(-20)]
    planned = plan_deployment(observed(deployment(closed_window(before)), shifted(400)), CONFIG, T0).plan
    drift = planned.status["drift"]
    assert drift["history"][:2] == before and len(drift["history"]) == 3
    new = drift["history"][-1]
    assert new["time"] == stamp(T0) and new["version"] == 1 and new["samples"] == 400
    assert new["drifted"] == drift["drifted"] and new["driftedShare"] == drift["driftedShare"]
    assert new["features"] == drift["topFeatures"] and len(new["features"]) == DRIFT_HISTORY_FEATURES
    assert [f["feature"] for f in new["features"]] == [f"x{i}" for i in range(DRIFT_HISTORY_FEATURES)]


def test_a_window_with_too_few_requests_is_not_recorded_but_the_history_is_kept() -> None:
    before = [check(-20)]
    planned = plan_deployment(observed(deployment(closed_window(before)), shifted(20)), CONFIG, T0).plan
    assert planned.status["drift"]["samples"] == 20 and planned.status["drift"]["history"] == before


def test_a_newly_served_version_starts_a_window_and_keeps_the_earlier_versions_checks() -> None:
    before = [check(-30), check(-20)]
    dep = deployment(closed_window(before), stable=2)
    planned = plan_deployment(observed(dep, shifted(400), version=2), CONFIG, T0).plan
    drift = planned.status["drift"]
    assert drift["version"] == 2 and drift["samples"] == 0 and drift["history"] == before
