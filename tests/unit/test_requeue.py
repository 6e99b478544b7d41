"""Which events reconcile which objects (controllers/runtime.py, domain reference_matters and registry_view).

At 500 TrainingRuns, every status write of their Model reconciled all 500 (~250 requests per run). A run is now
reconciled for an event of its Dataset or Model only while that object can change its plan, and the Model for an
event of a run only when what the registry reads of the run changed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from factories import NS, dataset, model, run

from kultivar.config import OperatorConfig
from kultivar.controllers.runtime import Key, Operator
from kultivar.domain.registry import ModelObserved, lasting_decisions, registry_view
from kultivar.domain.trainingrun import reference_matters, started

SUCCEEDED = {"type": "Succeeded", "status": "True", "reason": "Trained", "message": "", "lastTransitionTime": "x"}
FAILED = {"type": "Succeeded", "status": "False", "reason": "TrainingFailed", "message": "", "lastTransitionTime": "x"}


def _started(generation: int = 1, **extra: Any) -> dict[str, Any]:
    return {"jobName": f"run-1-train-{generation}", "specAttempt": generation, **extra}


def _succeeded(**extra: Any) -> dict[str, Any]:
    return _started(completionTime="x", conditions=[SUCCEEDED], artifact={"uri": "file:///a"}, **extra)


@pytest.mark.parametrize(("status", "generation", "dataset_matters", "model_matters"), [
    (None, 1, True, True),  # new: both decide whether and how its Job starts
    ({"conditions": []}, 1, True, True),  # waiting (for the Dataset, for the Model to exist, ...)
    (_started(), 1, False, False),  # its Job runs: only the Job's events move it
    (_started(completionTime="x", conditions=[FAILED]), 1, False, False),  # failed: waits for a spec edit
    (_started(), 2, True, True),  # a spec edit: a new Job starts, which reads both again
    (_succeeded(), 1, False, True),  # trained, waiting to be registered
    (_succeeded(modelVersion=3), 1, False, False),  # registered: the version is its own for good
])
def test_a_run_depends_on_its_references_only_while_they_can_change_its_plan(
        status: dict[str, Any] | None, generation: int, dataset_matters: bool, model_matters: bool) -> None:
    obj = run(status=status, generation=generation)
    assert reference_matters(obj, "Dataset") is dataset_matters
    assert reference_matters(obj, "Model") is model_matters


def test_started_means_a_job_for_the_current_generation() -> None:
    assert not started(run()) and started(run(status=_started()))
    assert not started(run(status=_started(), generation=2))


def _operator() -> Operator:
    return Operator(None, OperatorConfig())  # type: ignore[arg-type] - events only touch the queue and cache


def _drain(op: Operator) -> set[Key]:
    """What is queued now or waits on a timer (the Model's batching), emptied."""
    keys = set(op.queue._queued) | set(op.queue._timers)
    op.queue._high.clear()
    op.queue._low.clear()
    op.queue._queued.clear()
    for _, handle in op.queue._timers.values():
        handle.cancel()
    op.queue._timers.clear()
    return keys


def in_loop(test: Any) -> Any:
    """Run the test inside an event loop: the work queue's timers need one."""
    def run() -> None:
        async def body() -> None:
            test()
        asyncio.run(body())
    run.__name__ = test.__name__
    return run


@in_loop
def test_a_model_status_write_reconciles_only_the_runs_waiting_for_it() -> None:
    op = _operator()
    runs = {
        "new": run("new"),
        "training": run("training", status=_started()),
        "trained": run("trained", status=_succeeded()),
        "registered": run("registered", status=_succeeded(modelVersion=1)),
    }
    for body in runs.values():
        op.observe_event("TrainingRun", "ADDED", body)
    op.observe_event("Deployment", "ADDED", {"metadata": {"name": "web", "namespace": NS},
                                             "spec": {"modelRef": {"name": "iris"}}})
    _drain(op)
    op.observe_event("Model", "MODIFIED", model(status={"latestVersion": 1}))
    assert _drain(op) == {Key("Model", NS, "iris"), Key("TrainingRun", NS, "new"), Key("TrainingRun", NS, "trained"),
                          Key("Deployment", NS, "web")}
    # A Dataset event: only the run that has not started reads its Dataset.
    op.observe_event("Dataset", "MODIFIED", dataset())
    assert _drain(op) == {Key("Dataset", NS, "iris"), Key("TrainingRun", NS, "new")}


@in_loop
def test_a_run_waiting_for_its_holdout_is_reconciled_when_the_holdout_changes() -> None:
    op = _operator()
    op.observe_event("TrainingRun", "ADDED", run("r", evaluation={"holdout": {"name": "later"}}))
    _drain(op)
    op.observe_event("Dataset", "MODIFIED", dataset("later"))
    assert Key("TrainingRun", NS, "r") in _drain(op)


@in_loop
def test_the_model_is_reconciled_for_a_run_event_only_when_the_registry_has_something_to_do() -> None:
    op = _operator()
    model_key = Key("Model", NS, "iris")
    op.observe_event("TrainingRun", "ADDED", run("r"))
    assert model_key in op.queue._timers  # batched: runs created together reconcile their Model once
    assert model_key in _drain(op)  # a new run: the Model records that it started
    op.observe_event("TrainingRun", "MODIFIED", run("r", status=_started()))
    op.observe_event("TrainingRun", "MODIFIED", run("r", status=_started(attempts=2)))
    assert model_key not in _drain(op)  # Pending -> Training -> attempt 2: nothing for the registry
    op.observe_event("TrainingRun", "MODIFIED", run("r", status=_succeeded()))
    assert model_key in _drain(op)  # to register
    op.observe_event("TrainingRun", "MODIFIED", run("r", status=_succeeded(modelVersion=1)))
    assert model_key in _drain(op)  # retention may now drop an old version of it
    op.observe_event("TrainingRun", "DELETED", run("r", status=_succeeded(modelVersion=1)))
    assert model_key in _drain(op)


def test_registry_view_ignores_progress_within_a_job() -> None:
    assert registry_view(run(status=_started())) == registry_view(run(status=_started(attempts=3, startTime="t")))
    assert registry_view(run(status=_started())) != registry_view(run(status=_succeeded()))


def test_lasting_decisions_name_the_runs_registered_and_those_whose_versions_are_dropped() -> None:
    runs = [run("done", status=_succeeded()), run("settled", status=_succeeded(modelVersion=1)), run("busy")]
    observed = ModelObserved(model(status={"versions": [{"version": 1, "trainingRun": "settled",
                                                         "trainingRunUid": runs[1]["metadata"]["uid"]}]}),
                             runs, frozenset())
    assert lasting_decisions(observed, []) == {"done"}
    assert lasting_decisions(observed, [{"version": 1, "trainingRun": "settled"}]) == {"done", "settled"}


def test_kopf_runs_the_event_handlers_on_the_event_loop() -> None:
    """kopf runs a sync handler in a thread pool, where the work queue cannot set a timer (no running loop)."""
    import inspect

    from kultivar.controllers import handlers

    assert len(handlers.EVENT_HANDLERS) == 5  # four kinds and the children
    assert all(inspect.iscoroutinefunction(h) for h in handlers.EVENT_HANDLERS)


def _lanes(op: Operator) -> dict[Key, bool]:
    """What is queued now, each with its lane (True: the low lane), emptied."""
    lanes = dict(op.queue._queued)
    _drain(op)
    return lanes  # type: ignore[return-value]


@in_loop
def test_starts_go_first_and_follow_ups_wait_in_the_low_lane() -> None:
    op = _operator()
    new = run("new")
    op.observe_event("TrainingRun", "ADDED", new)
    assert _lanes(op) == {Key("TrainingRun", NS, "new"): False}  # its Job is to be created
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "new-train-1", "namespace": NS, "resourceVersion": "2",
                        "labels": {"app.kubernetes.io/managed-by": "kultivar", "kultivar.io/owner-kind": "TrainingRun",
                                   "kultivar.io/owner-name": "new"},
                        "ownerReferences": [{"uid": new["metadata"]["uid"], "kind": "TrainingRun", "name": "new"}]}}
    op.observe_child(job)
    assert _lanes(op) == {Key("TrainingRun", NS, "new"): True}  # created: recording it is a follow-up
    # Its status does not say so yet, but its Job exists: it neither starts again nor waits on its references.
    op.observe_event("TrainingRun", "MODIFIED", new)
    assert _lanes(op) == {Key("TrainingRun", NS, "new"): True}
    op.observe_event("Model", "MODIFIED", model(status={"latestVersion": 1}))
    assert Key("TrainingRun", NS, "new") not in _drain(op)
    op.observe_event("TrainingRun", "MODIFIED", run("running", status=_started()))
    assert _lanes(op) == {Key("TrainingRun", NS, "running"): True}
