"""The feedback contract: what a batch must carry, what is refused (all of the batch), and what is counted."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kultivar.domain.stats import RegressionSums, classification_performance, regression_performance
from kultivar.serving.feedback import MAX_VERSIONS, OTHER_CLASS, FeedbackParser
from kultivar.serving.monitoring import ServingMetrics
from kultivar.serving.payload import FeatureSpec, PayloadError

FEATURES = [FeatureSpec("x", "numeric")]


def body(items: list[Any], **top: Any) -> bytes:
    return orjson.dumps({"items": items, **top})


def classifier(deployment: tuple[str, str] | None = ("ns", "churn")) -> ServingMetrics:
    m = ServingMetrics("churn", "3", "sha256:" + "0" * 64, deployment=deployment)
    m.bind_model(FEATURES, "classification", [0, 1, 2], None, drift_accounting=False)
    return m


def regressor() -> ServingMetrics:
    m = ServingMetrics("price", "3", "sha256:" + "0" * 64)
    m.bind_model(FEATURES, "regression", None, None, drift_accounting=False)
    return m


def samples(m: ServingMetrics, prefix: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(m.exposition().decode())
            for s in family.samples if s.name.startswith(prefix)}


def test_classification_pairs_are_counted_per_answering_version() -> None:
    parser = FeedbackParser("churn", "classification", [0, 1, 2])
    batch = parser.parse(body([
        {"id": "a-1", "version": 3, "prediction": 1, "actual": 1},
        {"version": "3", "prediction": 1.0, "actual": "2"},   # 1.0 and "2" are the classes 1 and 2
        {"version": 4, "prediction": 0, "actual": 0},
        {"prediction": 2, "actual": 7},                        # batch-level version; 7 is no class: __other__
    ], version=4))
    assert batch.count == 4 and batch.other_actual == 1
    m = classifier()
    m.count_feedback(batch)
    m.count_feedback(batch)
    got = samples(m, "kultivar_feedback_classifications_total")
    ident = (("kultivar_deployment", "churn"), ("kultivar_namespace", "ns"), ("model", "churn"))

    def key(version: str, predicted: str, actual: str) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((*ident, ("version", version), ("predicted", predicted), ("actual", actual))))

    assert got == {key("3", "1", "1"): 2, key("3", "1", "2"): 2, key("4", "0", "0"): 2,
                   key("4", "2", OTHER_CLASS): 2}
    # What the operator computes from these series: the unknown actual class is always a miss.
    v4 = {(dict(k)["predicted"], dict(k)["actual"]): v for k, v in got.items() if dict(k)["version"] == "4"}
    assert classification_performance(v4).accuracy == 0.5


def test_regression_sums_give_mae_rmse_and_bias() -> None:
    predictions, actuals = [10.0, 4.0, 7.5, 3.0], [8.0, 5.0, 7.5, 6.0]
    parser = FeedbackParser("price", "regression", None)
    batch = parser.parse(body([{"version": 2, "prediction": p, "actual": a}
                               for p, a in zip(predictions, actuals, strict=True)]))
    m = regressor()
    m.count_feedback(batch)
    got = {name: v for name in ("regressions", "overprediction", "underprediction", "squared_error")
           for v in samples(m, f"kultivar_feedback_{name}_total").values()}
    errors = [p - a for p, a in zip(predictions, actuals, strict=True)]
    assert got == {"regressions": 4, "overprediction": 2.0, "underprediction": 4.0,
                   "squared_error": sum(e * e for e in errors)}
    perf = regression_performance(RegressionSums(got["regressions"], got["overprediction"] + got["underprediction"],
                                                 got["squared_error"], got["overprediction"] - got["underprediction"]))
    assert perf.mae == pytest.approx(sum(abs(e) for e in errors) / 4)
    assert perf.rmse == pytest.approx(math.sqrt(sum(e * e for e in errors) / 4))
    assert perf.bias == pytest.approx(sum(errors) / 4)
    assert not samples(m, "kultivar_feedback_classifications")


@pytest.mark.parametrize(("task", "raw", "message"), [
    ("classification", b"[1]", "must be a JSON object with an 'items' list"),
    ("classification", b"{nope", "not valid JSON"),
    ("classification", body([]), "'items' must be a non-empty list"),
    ("classification", body([{"prediction": 1, "actual": 1}]), "items[0] has no 'version'"),
    ("classification", body([{"version": "latest", "prediction": 1, "actual": 1}]),
     "items[0].version is 'latest', not a Model version number"),
    ("classification", body([{"version": 0, "prediction": 1, "actual": 1}]), "not a Model version number"),
    ("classification", body([{"version": True, "prediction": 1, "actual": 1}]), "must be the Model version"),
    ("classification", body([{"version": 1, "id": "r-1", "actual": 1}]),
     "items[0] has no 'prediction'. The server keeps no record of its answers"),
    ("classification", body([{"version": 1, "prediction": 1}]), "items[0] has no 'actual'"),
    ("classification", body([{"version": 1, "prediction": 1, "actual": 1}, {"version": 1, "prediction": 9,
                                                                            "actual": 1}]),
     "items[1].prediction 9 is not a class of model 'm' (0, 1, 2)"),
    ("classification", body([{"version": 1, "prediction": [1], "actual": 1}]), "takes a class"),
    ("classification", body([{"version": 1, "prediction": 1, "actual": None}]), "items[0].actual is None"),
    ("classification", body([{"version": 1, "id": 5, "prediction": 1, "actual": 1}]), "items[0].id must be text"),
    ("classification", body(["x"]), "items[0] must be an object"),
    ("regression", body([{"version": 1, "prediction": 1.5, "actual": "high"}]),
     "items[0].actual is 'high'; the model is a regressor, so it takes a number"),
    ("regression", body([{"version": 1, "prediction": True, "actual": 1.0}]), "takes a number"),
    ("regression", b'{"items": [{"version": 1, "prediction": 1e999, "actual": 1}]}', "not valid JSON"),
])
def test_bad_feedback_is_refused_naming_the_problem(task: str, raw: bytes, message: str) -> None:
    parser = FeedbackParser("m", task, [0, 1, 2] if task == "classification" else None)
    with pytest.raises(PayloadError) as e:
        parser.parse(raw)
    assert message in str(e.value)


def test_too_large_a_batch_is_refused() -> None:
    parser = FeedbackParser("m", "classification", [0, 1], max_items=10_000)
    items = [{"version": 1, "prediction": 0, "actual": 1}] * 10_001
    with pytest.raises(PayloadError, match="10001 items; send at most 10000"):
        parser.parse(body(items))
    assert parser.parse(body(items[:10_000])).count == 10_000


def test_a_refused_batch_counts_nothing() -> None:
    """Past the version limit the whole batch is refused: nothing of it is counted, not even its valid items."""
    m = classifier(deployment=None)
    parser = FeedbackParser("churn", "classification", [0, 1, 2])
    m.count_feedback(parser.parse(body([{"version": v, "prediction": 0, "actual": 0}
                                        for v in range(1, MAX_VERSIONS + 1)])))
    before = samples(m, "kultivar_feedback_classifications_total")
    assert len(before) == MAX_VERSIONS
    batch = parser.parse(body([{"version": 1, "prediction": 0, "actual": 0},
                               {"version": MAX_VERSIONS + 1, "prediction": 0, "actual": 0}]))
    with pytest.raises(PayloadError, match=f"above its limit of {MAX_VERSIONS}"):
        m.count_feedback(batch)
    assert samples(m, "kultivar_feedback_classifications_total") == before
