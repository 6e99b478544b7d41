from __future__ import annotations

from datetime import UTC, datetime

from factories import model, run, succeeded_run

from kultivar.api.model import Promotion
from kultivar.domain.registry import ModelObserved, gate, pending_registrations, plan_model

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def plan(mdl, runs, served=frozenset()):
    return plan_model(ModelObserved(mdl, runs, served), NOW)


def test_two_runs_finishing_together_get_distinct_versions_in_completion_order() -> None:
    a = succeeded_run("a", 0.90, completed="2026-05-01T10:00:02Z")
    b = succeeded_run("b", 0.95, completed="2026-05-01T10:00:01Z")
    p, _ = plan(model(), [a, b])
    versions = p.status["versions"]
    assert [(v["version"], v["trainingRun"]) for v in versions] == [(1, "b"), (2, "a")]
    assert p.status["latestVersion"] == 2
    assert p.status["productionVersion"] == 1  # a (0.90) does not beat b (0.95)
    assert versions[1]["gate"]["reason"] == "NoImprovement"


def test_registration_is_idempotent() -> None:
    a = succeeded_run("a", 0.9)
    p, _ = plan(model(), [a])
    again, _ = plan(model(status=p.status), [a])
    assert [v["version"] for v in again.status["versions"]] == [1]
    assert not pending_registrations([a], p.status["versions"])


def test_gate_minimum_and_improvement() -> None:
    promo = Promotion(minimum=0.8, minImprovement=0.02)
    cand = {"metric": "accuracy", "metrics": {"accuracy": 0.79}}
    assert gate(promo, cand, None).reason == "BelowMinimum"
    prod = {"version": 1, "metrics": {"accuracy": 0.85}}
    assert gate(promo, {"metric": "accuracy", "metrics": {"accuracy": 0.86}}, prod).reason == "NoImprovement"
    assert gate(promo, {"metric": "accuracy", "metrics": {"accuracy": 0.88}}, prod).passed


def test_error_metrics_are_lower_is_better() -> None:
    promo = Promotion(metric="rmse", minimum=10.0)
    prod = {"version": 1, "metrics": {"rmse": 5.0}}
    assert gate(promo, {"metrics": {"rmse": 4.0}}, prod).passed
    assert gate(promo, {"metrics": {"rmse": 6.0}}, prod).reason == "NoImprovement"
    assert gate(promo, {"metrics": {"rmse": 11.0}}, None).reason == "BelowMinimum"


def test_manual_policy_follows_the_pin_and_reports_missing_versions() -> None:
    runs = [succeeded_run("a", 0.9), succeeded_run("b", 0.8, completed="2026-05-01T10:00:00Z")]
    p, _ = plan(model(promotion={"policy": "Manual"}), runs)
    assert p.status["productionVersion"] is None and p.ready.reason == "NoProductionVersion"
    p2, _ = plan(model(promotion={"policy": "Manual"}, production=2, status=p.status), runs)
    assert p2.status["productionVersion"] == 2 and p2.ready.status is True
    p3, _ = plan(model(promotion={"policy": "Manual"}, production=7, status=p.status), runs)
    assert (p3.ready.status, p3.ready.reason) == (False, "VersionNotFound")
    assert p3.status["versions"]  # registered versions are never lost


def test_retention_keeps_production_and_served_versions() -> None:
    runs = [succeeded_run(f"r{i}", 0.5 + i / 100, completed=f"2026-05-01T10:00:0{i}Z") for i in range(5)]
    p, _ = plan(model(), runs)
    status = p.status
    for r, v in zip(runs, status["versions"], strict=True):
        r["status"]["modelVersion"] = v["version"]  # runs have recorded their numbers
    p2, dropped = plan(model(status=status, retention={"keepVersions": 2}), runs, served=frozenset({1}))
    kept = [v["version"] for v in p2.status["versions"]]
    assert kept == [1, 4, 5] and [d["version"] for d in dropped] == [2, 3]
    assert p2.status["productionVersion"] == 5


def test_unsettled_run_is_not_dropped() -> None:
    runs = [succeeded_run(f"r{i}", 0.5 + i / 100, completed=f"2026-05-01T10:00:0{i}Z") for i in range(3)]
    p, _ = plan(model(retention={"keepVersions": 1}), runs)
    assert [v["version"] for v in p.status["versions"]] == [1, 2, 3]


def test_run_without_success_is_ignored() -> None:
    p, _ = plan(model(), [run("pending")])
    assert p.status["versions"] == [] and p.ready.reason == "NoProductionVersion"


def test_retired_versions_get_a_cleanup_job_until_it_succeeds() -> None:
    from kultivar.domain.jobs import JobOutcome

    runs = [succeeded_run(f"r{i}", 0.5 + i / 100, completed=f"2026-05-01T10:00:0{i}Z") for i in range(3)]
    p, _ = plan(model(), runs)
    for r, v in zip(runs, p.status["versions"], strict=True):
        r["status"]["modelVersion"] = v["version"]
    p2, dropped = plan(model(status=p.status, retention={"keepVersions": 2}), runs)
    assert [d["version"] for d in dropped] == [1]
    assert p2.status["retiring"] == [{"version": 1, "artifactUri": "file:///store/r0/model.skops",
                                      "job": "iris-retire-v1"}]
    (job,) = p2.jobs
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KULTIVAR_DELETE"] == '["file:///store/r0/model.skops"]'
    # the Job is running: nothing new; then it succeeds: the entry leaves status
    status = {**p.status, **p2.status}
    running = plan_model(ModelObserved(model(status=status, retention={"keepVersions": 2}), runs, frozenset(),
                                       {"iris-retire-v1": JobOutcome("Running")}), NOW)[0]
    assert running.jobs == [] and running.status["retiring"] == status["retiring"]
    done = plan_model(ModelObserved(model(status=status, retention={"keepVersions": 2}), runs, frozenset(),
                                    {"iris-retire-v1": JobOutcome("Succeeded")}), NOW)[0]
    assert done.status["retiring"] == [] and any(e.reason == "ArtifactsDeleted" for e in done.events)
