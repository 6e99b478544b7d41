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


# ------------------------------------------------------------------------------------------------ ties (#14)

def test_an_exact_tie_is_no_improvement_for_either_direction() -> None:
    prod = {"version": 1, "metrics": {"accuracy": 0.9737, "rmse": 5.0}}
    tie = gate(Promotion(), {"metric": "accuracy", "metrics": {"accuracy": 0.9737}}, prod)
    assert (tie.passed, tie.reason) == (False, "NoImprovement")
    assert tie.message == "accuracy=0.9737 does not beat production v1 (0.9737)"
    assert gate(Promotion(), {"metric": "accuracy", "metrics": {"accuracy": 0.9738}}, prod).passed
    assert gate(Promotion(metric="rmse"), {"metrics": {"rmse": 5.0}}, prod).reason == "NoImprovement"
    assert gate(Promotion(metric="rmse"), {"metrics": {"rmse": 4.999}}, prod).passed
    # a margin is still "at least": exactly the margin passes, a hair less does not
    assert gate(Promotion(minImprovement=0.25), {"metric": "accuracy", "metrics": {"accuracy": 1.0}},
                {"version": 1, "metrics": {"accuracy": 0.75}}).passed
    assert not gate(Promotion(metric="rmse", minImprovement=1.0), {"metrics": {"rmse": 4.5}}, prod).passed


def test_retraining_an_identical_model_keeps_production() -> None:
    a = succeeded_run("a", 0.9737, completed="2026-05-01T10:00:00Z")
    b = succeeded_run("b", 0.9737, completed="2026-05-01T10:00:01Z")
    p, _ = plan(model(), [a, b])
    assert p.status["productionVersion"] == 1
    assert p.status["versions"][1]["gate"]["reason"] == "NoImprovement"


# ------------------------------------------------------------------------- why nothing is production (#18)

def test_a_gate_that_refused_every_version_says_why_in_ready() -> None:
    runs = [succeeded_run("a", 0.9737, completed="2026-05-01T10:00:00Z")]
    p, _ = plan(model(promotion={"minimum": 1.01}), runs)  # headline metric: not refused at apply time
    assert p.status["productionVersion"] is None
    assert (p.ready.status, p.ready.reason) == (False, "NoProductionVersion")
    assert "v1: accuracy=0.9737 misses the minimum 1.01" in p.ready.message


def test_the_ready_message_names_only_the_newest_refusals() -> None:
    runs = [succeeded_run(f"r{i}", 0.5 + i / 100, completed=f"2026-05-01T10:00:0{i}Z") for i in range(5)]
    p, _ = plan(model(promotion={"minimum": 0.99}), runs)
    assert "v5: accuracy=0.54 misses the minimum 0.99" in p.ready.message
    assert "v2:" not in p.ready.message and "and 2 older" in p.ready.message
    assert len(p.ready.message) < 400


# ------------------------------------------------------------------------------- rollback (#18 item 4)

def _two_versions(policy: str = "Automatic", production: int | None = None):
    runs = [succeeded_run("a", 0.90, completed="2026-05-01T10:00:00Z"),
            succeeded_run("b", 0.95, completed="2026-05-01T10:00:01Z")]
    promotion = {"policy": policy}
    first, _ = plan(model(promotion=promotion, production=production), runs)
    return runs, promotion, first.status


def test_automatic_production_returns_to_the_last_good_version_after_a_rollback() -> None:
    runs, promotion, status = _two_versions()
    assert status["productionVersion"] == 2
    observed = ModelObserved(model(promotion=promotion, status=status), runs, frozenset({1, 2}),
                             rolled_back={2: "iris"})
    p, _ = plan_model(observed, NOW)
    assert p.status["productionVersion"] == 1
    assert p.status["productionMetric"] == 0.90
    v2 = p.status["versions"][1]
    assert v2["rolledBack"] is True and "Deployment iris failed analysis" in v2["rollbackReason"]
    (event,) = [e for e in p.events if e.reason == "ProductionRolledBack"]
    assert event.type == "Warning" and "production is v1 again" in event.message
    assert p.status["history"][-1]["type"] == "Promoted" and p.status["history"][-1]["version"] == 1
    assert "v2 was rolled back" in p.status["history"][-1]["reason"]
    assert p.ready.status is True
    assert p.ready.message == "v1 is production (v2 was rolled back: its canary in Deployment iris failed analysis)"
    # level-based: the next reconcile keeps v1 and the explanation without a second event
    again, _ = plan_model(ModelObserved(model(promotion=promotion, status={**status, **p.status}), runs,
                                        frozenset({1}), rolled_back={2: "iris"}), NOW)
    assert again.status["productionVersion"] == 1 and "v2 was rolled back" in again.ready.message
    assert not [e for e in again.events if e.reason in ("ProductionRolledBack", "VersionRolledBack")]


def test_a_new_version_is_judged_against_the_restored_production() -> None:
    runs, promotion, status = _two_versions()
    rolled, _ = plan_model(ModelObserved(model(promotion=promotion, status=status), runs, frozenset(),
                                         rolled_back={2: "iris"}), NOW)
    c = succeeded_run("c", 0.93, completed="2026-05-01T10:00:02Z")
    p, _ = plan_model(ModelObserved(model(promotion=promotion, status={**status, **rolled.status}), [*runs, c],
                                    frozenset(), rolled_back={2: "iris"}), NOW)
    assert p.status["versions"][2]["gate"]["message"] == "accuracy=0.93 beats production v1 (0.9)"
    assert p.status["productionVersion"] == 3 and p.ready.message == "v3 is production"


def test_rollback_of_the_only_good_version_leaves_no_production_and_says_why() -> None:
    runs = [succeeded_run("a", 0.95)]
    first, _ = plan(model(), runs)
    p, _ = plan_model(ModelObserved(model(status=first.status), runs, frozenset(), rolled_back={1: "iris"}), NOW)
    assert p.status["productionVersion"] is None
    assert (p.ready.status, p.ready.reason) == (False, "NoProductionVersion")
    assert "v1: rolled back, its canary in Deployment iris failed analysis" in p.ready.message
    assert any(e.reason == "ProductionRolledBack" and "production is unset" in e.message for e in p.events)


def test_manual_pin_of_a_rolled_back_version_is_explicit() -> None:
    runs, promotion, status = _two_versions("Manual", production=2)
    assert status["productionVersion"] == 2
    p, _ = plan_model(ModelObserved(model(promotion=promotion, production=2, status=status), runs, frozenset({1, 2}),
                                    rolled_back={2: "iris"}), NOW)
    assert p.status["productionVersion"] == 2  # the pin is the user's word; the state says it is not served
    assert (p.ready.status, p.ready.reason) == (False, "ProductionRolledBack")
    assert "spec.production pins v2" in p.ready.message and "Deployment iris failed analysis" in p.ready.message
    assert p.status["versions"][1]["rolledBack"] is True


def test_a_rollback_for_a_failed_model_server_names_the_servers_reason_in_the_model() -> None:
    runs, promotion, status = _two_versions()
    observed = ModelObserved(model(promotion=promotion, status=status), runs, frozenset({1, 2}),
                             rolled_back={2: "iris"}, server_failed={2: "ModelDigestMismatch: altered"})
    p, _ = plan_model(observed, NOW)
    assert p.status["productionVersion"] == 1
    assert p.status["versions"][1]["rollbackReason"] == ("its model server failed in Deployment iris "
                                                         "(ModelDigestMismatch: altered)")
