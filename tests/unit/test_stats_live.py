"""Live performance from feedback counters, and window deltas across counter resets."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from kultivar.domain.stats import RegressionSums, classification_performance, delta, regression_performance


def test_delta_is_the_increase_and_a_drop_is_a_reset() -> None:
    start = {("cat", "cat"): 10.0, ("cat", "dog"): 4.0, ("dog", "dog"): 7.0, ("gone", "gone"): 3.0}
    end = {("cat", "cat"): 15.0, ("cat", "dog"): 2.0, ("dog", "dog"): 7.0, ("new", "dog"): 5.0}
    assert delta(end, start) == {
        ("cat", "cat"): 5.0,  # grew by 5
        ("cat", "dog"): 2.0,  # went down: the server restarted, so all 2 are new (Prometheus increase())
        ("dog", "dog"): 0.0,
        ("new", "dog"): 5.0,  # a new series counts from zero
    }
    assert delta(end, None) == end


def test_classification_performance_matches_sklearn_with_weights() -> None:
    confusion = {("cat", "cat"): 50, ("cat", "dog"): 10, ("dog", "dog"): 30, ("dog", "cat"): 5,
                 ("bird", "cat"): 3, ("dog", "fish"): 2}  # fish never predicted, bird never true
    perf = classification_performance(confusion)
    pred = [p for p, _ in confusion]
    true = [t for _, t in confusion]
    weight = list(confusion.values())
    assert perf.n == sum(weight)
    assert perf.accuracy == pytest.approx(skm.accuracy_score(true, pred, sample_weight=weight))
    for name, fn in (("precision", skm.precision_score), ("recall", skm.recall_score), ("f1", skm.f1_score)):
        expected = fn(true, pred, sample_weight=weight, average="macro", zero_division=0)
        assert getattr(perf, name) == pytest.approx(expected), name
        assert perf.value(name) == getattr(perf, name)
    with pytest.raises(ValueError, match="roc_auc cannot be computed"):
        perf.value("roc_auc")


def test_no_labels_no_metric() -> None:
    perf = classification_performance({})
    assert (perf.n, perf.accuracy, perf.f1) == (0.0, None, None)
    assert regression_performance(RegressionSums(0, 0, 0)).mae is None
    with pytest.raises(ValueError, match="not negative"):
        classification_performance({("a", "a"): -1})


def test_regression_performance_from_sums_matches_the_raw_errors() -> None:
    rng = np.random.default_rng(0)
    actual = rng.normal(50, 10, 1000)
    predicted = actual + rng.normal(1.5, 4, 1000)
    err = predicted - actual
    sums = RegressionSums(n=len(err), sum_abs_err=float(np.abs(err).sum()), sum_sq_err=float((err**2).sum()),
                          sum_err=float(err.sum()))
    perf = regression_performance(sums)
    assert perf.mae == pytest.approx(skm.mean_absolute_error(actual, predicted))
    assert perf.rmse == pytest.approx(math.sqrt(skm.mean_squared_error(actual, predicted)))
    assert perf.bias == pytest.approx(err.mean())
    assert perf.bias > 0  # over-predicts
    assert perf.value("rmse") == perf.rmse
    with pytest.raises(ValueError, match="cannot exceed"):
        RegressionSums(n=2, sum_abs_err=1.0, sum_sq_err=1.0, sum_err=3.0)
