"""A child the API server refuses (issue 18): Ready=False ChildRejected with the server's message, a Warning
Event, and nothing retried until the owner's spec changes."""

from __future__ import annotations

from typing import Any

from factories import dataset, obj
from statuscheck import NOW, validate_status

from kultivar.domain.conditions import READY, Cond, get_condition
from kultivar.domain.plan import Plan
from kultivar.domain.refusal import is_refusal, still_refused
from kultivar.k8s.apply import apply_plan
from kultivar.k8s.client import ApiError, RefusedChild, create_refused

INVALID = ApiError(422, "Unprocessable Entity", {"message": 'Job.batch "iris-validate-1" is invalid: '
                                                            'spec.template.spec.containers[0].resources.limits: '
                                                            'Invalid value: "lots"'})


class RefusingApi:
    """Refuses every Job as the API server does a malformed one; records the rest."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def create_job(self, namespace: str, body: dict[str, Any]) -> bool:
        self.calls.append(("create_job", body["metadata"]["name"]))
        raise create_refused("Job", body, INVALID) or INVALID

    def __getattr__(self, method: str) -> Any:
        def call(*args: Any) -> Any:
            self.calls.append((method, *args))
            return True
        return call


def test_only_requests_that_can_never_succeed_are_refusals() -> None:
    assert all(is_refusal(s) for s in (400, 403, 404, 422))
    assert not any(is_refusal(s) for s in (409, 429, 500, 503))
    assert create_refused("Job", {"metadata": {"name": "j"}}, ApiError(409, "Conflict")) is None
    refusal = create_refused("Job", {"metadata": {"name": "j"}}, INVALID)
    assert isinstance(refusal, RefusedChild) and "lots" in refusal.message


def test_a_refused_job_makes_the_owner_not_ready_with_the_servers_message_once() -> None:
    api = RefusingApi()
    obj = dataset(status={})
    job = {"kind": "Job", "metadata": {"name": "iris-validate-1"}}
    plan = Plan(conditions=[Cond(READY, False, "Validating", "first")], jobs=[job], requeue_after=5)
    obj["status"] = apply_plan(api, obj, plan)
    ready = get_condition(obj["status"]["conditions"], READY)
    assert ready is not None and ready["reason"] == "ChildRejected" and "Invalid value: \"lots\"" in ready["message"]
    validate_status("Dataset", obj["status"])
    events = [c for c in api.calls if c[0] == "post_event"]
    assert [(e[2], e[3]) for e in events] == [("Warning", "ChildRejected")]
    assert plan.requeue_after is None

    held = still_refused(obj)
    assert held is not None and held.jobs == []
    api.calls.clear()
    apply_plan(api, obj, held)
    assert [c[0] for c in api.calls] == []  # no Job, no status write, no event: nothing changed

    obj["metadata"]["generation"] = 2  # the spec was fixed
    assert still_refused(obj) is None


class ServingApi:
    """Answers GETs with 404 (nothing exists yet) and refuses apps/v1 Deployments, as for a bad resources field."""

    def __init__(self) -> None:
        self.posted: list[str] = []

    def request(self, method: str, path: str, body: Any = None, **_: Any) -> Any:
        if method == "GET" and "labelSelector" in str(_):
            return {"items": []}
        if method == "GET":
            raise ApiError(404, "Not Found")
        if method == "POST":
            self.posted.append(path)
            if "/deployments" in path:
                raise INVALID
        return {}


def test_a_refused_serving_deployment_is_returned_not_raised() -> None:
    from test_serving_plan import CONFIG, deployment, observe

    from kultivar.domain.serving import plan_serving
    from kultivar.k8s.serving import apply_serving

    api = ServingApi()
    dep = deployment()
    outcome = apply_serving(api, dep, plan_serving(observe(dep, {}), CONFIG, NOW))  # type: ignore[arg-type]  # a stand-in Api
    assert outcome.refused is not None and outcome.refused.kind == "Deployment"
    assert outcome.refused.name == "iris-v2" and "lots" in outcome.refused.message
    assert not any("/services" in p for p in api.posted)  # it stops at the refusal


def test_a_refused_drift_run_is_a_warning_that_does_not_hold_the_deployment() -> None:
    class RefusesRuns(RefusingApi):
        def create_if_missing(self, kind: str, namespace: str, body: dict[str, Any]) -> bool:
            raise create_refused(kind, body, INVALID) or INVALID

    api = RefusesRuns()
    dep = obj("Deployment", "iris", {"modelRef": {"name": "iris"}}, status={})
    run = {"kind": "TrainingRun", "metadata": {"name": "iris-drift-1"}}
    dep["status"] = apply_plan(api, dep, Plan(conditions=[Cond(READY, True, "Serving", "v1")], create=[run]))
    assert get_condition(dep["status"]["conditions"], READY)["reason"] == "Serving"
    assert ("Warning", "ChildRejected") in [(c[2], c[3]) for c in api.calls if c[0] == "post_event"]
    assert still_refused(dep) is None


def test_a_spec_the_models_reject_leaves_the_serving_objects_alone() -> None:
    """A field from a newer CRD during an upgrade must not prune the Services of a Deployment that serves."""
    from test_serving_plan import CONFIG, deployment, observe

    from kultivar.domain.serving import plan_serving
    from kultivar.k8s.serving import apply_serving

    class NoCalls:
        def request(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError(f"no API call expected: {args}")

    dep = deployment(futureField=True)
    planned = plan_serving(observe(dep, {}), CONFIG, NOW)
    assert planned.plan.ready is not None and planned.plan.ready.reason == "InvalidSpec"
    assert apply_serving(NoCalls(), dep, planned).refused is None  # type: ignore[arg-type]  # a stand-in Api
