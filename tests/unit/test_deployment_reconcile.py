"""The Deployment reconcile as observe -> plan -> apply: what to read (metrics_needed), what to do with it
(plan_deployment: drift, retraining, a spec the models reject), and how apply_plan carries a plan out."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from factories import model, obj, run

from kultivar.config import OperatorConfig
from kultivar.domain.conditions import READY, Cond
from kultivar.domain.deployment import metrics_needed, plan_deployment
from kultivar.domain.drift import DRIFTED
from kultivar.domain.labels import DEPLOYMENT_LABEL, REFRESH_ANNOTATION
from kultivar.domain.metrics import Snapshot
from kultivar.domain.plan import Annotate, Event, Plan
from kultivar.domain.rollout import Pods
from kultivar.domain.serving import DeploymentObserved, DriftObserved
from kultivar.k8s.apply import apply_plan

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
CONFIG = OperatorConfig(store_url="file:///store", store_pvc="")
REFERENCE = {"x": {"a": 0.5, "b": 0.5}}
PROMETHEUS = {"canary": {"analysis": {"metricsSource": "prometheus", "prometheusUrl": "http://prom:9090"}}}


def registry() -> dict[str, Any]:
    return model(status={"productionVersion": 1, "versions": [
        {"version": 1, "trainingRun": "iris-run-1",
         "artifact": {"uri": "file:///store/v1/model.skops", "digest": "sha256:" + "b" * 64}}]})


def deployment(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    base = {"modelRef": {"name": "iris"}, "monitoring": {"minSamples": 100, "window": "10m"}}
    return obj("Deployment", "iris", {**base, **spec}, status)


def window_open(minutes_ago: int, **extra: Any) -> dict[str, Any]:
    start = (T0 - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"stableVersion": 1, "drift": {"checkedAt": start, "version": 1, "samples": 0, "window": "10m",
                                          "drifted": False, "windowStart": start,
                                          "baseline": json.dumps({"x": {"a": 0.0, "b": 0.0}})}, **extra}


def observed(dep: dict[str, Any], **kw: Any) -> DeploymentObserved:
    return DeploymentObserved(obj=dep, model=registry(), pods={1: Pods(1, 1)}, **kw)


def drifted_inputs() -> Snapshot:
    return Snapshot(features={"x": {"a": 1000.0, "b": 0.0}}, reference=REFERENCE)


# --- metrics_needed ---------------------------------------------------------------------------------------


def test_nothing_is_read_while_the_drift_window_is_open() -> None:
    request = metrics_needed(observed(deployment(window_open(5))), CONFIG, T0)
    assert not request.anything


def test_a_closed_drift_window_asks_for_one_scrape_of_the_stable_versions_pods() -> None:
    request = metrics_needed(observed(deployment(window_open(11))), CONFIG, T0)
    assert request.source == "pods" and request.drift_version == 1 and request.serving == [1]


def test_no_pods_no_drift_to_read() -> None:
    dep = deployment(window_open(11))
    request = metrics_needed(DeploymentObserved(obj=dep, model=registry(), pods={}), CONFIG, T0)
    assert request.drift_version is None


def test_prometheus_is_asked_for_the_drift_windows_length() -> None:
    request = metrics_needed(observed(deployment(window_open(11), strategy=PROMETHEUS)), CONFIG, T0)
    assert request.source == "prometheus" and request.url == "http://prom:9090"
    assert request.drift_version == 1 and request.drift_window == 660 and request.serving == []


# --- plan_deployment --------------------------------------------------------------------------------------


def test_a_spec_the_models_reject_is_invalid_spec_naming_the_field() -> None:
    """A field from a newer CRD (the models forbid unknown fields): Ready=False, never an exception."""
    dep = deployment(window_open(11), futureField=True)
    assert not metrics_needed(observed(dep), CONFIG, T0).anything
    planned = plan_deployment(observed(dep), CONFIG, T0)
    ready = planned.plan.ready
    assert ready is not None and (ready.status, ready.reason) == (False, "InvalidSpec")
    assert "spec.futureField" in ready.message and planned.deployments == []


def test_persistent_drift_creates_a_retraining_run_after_refreshing_its_dataset() -> None:
    source = run("iris-run-1")
    seen = observed(deployment(window_open(11)), drift=DriftObserved(1, drifted_inputs(), [source]))
    plan = plan_deployment(seen, CONFIG, T0).plan
    assert next(c for c in plan.conditions if c.type == DRIFTED).status is True
    assert [r["metadata"]["name"] for r in plan.create] == ["iris-drift-1"]
    assert plan.create[0]["metadata"]["labels"][DEPLOYMENT_LABEL] == "iris"
    assert plan.annotate == [Annotate("Dataset", "iris", {REFRESH_ANNOTATION: "2026-05-01T12:00:00Z"})]
    assert plan.status["lastRetrain"]["trainingRun"] == "iris-drift-1"
    assert {e.reason for e in plan.events} >= {"DriftDetected", "RetrainingStarted"}


def test_a_running_drift_run_is_not_doubled() -> None:
    busy = run("iris-drift-1")
    busy["metadata"]["labels"] = {DEPLOYMENT_LABEL: "iris"}
    seen = observed(deployment(window_open(11)), drift=DriftObserved(1, drifted_inputs(), [run("iris-run-1"), busy]))
    plan = plan_deployment(seen, CONFIG, T0).plan
    assert plan.create == [] and plan.annotate == []
    assert "RetrainInProgress" in {e.reason for e in plan.events}


def test_a_failing_prometheus_leaves_drift_unknown_and_retries_soon() -> None:
    seen = observed(deployment(window_open(11), strategy=PROMETHEUS),
                    drift=DriftObserved(1, None, [], error="connection refused"))
    plan = plan_deployment(seen, CONFIG, T0).plan
    drifted = next(c for c in plan.conditions if c.type == DRIFTED)
    assert (drifted.status, drifted.reason) == (None, "MetricsUnavailable") and "connection refused" in drifted.message
    assert plan.requeue_after is not None and plan.requeue_after <= 60


def trained_on(digest: str) -> dict[str, Any]:
    """The registry with v1's record naming the Dataset and the data it was trained on."""
    reg = registry()
    reg["status"]["versions"][0].update(dataset="iris", datasetDigest=digest)
    return reg


def validated(digest: str, started: datetime) -> dict[str, Any]:
    stamp = started.strftime("%Y-%m-%dT%H:%M:%SZ")
    return obj("Dataset", "iris", {}, {"digest": digest, "conditions": [{"type": "Ready", "status": "True"}],
                                        "validation": {"attempt": 2, "startedAt": stamp, "completedAttempt": 2}})


def test_a_retraining_refreshes_its_dataset_first_and_skips_the_run_on_the_same_data() -> None:
    digest = "sha256:" + "c" * 64
    dep = deployment(window_open(11))
    seen = DeploymentObserved(obj=dep, model=trained_on(digest), pods={1: Pods(1, 1)},
                              drift=DriftObserved(1, drifted_inputs(), [run("iris-run-1")]))
    assert metrics_needed(seen, CONFIG, T0).dataset == "iris"  # read with the drift window's inputs
    plan = plan_deployment(seen, CONFIG, T0, validated(digest, T0 - timedelta(hours=1))).plan
    assert plan.create == []
    assert plan.annotate == [Annotate("Dataset", "iris", {REFRESH_ANNOTATION: "2026-05-01T12:00:00Z"})]
    assert plan.status["retrainWait"]["productionDigest"] == digest
    assert "RetrainRequested" in {e.reason for e in plan.events}
    # While the refresh runs, every reconcile (the window is open) reads the inputs and the Dataset again.
    dep["status"].update(drift={**dep["status"]["drift"], "windowStart": "2026-05-01T12:00:00Z"},
                         retrainWait=plan.status["retrainWait"])
    later = T0 + timedelta(seconds=20)
    waiting = DeploymentObserved(obj=dep, model=trained_on(digest), pods={1: Pods(1, 1)})
    request = metrics_needed(waiting, CONFIG, later)
    assert request.drift_version == 1 and request.dataset == "iris"
    waiting = DeploymentObserved(obj=dep, model=trained_on(digest), pods={1: Pods(1, 1)},
                                 drift=DriftObserved(1, drifted_inputs(), [run("iris-run-1")]))
    plan = plan_deployment(waiting, CONFIG, later, validated(digest, T0 + timedelta(seconds=10))).plan
    assert plan.create == [] and plan.annotate == []
    drifted = next(c for c in plan.conditions if c.type == DRIFTED)
    assert (drifted.status, drifted.reason) == (True, "RetrainSkipped")
    assert drifted.message.startswith("the source has no new data since v1 (sha256:cccccccccccc…)")
    assert [(e.type, e.reason) for e in plan.events] == [("Normal", "RetrainSkipped")]
    assert plan.status["retrainWait"]["skippedAt"] == "2026-05-01T12:00:20Z"


def test_an_open_drift_window_requeues_when_it_closes() -> None:
    plan = plan_deployment(observed(deployment(window_open(4))), CONFIG, T0).plan
    assert plan.requeue_after == 360


# --- apply_plan -------------------------------------------------------------------------------------------


class RecordingApi:
    """Records what apply_plan asks of the API server (a unit test of the orchestration, not of the server)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __getattr__(self, method: str) -> Any:
        def call(*args: Any) -> Any:
            self.calls.append((method, *args))
            return True
        return call

    def events(self) -> list[tuple[str, str]]:
        return [(c[2], c[3]) for c in self.calls if c[0] == "post_event"]


def test_apply_plan_posts_one_event_per_ready_transition() -> None:
    api = RecordingApi()
    dep = deployment({})
    dep["status"] = apply_plan(api, dep, Plan(conditions=[Cond(READY, False, "Deploying", "starting v1")]))
    assert api.events() == [("Normal", "Deploying")]  # progress, not a warning
    api.calls.clear()
    dep["status"] = apply_plan(api, dep, Plan(conditions=[Cond(READY, False, "Deploying", "still starting")]))
    assert api.events() == []  # the same reason: no new event
    dep["status"] = apply_plan(api, dep, Plan(conditions=[Cond(READY, False, "ModelNotFound", "no Model")]))
    assert api.events() == [("Warning", "ModelNotFound")]
    api.calls.clear()
    dep["status"] = apply_plan(api, dep, Plan(conditions=[Cond(READY, True, "Serving", "v1")],
                                              events=[Event("Normal", "Deployed", "v1")]))
    assert api.events() == [("Normal", "Deployed"), ("Normal", "Serving")]


def test_apply_plan_annotates_and_creates_before_writing_the_status_that_records_it() -> None:
    api = RecordingApi()
    dep = deployment({})
    child = {"kind": "TrainingRun", "metadata": {"name": "iris-drift-1"}}
    apply_plan(api, dep, Plan(status={"lastRetrain": {"trainingRun": "iris-drift-1", "time": "t"}},
                              annotate=[Annotate("Dataset", "iris", {REFRESH_ANNOTATION: "t"})], create=[child]))
    order = [c[0] for c in api.calls]
    assert order.index("annotate") < order.index("create_if_missing") < order.index("patch_status")
    assert ("create_if_missing", "TrainingRun", "team-a", child) in api.calls


def test_progress_reasons_are_per_kind_and_canary_reasons_are_explicit() -> None:
    from kultivar.domain.reasons import Reason, is_progress
    from kultivar.domain.rollout import CANARY_REASONS

    assert is_progress("Deployment", "Deploying") and is_progress("Dataset", "Validating")
    assert not is_progress("Dataset", "Deploying") and not is_progress("Deployment", "InvalidSpec")
    assert not is_progress("TrainingRun", "SomePodReportedFailure")
    assert all(is_progress("Deployment", r) for r in CANARY_REASONS.values())
    assert str(Reason.CANARY_STEPPING) == "CanaryStepping"


def test_a_run_that_created_its_job_leaves_status_and_events_to_the_next_reconcile() -> None:
    from factories import run

    api = RecordingApi()
    job = {"metadata": {"name": "run-1-train-1"}}
    plan = Plan(conditions=[Cond(READY, False, "Pending", "waiting")], status={"jobName": "run-1-train-1"},
                jobs=[job], events=[Event("Normal", "TrainingStarted", "x")])
    obj = run()
    assert apply_plan(api, obj, plan, status_after_new_job=True) == {}
    assert [c[0] for c in api.calls] == ["create_job"]  # the start is one request
    api.calls.clear()
    api.create_job = lambda ns, body: False  # type: ignore[method-assign] - found: an earlier reconcile created it
    apply_plan(api, obj, plan, status_after_new_job=True)
    assert [c[0] for c in api.calls] == ["patch_status", "post_event", "post_event"]
