"""What the plugin computes from objects: comparisons, rollout completion (--watch), and the spec changes."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest
import yaml

from kultivar.plugin import changes, facts
from kultivar.plugin.facts import Refused
from plugin_objects import CANARY, D1, D2, MODEL, run, settled


def test_better_follows_the_metric_direction() -> None:
    assert facts.better_of("accuracy", 0.9, 0.95) == 2
    assert facts.better_of("rmse", 0.9, 0.95) == 1
    assert facts.better_of("r2", 0.5, 0.5) is None and facts.better_of("mae", None, 1.0) is None


def test_comparison_on_the_same_split_says_so() -> None:
    model = copy.deepcopy(MODEL)
    model["status"]["versions"][2]["datasetDigest"] = D1
    data = facts.comparison(model, 1, 3, run(1, {"C": 0.5}, D1), run(3, {"C": 0.5}, D1))
    assert data["sameEvaluation"] and data["data"]["same"]
    assert all(p["same"] for p in data["params"])
    assert [m["name"] for m in data["metrics"]] == ["accuracy", "f1"]
    # another seed: other held-out rows even on the same data
    other = run(3, {"C": 0.5}, D1)
    other["spec"]["evaluation"]["seed"] = 7
    assert not facts.comparison(model, 1, 3, run(1, {}, D1), other)["sameEvaluation"]


def test_unknown_version_lists_the_registered_ones() -> None:
    with pytest.raises(Refused, match=r"no version 9 \(registered: v1, v2, v3\)"):
        facts.version_record(MODEL, 9)


def test_rollout_state_for_watch() -> None:
    assert not facts.rollout_state(CANARY).done
    done = facts.rollout_state(settled(CANARY))
    assert done.done and done.ok and "v3 serves all traffic" in done.message
    stale = copy.deepcopy(settled(CANARY))
    stale["metadata"]["generation"] = 3  # a spec change the operator has not seen yet: not over
    assert not facts.rollout_state(stale).done
    failed = settled(CANARY, version=1)
    failed["status"]["conditions"][2] = {"type": "Degraded", "status": "True", "reason": "RolledBack",
                                         "message": "v3 failed ErrorRate", "lastTransitionTime": "x"}
    state = facts.rollout_state(failed)
    assert state.done and not state.ok and "v3 failed ErrorRate" in state.message


def test_promote_pins_production_with_the_manual_policy() -> None:
    change = changes.promote(MODEL, 1)
    assert change.patch == {"spec": {"promotion": {"policy": "Manual"}, "production": 1}}
    assert "policy becomes Manual" in change.note and "--auto" in change.note
    assert changes.automatic(MODEL).patch == {"spec": {"promotion": {"policy": "Automatic"}, "production": None}}


def test_promote_refuses_rolled_back_and_unknown_versions() -> None:
    model = copy.deepcopy(MODEL)
    model["status"]["versions"][0].update(rolledBack=True, rollbackReason="its canary in Deployment iris failed")
    with pytest.raises(Refused, match=r"v1 was rolled back .*retrain model iris"):
        changes.promote(model, 1)
    with pytest.raises(Refused, match="registered: v1, v2, v3"):
        changes.promote(model, 4)


def test_rollback_model_goes_to_the_newest_earlier_version_that_passed_its_gate() -> None:
    change = changes.rollback_model(MODEL, None)  # v2 failed its gate: v1
    assert change.patch["spec"]["production"] == 1 and "from v3 to v1" in change.summary
    assert changes.rollback_model(MODEL, 2).patch["spec"]["production"] == 2
    model = copy.deepcopy(MODEL)
    model["status"]["productionVersion"] = 1
    with pytest.raises(Refused, match="name one with --to"):
        changes.rollback_model(model, None)


def test_canary_commands() -> None:
    assert changes.pause(CANARY, True).patch == {"spec": {"strategy": {"canary": {"paused": True}}}}
    paused = copy.deepcopy(CANARY)
    paused["spec"]["strategy"]["canary"]["paused"] = True
    assert changes.pause(paused, False).patch == {"spec": {"strategy": {"canary": {"paused": False}}}}
    with pytest.raises(Refused, match="canary is not paused"):
        changes.pause(CANARY, False)
    abort = changes.abort(CANARY)
    assert abort.patch == {"spec": {"modelRef": {"version": 1}}} and "v3 canary stops" in abort.summary
    # rollback during a canary is an abort
    assert changes.rollback_deployment(CANARY, MODEL, None).patch == abort.patch
    with pytest.raises(Refused, match=r"runs no canary \(v3 serves all traffic\)"):
        changes.pause(settled(CANARY), True)
    with pytest.raises(Refused, match="runs no canary"):
        changes.abort(settled(CANARY))


def test_rollback_and_pin_of_a_settled_deployment() -> None:
    change = changes.rollback_deployment(settled(CANARY), MODEL, None)
    assert change.patch == {"spec": {"modelRef": {"version": 1}}} and "from v3 to v1" in change.summary
    assert changes.pin_deployment(CANARY, MODEL, 2).patch == {"spec": {"modelRef": {"version": 2}}}
    assert changes.pin_deployment(CANARY, MODEL, None).patch == {"spec": {"modelRef": {"version": None}}}


def test_print_gives_a_partial_manifest_to_commit() -> None:
    text = changes.as_yaml(changes.pause(CANARY, True))
    assert text.startswith("# Deployment iris: the v3 canary holds its current step\n")
    assert yaml.safe_load(text) == {"apiVersion": "kultivar.io/v1alpha1", "kind": "Deployment",
                                    "metadata": {"name": "iris", "namespace": "ml"},
                                    "spec": {"strategy": {"canary": {"paused": True}}}}


def test_retrain_repeats_productions_run_on_the_latest_data() -> None:
    now = datetime(2026, 5, 2, 8, 30, tzinfo=UTC)
    assert changes.run_to_repeat(MODEL) == "iris-run-3"
    body = changes.retrain(MODEL, run(3, {"C": 1.0}, D2), now)
    assert body["metadata"]["name"] == "iris-retrain-20260502-083000"
    assert body["metadata"]["annotations"] == {changes.RETRAINED_FROM: "iris-run-3"}
    assert body["spec"]["datasetRef"] == {"name": "iris-data"} and body["spec"]["trigger"] == "manual"
    assert body["spec"]["estimator"]["params"] == {"C": 1.0}
    same = changes.retrain(MODEL, run(3, {}, D2), now, same_data=True, name="again")
    assert same["spec"]["datasetRef"]["digest"] == D2 and same["metadata"]["name"] == "again"
    with pytest.raises(Refused, match="no TrainingRun to repeat"):
        changes.retrain(MODEL, None, now)


def test_deployment_history_keeps_the_status_records_as_stored_in_time_order() -> None:
    dep = copy.deepcopy(CANARY)
    wait = {"version": 1, "dataset": "iris", "productionDigest": D1, "requestedAt": "2026-05-01T11:00:00Z",
            "skippedAt": "2026-05-01T12:30:00.5Z", "message": "the source has no new data"}
    retrain = {"trainingRun": "iris-drift-1", "time": "2026-05-01T12:30:00Z", "reason": "drift"}
    dep["status"].update(retrainWait=wait, lastRetrain=retrain, rolledBack=[2, 3])
    history = facts.deployment_history(dep)
    # the skip is dated by when it happened, the later of its two times; fractional seconds order as time
    assert [(e["field"], e["time"]) for e in history["events"]] == [
        ("lastAnalysis", "2026-05-01T12:09:00Z"), ("lastRetrain", "2026-05-01T12:30:00Z"),
        ("retrainWait", "2026-05-01T12:30:00.5Z")]
    assert history["events"][2]["record"] == wait and history["rolledBack"] == [2, 3]
    assert history["driftWindows"] == CANARY["status"]["drift"]["history"]
    assert facts.worst_feature({"features": [{"feature": "a", "psi": 0.1}, {"feature": "b", "psi": 0.3}]}) == {
        "feature": "b", "psi": 0.3}
    assert facts.worst_feature({"features": []}) is None
    assert facts.deployment_history({"metadata": {"name": "x"}}) == {
        "deployment": "x", "driftWindows": [], "events": [], "rolledBack": []}
