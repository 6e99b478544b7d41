"""Per-segment metrics and the gate's per-segment regression check."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from kultivar.domain.stats import SegmentMetric, segment_metrics, worst_segment_regression


def test_metrics_per_segment_value_match_sklearn_on_each_slice() -> None:
    rng = np.random.default_rng(0)
    n = 500
    region = rng.choice(np.array(["north", "south", "east"]), n)
    plan = rng.choice(np.array([1, 2]), n)
    y = rng.integers(0, 3, n)
    pred = np.where(rng.random(n) < np.where(region == "north", 0.6, 0.9), y, (y + 1) % 3)
    table = segment_metrics(y, pred, {"region": region, "plan": plan}, "f1")
    assert [(s.feature, s.value) for s in table] == [
        ("plan", "1"), ("plan", "2"), ("region", "east"), ("region", "north"), ("region", "south")]
    for s in table:
        rows = (region if s.feature == "region" else plan).astype(str) == s.value
        assert s.rows == rows.sum()
        assert s.metric == "f1"
        assert s.score == pytest.approx(skm.f1_score(y[rows], pred[rows], average="macro", zero_division=0))
    assert sum(s.rows for s in table if s.feature == "region") == n


def test_undefined_segment_scores_are_nan_and_missing_values_are_a_segment() -> None:
    y = np.array([1.0, 1.0, 2.0, 3.0])
    pred = np.array([1.5, 0.5, 2.0, 2.5])
    table = segment_metrics(y, pred, {"city": np.array(["a", "a", None, "b"], dtype=object)}, "r2")
    by_value = {s.value: s for s in table}
    assert set(by_value) == {"a", "b", "None"}
    assert math.isnan(by_value["a"].score)  # constant true values: r2 undefined
    with pytest.raises(ValueError, match="segment feature city has 3 rows"):
        segment_metrics(y, pred, {"city": np.array(["a", "b", "c"])}, "mae")


def _seg(value: str, rows: int, score: float, metric: str = "accuracy") -> SegmentMetric:
    return SegmentMetric("region", value, rows, metric, score)


def test_regression_found_worst_first_with_a_message_naming_the_segment() -> None:
    candidate = [_seg("north", 412, 0.81), _seg("south", 900, 0.70), _seg("east", 30, 0.10), _seg("west", 500, 0.95)]
    production = [_seg("north", 412, 0.88), _seg("south", 900, 0.80), _seg("east", 30, 0.90), _seg("west", 500, 0.90)]
    found = worst_segment_regression(candidate, production, margin=0.05, min_rows=100)
    assert [r.value for r in found] == ["south", "north"]  # east is below min_rows; west improved
    assert found[1].message == "segment region=north (412 rows): accuracy 0.81 vs production 0.88"
    assert found[0].shortfall == pytest.approx(0.10)
    # A drop within the margin is not a regression; exactly the margin is not "more than" it.
    assert worst_segment_regression(candidate, production, margin=0.10, min_rows=100) == []


def test_lower_is_better_metrics_and_undefined_scores() -> None:
    candidate = [_seg("north", 200, 3.0, "mae"), _seg("south", 200, 1.0, "mae"), _seg("east", 200, math.nan, "mae")]
    production = [_seg("north", 200, 2.0, "mae"), _seg("south", 200, 2.0, "mae"), _seg("east", 200, 1.0, "mae")]
    found = worst_segment_regression(candidate, production, margin=0.5, min_rows=50)
    assert [(r.value, r.shortfall) for r in found] == [("north", 1.0)]
    assert found[0].message == "segment region=north (200 rows): mae 3 vs production 2"
    with pytest.raises(ValueError, match="margin"):
        worst_segment_regression(candidate, production, margin=-1, min_rows=0)


@pytest.mark.parametrize("metric", ["accuracy", "f1", "precision", "recall"])
@pytest.mark.parametrize("pos_label", [None, 1, 2])
def test_counted_segments_equal_the_metric_of_each_slice(metric: str, pos_label: int | None) -> None:
    # Integer labels take the one-count path; the same labels as text take the per-slice path. Both must give
    # sklearn's score of each slice; F1, precision and recall are NaN where the positive class is neither true nor
    # predicted in a slice (sklearn would say 0 with a warning), accuracy is defined there.
    rng = np.random.default_rng(3)
    n = 3000
    region = rng.integers(0, 7, n)
    y = rng.integers(0, 3, n)
    pred = np.where(rng.random(n) < 0.7, y, rng.integers(0, 3, n))
    if pos_label is not None:  # two classes only, and region 6 never sees the positive class
        y, pred = np.minimum(y, 1) + 1, np.minimum(pred, 1) + 1
        y[region == 6], pred[region == 6] = 3 - pos_label, 3 - pos_label
    counted = segment_metrics(y, pred, {"region": region}, metric, pos_label=pos_label)
    sliced = segment_metrics(y.astype(str), pred.astype(str), {"region": region}, metric,
                             pos_label=None if pos_label is None else str(pos_label))
    assert [(s.value, s.rows) for s in counted] == [(s.value, s.rows) for s in sliced]
    for c, s in zip(counted, sliced, strict=True):
        rows = region == int(c.value)
        if pos_label is not None and c.value == "6" and metric != "accuracy":
            assert math.isnan(c.score) and math.isnan(s.score)
            continue
        args = {"average": "binary", "pos_label": pos_label} if pos_label else {"average": "macro"}
        expected = (skm.accuracy_score(y[rows], pred[rows]) if metric == "accuracy" else
                    getattr(skm, f"{metric}_score")(y[rows], pred[rows], zero_division=0, **args))
        assert c.score == pytest.approx(expected) and s.score == pytest.approx(expected)
