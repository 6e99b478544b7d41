"""The API on a real API server, and the operator's reconcilers reporting on real objects."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kapi import API, PLURALS, create, events_for, get, patch_spec, path, ready, sample, wait_reason

from helpers import wait_for

# --- schema and CEL: bad input is refused at apply time, naming the field ------------------------------

def _with(kind: str, change) -> dict[str, Any]:
    body = copy.deepcopy(sample(kind))
    change(body)
    return body


INVALID = [
    ("wrong type", _with("TrainingRun", lambda b: b["spec"].update(backoffLimit="three")), "spec.backoffLimit"),
    ("missing required field", _with("Dataset", lambda b: b["spec"].pop("source")), "spec.source"),
    ("out of range", _with("TrainingRun", lambda b: b["spec"]["evaluation"].update(testFraction=1.5)),
     "spec.evaluation.testFraction"),
    ("unknown enum", _with("Model", lambda b: b["spec"]["promotion"].update(policy="Sometimes")),
     "spec.promotion.policy"),
    ("bad uri scheme", _with("Dataset", lambda b: b["spec"]["source"].update(uri="ftp://x/y.csv")),
     "spec.source.uri"),
    ("A/B weights must add up", _with("Deployment", lambda b: b["spec"].update(strategy={
        "type": "ABTest", "abTest": {"variants": [{"version": 1, "weight": 50}, {"version": 2, "weight": 40}]}})),
     "spec.strategy.abTest.variants"),
    ("A/B decision between two variants", _with("Deployment", lambda b: b["spec"].update(strategy={
        "type": "ABTest", "abTest": {"variants": [{"version": 1, "weight": 50}, {"version": 2, "weight": 30},
                                                  {"version": 3, "weight": 20}], "decision": {}}})),
     "spec.strategy.abTest.decision"),
    ("canary weights must increase", _with("Deployment", lambda b: b["spec"]["strategy"]["canary"].update(
        steps=[{"weight": 50}, {"weight": 10}])), "spec.strategy.canary.steps"),
    ("allowed values only for categorical", _with("Dataset", lambda b: b["spec"]["schema"]["features"][0].update(
        allowed=["a"])), "spec.schema.features[0].allowed"),
    ("production pin needs Manual", _with("Model", lambda b: b["spec"].update(production=2)), "spec.production"),
    ("name too long", _with("Deployment", lambda b: b["metadata"].update(name="d" * 45)), "metadata.name"),
    ("gateway router needs gateway", _with("Deployment", lambda b: b["spec"].update(traffic={"router": "gatewayAPI"})),
     "spec.traffic.gateway"),
    ("hostnames as the Gateway API takes them", _with("Deployment", lambda b: b["spec"].update(traffic={
        "router": "gatewayAPI", "gateway": {"parentRefs": [{"name": "gw"}], "hostnames": ["Iris.Example.com"]}})),
     "spec.traffic.gateway.hostnames[0]"),
    ("prometheus source needs its URL", _with("Deployment", lambda b: b["spec"]["strategy"]["canary"].update(
        analysis={"metricsSource": "prometheus"})), "spec.strategy.canary.analysis.prometheusUrl"),
    ("a shadow beside an A/B test", _with("Deployment", lambda b: b["spec"].update(strategy={
        "type": "ABTest", "shadow": {"version": 2},
        "abTest": {"variants": [{"version": 1, "weight": 50}, {"version": 2, "weight": 50}]}})),
     "spec.strategy.shadow"),
    ("a shadow copying nothing", _with("Deployment", lambda b: b["spec"]["strategy"].update(
        shadow={"version": 2, "percent": 0})), "spec.strategy.shadow.percent"),
    # What the schema's types allow but can never work (#18).
    ("memory that is not a quantity", _with("TrainingRun", lambda b: b["spec"]["resources"]["requests"].update(
        memory="lots")), "spec.resources.requests[memory]"),
    ("cpu that is not a quantity", _with("Deployment", lambda b: b["spec"].update(resources={"limits": {
        "cpu": "two cores"}})), "spec.resources.limits[cpu]"),
    ("request above its limit", _with("TrainingRun", lambda b: b["spec"]["resources"].update(
        requests={"cpu": "2", "memory": "256Mi"})), "spec.resources.requests"),
    ("refresh every 0s", _with("Dataset", lambda b: b["spec"].update(refresh={"interval": "0s"})),
     "spec.refresh.interval"),
    ("refresh every 30s", _with("Dataset", lambda b: b["spec"].update(refresh={"interval": "30s"})),
     "spec.refresh.interval"),
    ("analysis every 0s", _with("Deployment", lambda b: b["spec"]["strategy"]["canary"]["analysis"].update(
        interval="0s")), "spec.strategy.canary.analysis.interval"),
    ("drift window of 0s", _with("Deployment", lambda b: b["spec"]["monitoring"].update(window="0s")),
     "spec.monitoring.window"),
    ("canary without steps", _with("Deployment", lambda b: b["spec"]["strategy"]["canary"].update(steps=[])),
     "spec.strategy.canary.steps"),
    ("retraining that may never run", _with("Deployment", lambda b: b["spec"]["monitoring"]["retrain"].update(
        maxRunsPerDay=0)), "spec.monitoring.retrain.maxRunsPerDay"),
    ("accuracy minimum above 1", _with("Model", lambda b: b["spec"]["promotion"].update(minimum=1.01)),
     "spec.promotion.minimum"),
    ("rmse maximum below 0", _with("Model", lambda b: b["spec"]["promotion"].update(metric="rmse", minimum=-1)),
     "spec.promotion.minimum"),
    ("unknown bundled set", _with("Dataset", lambda b: b["spec"]["source"].update(uri="sklearn://titanic")),
     "spec.source.uri"),
    ("target listed as a feature", _with("Dataset", lambda b: b["spec"]["schema"]["features"].append(
        {"name": "species", "type": "categorical"})), "spec.schema.target"),
    ("search values that are not lists", _with("TrainingRun", lambda b: b["spec"].update(search={"space": {
        "C": 1.0}})), "spec.search.space"),
    ("minimum on a categorical feature", _with("Dataset", lambda b: b["spec"]["schema"]["features"][0].update(
        type="categorical")), "spec.schema.features[0].minimum"),
    # The same-data comparison (#14).
    ("holdout that is the training data", _with("TrainingRun", lambda b: b["spec"]["evaluation"].update(
        holdout={"name": b["spec"]["datasetRef"]["name"]})), "spec.evaluation.holdout"),
    ("a segment named twice", _with("TrainingRun", lambda b: b["spec"]["evaluation"].update(
        segments=["region", "region"])), "spec.evaluation.segments"),
    ("significance at 100 %", _with("Model", lambda b: b["spec"]["promotion"].update(
        significance={"confidence": 1.0})), "spec.promotion.significance.confidence"),
    # Autoscaling (#15 item 7).
    ("autoscaling minimum above maximum", _with("Deployment", lambda b: b["spec"].update(autoscaling={
        "minReplicas": 5, "maxReplicas": 2, "targetRequestsPerSecond": 10})), "spec.autoscaling.minReplicas"),
    ("autoscaling without a target", _with("Deployment", lambda b: b["spec"].update(autoscaling={
        "maxReplicas": 2})), "autoscaling needs a target"),
    ("a CPU target without a CPU request", _with("Deployment", lambda b: b["spec"].update(autoscaling={
        "maxReplicas": 2, "targetCPUUtilizationPercentage": 60})),
     "spec.autoscaling.targetCPUUtilizationPercentage"),
]

VALID_EDGES = [
    ("quantities as numbers and strings", _with("TrainingRun", lambda b: b["spec"].update(resources={
        "requests": {"cpu": 1, "memory": "1Gi"}, "limits": {"cpu": "1000m", "memory": "1.5Gi"}}))),
    ("refresh of a day", _with("Dataset", lambda b: b["spec"].update(refresh={"interval": "1d"}))),
    ("refresh of a minute", _with("Dataset", lambda b: b["spec"].update(refresh={"interval": "0.5m30s"}))),
    ("retraining off with no runs", _with("Deployment", lambda b: b["spec"]["monitoring"]["retrain"].update(
        enabled=False, maxRunsPerDay=0))),
    ("minimum above 1 on the headline metric", _with("Model", lambda b: b["spec"]["promotion"].update(
        metric=None, minimum=1.01))),
    ("search values as lists", _with("TrainingRun", lambda b: b["spec"].update(search={"space": {
        "C": [0.1, 1], "penalty": ["l2"], "l1_ratio": [None, 0.5], "class_weight": [{"0": 1}]}}))),
    ("a shadow beside the canary, copying everything", _with("Deployment", lambda b: b["spec"]["strategy"].update(
        shadow={"version": 2, "percent": 100}))),
]


def test_analysis_settings_alone_are_valid(kube, namespace) -> None:
    """An ABTest's metrics source lives in strategy.canary.analysis; the steps' rules must not need steps."""
    body = _with("Deployment", lambda b: b["spec"].update(strategy={
        "type": "ABTest", "canary": {"analysis": {"metricsSource": "prometheus", "prometheusUrl": "http://p:9090"}},
        "abTest": {"variants": [{"version": 1, "weight": 50}, {"version": 2, "weight": 50}]}}))
    create(kube, namespace, body)


@pytest.mark.parametrize(("case", "body", "field"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_manifests_are_rejected_naming_the_field(kube, namespace, case, body, field) -> None:
    status, out = kube.raw("POST", path(body["kind"], namespace), body)
    assert status == 422, f"{case}: expected 422, got {status}: {out}"
    assert field in out["message"], f"{case}: {out['message']}"


@pytest.mark.parametrize(("case", "body"), VALID_EDGES, ids=[c[0] for c in VALID_EDGES])
def test_edges_of_the_new_rules_are_accepted(kube, namespace, case, body) -> None:
    body["spec"] = {k: v for k, v in body["spec"].items() if v is not None}
    if body["kind"] == "Model":
        body["spec"]["promotion"] = {k: v for k, v in body["spec"]["promotion"].items() if v is not None}
    create(kube, namespace, body)


def test_immutable_fields_cannot_change(kube, namespace) -> None:
    run = create(kube, namespace, sample("TrainingRun"))
    run["spec"]["datasetRef"]["name"] = "other"
    status, out = kube.raw("PUT", path("TrainingRun", namespace, run["metadata"]["name"]), run)
    assert status == 422 and "datasetRef is immutable" in out["message"], out


def test_samples_are_valid_and_listed_in_the_category(kube, namespace) -> None:
    for kind in PLURALS:
        create(kube, namespace, sample(kind))
    _, out = kube.raw("GET", f"{API}/namespaces/{namespace}/datasets")
    assert [d["metadata"]["name"] for d in out["items"]] == ["iris"]
    # defaults from the schema are visible to users
    run = get(kube, namespace, "TrainingRun", "iris-logreg-1")
    assert run["spec"]["trigger"] == "manual"


# --- the operator on real objects ---------------------------------------------------------------------

def test_samples_get_conditions_from_the_operator(kube, namespace, operator) -> None:
    for kind in ("Model", "TrainingRun", "Deployment", "Dataset"):
        create(kube, namespace, sample(kind))
    wait_reason(kube, namespace, "Dataset", "iris", "Validating")
    job = wait_for(lambda: kube.raw("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs/iris-validate-1")[1]
                   if kube.raw("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs/iris-validate-1")[0] == 200
                   else None, timeout=30, message="validation Job")
    assert job["metadata"]["ownerReferences"][0]["kind"] == "Dataset"
    wait_reason(kube, namespace, "Model", "iris", "NoProductionVersion")
    wait_reason(kube, namespace, "TrainingRun", "iris-logreg-1", "WaitingForDataset")
    wait_reason(kube, namespace, "Deployment", "iris", "NoProductionVersion")
    model = get(kube, namespace, "Model", "iris")
    assert model["status"]["observedGeneration"] == model["metadata"]["generation"]
    cond = ready(kube, namespace, "Model", "iris")
    assert cond["observedGeneration"] == 1 and cond["lastTransitionTime"]


def test_bad_references_report_and_recover(kube, namespace, operator) -> None:
    run = sample("TrainingRun")
    create(kube, namespace, run)
    cond = wait_reason(kube, namespace, "TrainingRun", run["metadata"]["name"], "DatasetNotFound")
    assert "'iris'" in cond["message"] and "create it" in cond["message"]
    wait_for(lambda: any(e["reason"] == "DatasetNotFound" and e["type"] == "Warning"
                         for e in events_for(kube, namespace, run["metadata"]["name"])),
             timeout=15, message="a Warning event DatasetNotFound")
    # fixing the world (creating the missing objects) heals it without touching the run
    create(kube, namespace, sample("Dataset"))
    wait_reason(kube, namespace, "TrainingRun", run["metadata"]["name"], "ModelNotFound")
    create(kube, namespace, sample("Model"))
    wait_reason(kube, namespace, "TrainingRun", run["metadata"]["name"], "WaitingForDataset")


def test_estimator_that_does_not_import_is_reported(kube, namespace, operator) -> None:
    create(kube, namespace, sample("Dataset"))
    create(kube, namespace, sample("Model"))
    run = sample("TrainingRun")
    run["spec"]["estimator"]["className"] = "sklearn.linear_model.NoSuchRegression"
    create(kube, namespace, run)
    cond = wait_reason(kube, namespace, "TrainingRun", run["metadata"]["name"], "EstimatorImportFailed")
    assert "NoSuchRegression" in cond["message"]


def test_manual_pin_to_missing_version(kube, namespace, operator) -> None:
    model = sample("Model")
    model["spec"]["promotion"]["policy"] = "Manual"
    model["spec"]["production"] = 3
    create(kube, namespace, model)
    cond = wait_reason(kube, namespace, "Model", "iris", "VersionNotFound")
    assert "v3" in cond["message"]


def test_operator_never_writes_spec(kube, namespace, operator) -> None:
    created = {kind: create(kube, namespace, sample(kind)) for kind in PLURALS}
    wait_reason(kube, namespace, "Deployment", "iris", "NoProductionVersion")
    for kind, before in created.items():
        after = get(kube, namespace, kind, before["metadata"]["name"])
        assert after["spec"] == before["spec"], kind
        assert after["metadata"]["generation"] == 1, kind
        assert not after["metadata"].get("finalizers"), kind
        assert not [a for a in after["metadata"].get("annotations") or {} if a.startswith("kopf.zalando.org")]


def test_a_refused_job_is_reported_and_not_retried_until_the_spec_changes(kube, namespace, operator) -> None:
    """Issue 18: a child the API server refuses (here a quota forbids Jobs: 403) gives Ready=False ChildRejected
    with the server's message and one Warning Event; reconciles that follow do not ask again until the spec
    changes."""
    quotas = f"/api/v1/namespaces/{namespace}/resourcequotas"
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-jobs"},
             "spec": {"hard": {"count/jobs.batch": "0"}}}
    status, out = kube.raw("POST", quotas, quota)
    assert status == 201, out
    wait_for(lambda: (kube.raw("GET", f"{quotas}/no-jobs")[1].get("status") or {}).get("hard"), timeout=30,
             message="the quota controller to compute the quota")
    create(kube, namespace, sample("Dataset"))
    cond = wait_reason(kube, namespace, "Dataset", "iris", "ChildRejected")
    assert "iris-validate-1" in cond["message"] and "quota" in cond["message"], cond
    wait_for(lambda: any(e["reason"] == "ChildRejected" and e["type"] == "Warning"
                         for e in events_for(kube, namespace, "iris")), timeout=15, message="a Warning event")

    def log_count(text: str) -> int:
        return operator.log_path.read_text(errors="replace").count(text)

    refusals = log_count(f"Dataset {namespace}/iris: Job iris-validate-1 refused")
    reconciles = log_count(f"Dataset {namespace}/iris reconciled in")
    assert refusals == 1
    # A metadata change is a watch event, so a reconcile, but not a spec change: it must not try again.
    assert kube.raw_patch(path("Dataset", namespace, "iris"), {"metadata": {"labels": {"poke": "1"}}})[0] == 200
    wait_for(lambda: log_count(f"Dataset {namespace}/iris reconciled in") > reconciles, timeout=30,
             message="a reconcile after the label change")
    assert log_count(f"Dataset {namespace}/iris: Job iris-validate-1 refused") == 1
    assert [e["reason"] for e in events_for(kube, namespace, "iris")].count("ChildRejected") == 1

    # Lift the quota and change the spec: the next generation's Job is created.
    assert kube.raw("DELETE", f"{quotas}/no-jobs")[0] == 200
    patch_spec(kube, namespace, "Dataset", "iris", {"refresh": {"interval": "1h"}})
    wait_for(lambda: kube.raw("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs/iris-validate-2")[0] == 200,
             timeout=30, message="the validation Job of the new generation")
    wait_reason(kube, namespace, "Dataset", "iris", "Validating")
