"""Every metric Kultivar exports passes `promtool check metrics` (Debian's prometheus package)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np

from helpers import require_tool
from kultivar.controllers import metrics as operator_metrics
from kultivar.domain.plan import Event, Plan
from kultivar.domain.profile import Profile, categorical_profile, numeric_profile
from kultivar.serving.monitoring import ServingMetrics
from kultivar.serving.payload import FeatureSpec

PROMTOOL = shutil.which("promtool")


def promtool_check(exposition: bytes) -> str:
    promtool = require_tool(PROMTOOL, "promtool (Debian's prometheus package)")
    result = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, check=False)
    problems = (result.stdout + result.stderr).decode()
    assert result.returncode == 0 and not problems.strip(), problems
    return problems


def test_operator_metrics_pass_promtool() -> None:
    deployment = {"kind": "Deployment", "metadata": {"namespace": "ns", "name": "iris"}}
    plan = Plan(events=[Event("Normal", "Promoted", ""), Event("Warning", "RolledBack", ""),
                        Event("Normal", "RetrainingStarted", "")],
                status={"drift": {"topFeatures": [{"feature": "x", "psi": 0.3}], "driftedShare": 0.5}})
    operator_metrics.observe_plan(deployment, plan)
    operator_metrics.observe_plan({"kind": "Model", "metadata": {"namespace": "ns", "name": "iris"}},
                                  Plan(events=[Event("Normal", "VersionRegistered", "")]))
    operator_metrics.observe_job({"metadata": {"uid": "1", "labels": {"kultivar.io/workload": "train"}}})
    operator_metrics.RECONCILES.labels("Model", "success").inc()
    operator_metrics.RECONCILE_SECONDS.labels("Model").observe(0.01)
    from prometheus_client import generate_latest

    promtool_check(generate_latest(operator_metrics.REGISTRY))


def test_model_history_entries_are_counted_once_each() -> None:
    old = {"time": "2026-01-01T00:00:00Z", "type": "Registered", "reason": "v1", "actor": "operator"}
    new = {"time": "2026-01-01T00:01:00Z", "type": "Pinned", "reason": "v1 pinned", "actor": "kubectl-kultivar"}
    model = {"kind": "Model", "metadata": {"namespace": "hist", "name": "m"}, "status": {"history": [old]}}
    counter = operator_metrics.HISTORY
    operator_metrics.observe_plan(model, Plan(status={"history": [old, new]}))
    assert counter.labels("hist", "m", "Pinned", "kubectl-kultivar")._value.get() == 1
    assert counter.labels("hist", "m", "Registered", "operator")._value.get() == 0  # was already there


def test_server_metrics_pass_promtool() -> None:
    rng = np.random.default_rng(0)
    profile = Profile(rows=100, features={"x": numeric_profile(rng.normal(size=100)),
                                          "c": categorical_profile(["a", "b", "a"])})
    m = ServingMetrics("iris", "1", "sha256:" + "0" * 64)
    m.bind_model([FeatureSpec("x", "numeric"), FeatureSpec("c", "categorical")], "classification", [0, 1],
                 profile, drift_accounting=True)
    m.request("success", 0.004)
    m.set_ready(True)
    promtool_check(m.exposition())


def test_server_feedback_metrics_pass_promtool() -> None:
    from kultivar.serving.feedback import FeedbackParser

    for task, classes, items in (
            ("classification", ["no", "yes"], [{"version": 3, "prediction": "yes", "actual": "no"},
                                               {"version": 4, "prediction": "no", "actual": "maybe"}]),
            ("regression", None, [{"version": 3, "prediction": 2.5, "actual": 1.0}])):
        m = ServingMetrics("churn", "3", "sha256:" + "0" * 64, deployment=("ns", "churn"))
        m.bind_model([FeatureSpec("x", "numeric")], task, classes, None, drift_accounting=False)
        import orjson

        m.count_feedback(FeedbackParser("churn", task, classes).parse(orjson.dumps({"items": items})))
        m.feedback_request("success")
        m.feedback_request("bad_request")
        exposition = m.exposition()
        assert b"kultivar_feedback_" in exposition
        promtool_check(exposition)
