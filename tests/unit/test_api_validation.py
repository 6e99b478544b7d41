"""The models refuse what can never work, as the CRDs' CEL rules do at apply time (tests/integration checks those)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from kultivar.api import crdgen
from kultivar.api.common import ResourceRequirements, parse_quantity
from kultivar.api.dataset import DatasetRefresh, Feature
from kultivar.api.deployment import Analysis, CanaryStrategy, Monitoring, Retrain
from kultivar.api.model import Promotion
from kultivar.api.resources import KINDS
from kultivar.api.trainingrun import Search


def refused(model: type[BaseModel], data: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    assert needle in str(info.value), str(info.value)


@pytest.mark.parametrize(("text", "amount"), [
    ("500m", Decimal("0.5")), (2, Decimal(2)), ("1.5Gi", Decimal(3 * 2**29)), ("1e3", Decimal(1000)),
    ("128974848", Decimal(128974848)), ("129M", Decimal(129_000_000)), ("123Mi", Decimal(123 * 2**20)),
    (".5", Decimal("0.5")), ("100n", Decimal("1e-7")),
])
def test_quantities_parse_as_kubernetes_does(text: int | str, amount: Decimal) -> None:
    assert parse_quantity(text) == amount


@pytest.mark.parametrize("bad", ["lots", "two cores", "1 Gi", "1GB", "Gi", "", "1.2.3"])
def test_resource_values_that_are_not_quantities_are_refused(bad: str) -> None:
    refused(ResourceRequirements, {"requests": {"memory": bad}}, "must be a Kubernetes quantity")
    refused(ResourceRequirements, {"limits": {"cpu": bad}}, "must be a Kubernetes quantity")


def test_a_request_above_its_limit_is_refused() -> None:
    refused(ResourceRequirements, {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}},
            "requests.memory 2Gi exceeds limits.memory 1Gi")
    refused(ResourceRequirements, {"requests": {"cpu": 2}, "limits": {"cpu": "1500m"}}, "requests.cpu")
    ResourceRequirements.model_validate({"requests": {"cpu": "500m", "memory": "1Gi"},
                                         "limits": {"cpu": 1, "memory": "1024Mi"}})  # equal is fine
    ResourceRequirements.model_validate({"requests": {"cpu": "4"}, "limits": {"memory": "1Gi"}})  # no cpu limit


@pytest.mark.parametrize(("model", "field", "too_short", "shortest"), [
    (DatasetRefresh, "interval", ["0s", "59s", "0.5m", "0d"], ["1m", "60s", "1h", "1d", "0.001d"]),
    (Analysis, "interval", ["0s", "500ms", "0m"], ["1s", "1000ms", "2s"]),
    (Monitoring, "window", ["0s", "999ms"], ["1s", "10m"]),
])
def test_durations_below_their_floor_are_refused(model: type[BaseModel], field: str, too_short: list[str],
                                                 shortest: list[str]) -> None:
    for value in too_short:
        refused(model, {field: value}, "must be at least")
    for value in shortest:
        model.model_validate({field: value})


def test_duration_floors_are_cel_rules_on_the_field() -> None:
    crds = {k.kind: crdgen.crd(k)["spec"]["versions"][0]["schema"]["openAPIV3Schema"] for k in KINDS}
    refresh = crds["Dataset"]["properties"]["spec"]["properties"]["refresh"]["properties"]["interval"]
    assert refresh["x-kubernetes-validations"][0]["rule"].endswith(">= 60.0")
    assert "at least 1m" in refresh["description"]


def test_a_canary_needs_a_step() -> None:
    refused(CanaryStrategy, {"steps": []}, "at least 1 item")


def test_retraining_enabled_needs_runs() -> None:
    refused(Retrain, {"enabled": True, "maxRunsPerDay": 0}, "maxRunsPerDay: must be at least 1")
    refused(Retrain, {"maxRunsPerDay": 0}, "maxRunsPerDay")  # enabled by default
    Retrain.model_validate({"enabled": False, "maxRunsPerDay": 0})


@pytest.mark.parametrize(("metric", "minimum"), [
    ("accuracy", 1.01), ("f1", -0.1), ("roc_auc", 2.0), ("precision", 1.5), ("recall", -1.0), ("r2", 1.2),
    ("rmse", -0.5), ("mae", -1.0),
])
def test_a_gate_minimum_outside_the_metric_range_is_refused(metric: str, minimum: float) -> None:
    refused(Promotion, {"metric": metric, "minimum": minimum}, "can never be met")


@pytest.mark.parametrize(("metric", "minimum"), [
    ("accuracy", 0.0), ("accuracy", 1.0), ("f1", 0.9), ("r2", -3.0), ("rmse", 50.0), (None, 1.01), (None, -2.0),
])
def test_reachable_gate_minimums_are_valid(metric: str | None, minimum: float) -> None:
    Promotion.model_validate({"metric": metric, "minimum": minimum})


@pytest.mark.parametrize("space", [{"C": 1.0}, {"C": []}, {"C": [0.1], "penalty": "l2"}, {"C": {"low": 1}}])
def test_search_space_values_must_be_lists(space: dict[str, Any]) -> None:
    refused(Search, {"space": space}, "must be a non-empty list")


def test_bounds_only_on_numeric_features() -> None:
    refused(Feature, {"name": "plan", "type": "categorical", "minimum": 0}, "minimum applies only to numeric")
    refused(Feature, {"name": "plan", "type": "boolean", "maximum": 1}, "maximum applies only to numeric")
    refused(Feature, {"name": "age", "type": "numeric", "allowed": ["a"]}, "allowed values apply only")
    refused(Feature, {"name": "age", "type": "numeric", "minimum": 5, "maximum": 1}, "must not exceed")
    Feature.model_validate({"name": "age", "type": "numeric", "minimum": 0, "maximum": 120})
