"""status.history of a Model: what happened, in order, bounded, and who caused it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from factories import model, run, succeeded_run

from kultivar.api.model import ModelStatus
from kultivar.domain import history
from kultivar.domain.registry import ModelObserved, plan_model

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def plan(mdl, runs, now=NOW, rolled_back=None):
    p, _ = plan_model(ModelObserved(mdl, runs, frozenset(), rolled_back=rolled_back or {}), now)
    return p


def kinds(status) -> list[tuple[str, int | None, str]]:
    return [(h["type"], h.get("version"), h["actor"]) for h in status.get("history") or []]


def test_training_registration_and_promotion_are_recorded_once_in_order() -> None:
    started = run("a")  # under way: no completion yet
    started["metadata"]["managedFields"] = [{"manager": "kubectl-client-side-apply", "operation": "Update",
                                             "time": "2026-05-01T11:00:00Z", "fieldsV1": {"f:spec": {}}}]
    p = plan(model(), [started])
    assert kinds(p.status) == [("TrainingStarted", None, "kubectl-client-side-apply")]
    assert p.status["history"][0]["trainingRun"] == "a"
    again = plan(model(status=p.status), [started], now=NOW + timedelta(minutes=1))
    assert "history" not in again.status  # nothing new happened: the list is not rewritten

    done = plan(model(status=p.status), [succeeded_run("a", 0.9)], now=NOW + timedelta(minutes=5))
    assert kinds(done.status) == [("TrainingStarted", None, "kubectl-client-side-apply"),
                                  ("Registered", 1, "operator"), ("Promoted", 1, "operator")]
    assert done.status["history"][1]["reason"].startswith("from TrainingRun a: accuracy=0.9")
    ModelStatus.model_validate(done.status | {"conditions": []})


def test_drift_runs_are_started_by_the_operator() -> None:
    drift = run("iris-drift-1", trigger="drift")
    assert kinds(plan(model(), [drift]).status) == [("TrainingStarted", None, "operator")]


def test_a_pin_names_the_field_manager_that_wrote_spec_production() -> None:
    p = plan(model(), [succeeded_run("a", 0.9, completed="2026-05-01T10:00:00Z"),
                       succeeded_run("b", 0.8, completed="2026-05-01T10:01:00Z")])
    assert p.status["productionVersion"] == 1
    pinned = model(status=p.status, promotion={"policy": "Manual"}, production=2)
    pinned["metadata"]["managedFields"] = [
        {"manager": "kubectl-client-side-apply", "operation": "Update", "time": "2026-05-01T09:00:00Z",
         "fieldsV1": {"f:spec": {"f:promotion": {}, "f:production": {}}}},
        {"manager": "kubectl-kultivar", "operation": "Update", "time": "2026-05-01T11:59:00Z",
         "fieldsV1": {"f:spec": {"f:production": {}}}},
        {"manager": "kultivar", "operation": "Update", "time": "2026-05-01T12:00:00Z", "subresource": "status",
         "fieldsV1": {"f:status": {}}},
    ]
    out = plan(pinned, [], now=NOW + timedelta(minutes=1))
    assert kinds(out.status)[-1] == ("Pinned", 2, "kubectl-kultivar")
    assert out.status["history"][-1]["reason"] == "spec.production pins v2 (was v1)"


def test_a_failed_canary_is_recorded() -> None:
    p = plan(model(), [succeeded_run("a", 0.9)])
    out = plan(model(status=p.status), [], rolled_back={1: "iris"})
    assert kinds(out.status)[-1] == ("RolledBack", 1, "operator")
    assert "Deployment iris failed analysis" in out.status["history"][-1]["reason"]


def test_history_is_bounded_keeping_the_newest() -> None:
    old = [history.entry(NOW, "Registered", str(i), version=i) for i in range(1, 60)]
    kept = history.appended(old, [history.entry(NOW, "Promoted", "new", version=60)])
    assert len(kept) == history.LIMIT and kept[-1]["version"] == 60 and kept[0]["version"] == 11


def test_more_runs_under_way_than_the_history_keeps_write_it_once() -> None:
    # 500 runs created together: the newest 50 TrainingStarted entries are kept. The runs whose entries fell off
    # are not "new" again on the next reconcile (that rewrote the history at every reconcile, each write a Model
    # event that reconciled the Model again: a loop that never went quiet).
    runs = []
    for i in range(history.LIMIT + 30):
        r = run(f"r{i:03d}")
        r["metadata"]["creationTimestamp"] = "2026-05-01T11:59:00Z"
        runs.append(r)
    first = plan(model(), runs)
    assert len(first.status["history"]) == history.LIMIT
    again = plan(model(status=first.status), runs, now=NOW + timedelta(seconds=5))
    assert "history" not in again.status
    # A run created after the oldest kept entry is news.
    late = run("late")
    late["metadata"]["creationTimestamp"] = "2026-05-01T12:00:10Z"
    later = plan(model(status=first.status), [*runs, late], now=NOW + timedelta(seconds=20))
    assert [h.get("trainingRun") for h in later.status["history"]][-1] == "late"
