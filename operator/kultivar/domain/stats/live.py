"""Live performance from the inference server's feedback counters: window deltas and the metric arithmetic.

The server exports cumulative counters per version: for classification the count of each (predicted, actual)
pair, for regression the number of labelled predictions and the sums of absolute, squared and signed errors
(error = prediction - actual). A window's numbers are the difference of two readings (:func:`delta`), or
Prometheus' ``increase()`` over the window, which this difference mirrors.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import numpy as np

from kultivar.domain.stats.metrics import check_metric, from_confusion

K = TypeVar("K", bound=Hashable)


def delta(window_end: Mapping[K, float], window_start: Mapping[K, float] | None) -> dict[K, float]:
    """Per series, how much a cumulative counter grew between two readings, as Prometheus ``increase()`` reads a
    reset: a counter that went down was restarted (a server restart zeroes it), so its whole new value counts.

    A series missing at the start is new (all of it counts); one missing at the end is gone (not returned). Every
    series must be a real counter (never decreasing while its process lives): a signed sum such as the sum of
    errors would be misread as a reset, so export it as two counters (over- and under-prediction) instead.
    """
    start = window_start or {}
    out: dict[K, float] = {}
    for key, end in window_end.items():
        begin = start.get(key)
        out[key] = end if begin is None or end < begin else end - begin
    return out


@dataclass(frozen=True)
class ClassificationPerformance:
    """Live classification metrics from (predicted, actual) counts; macro averages over every label seen."""

    n: float  # labelled predictions
    accuracy: float | None
    precision: float | None
    recall: float | None
    f1: float | None

    def value(self, metric: str) -> float | None:
        check_metric(metric)
        if metric not in ("accuracy", "precision", "recall", "f1"):
            raise ValueError(f"{metric} cannot be computed from live (predicted, actual) counts")
        return {"accuracy": self.accuracy, "precision": self.precision, "recall": self.recall, "f1": self.f1}[metric]

    def wire(self) -> dict[str, Any]:
        return asdict(self)


def classification_performance(confusion: Mapping[tuple[Hashable, Hashable], float]) -> ClassificationPerformance:
    """Accuracy and macro precision/recall/F1 (sklearn's zero_division=0) from {(predicted, actual): count}.

    Labels are compared by their string form, as they arrive in metric labels (1 and "1" are one class).
    """
    if any(c < 0 or not math.isfinite(c) for c in confusion.values()):
        raise ValueError("confusion counts must be finite and not negative")
    labels = sorted({str(k) for pair in confusion for k in pair})
    position = {label: i for i, label in enumerate(labels)}
    tp, predicted, actual = (np.zeros(len(labels)) for _ in range(3))
    for (pred, true), count in confusion.items():
        p, t = position[str(pred)], position[str(true)]
        predicted[p] += count
        actual[t] += count
        if p == t:
            tp[p] += count
    n = float(actual.sum())
    if n <= 0:
        return ClassificationPerformance(n=0.0, accuracy=None, precision=None, recall=None, f1=None)
    seen = np.flatnonzero((predicted + actual) > 0)

    def value(metric: str) -> float:
        return float(from_confusion(metric, tp, predicted, actual, seen))

    return ClassificationPerformance(n=n, accuracy=value("accuracy"), precision=value("precision"),
                                     recall=value("recall"), f1=value("f1"))


@dataclass(frozen=True)
class RegressionSums:
    """Counters of labelled regression predictions (error = prediction - actual)."""

    n: float
    sum_abs_err: float
    sum_sq_err: float
    sum_err: float = 0.0

    def __post_init__(self) -> None:
        if self.n < 0 or self.sum_abs_err < 0 or self.sum_sq_err < 0:
            raise ValueError("n, sum_abs_err and sum_sq_err must not be negative")
        if abs(self.sum_err) > self.sum_abs_err * (1 + 1e-9) + 1e-12:
            raise ValueError(f"|sum_err| ({abs(self.sum_err):g}) cannot exceed sum_abs_err ({self.sum_abs_err:g})")


@dataclass(frozen=True)
class RegressionPerformance:
    n: float
    mae: float | None
    rmse: float | None
    bias: float | None  # mean(prediction - actual): positive when the model over-predicts

    def value(self, metric: str) -> float | None:
        if metric not in ("mae", "rmse"):
            raise ValueError(f"{metric} cannot be computed from live error sums; use mae or rmse")
        return self.mae if metric == "mae" else self.rmse

    def wire(self) -> dict[str, Any]:
        return asdict(self)


def regression_performance(sums: RegressionSums) -> RegressionPerformance:
    """MAE, RMSE and bias from the sums of absolute, squared and signed errors."""
    if sums.n <= 0:
        return RegressionPerformance(n=0.0, mae=None, rmse=None, bias=None)
    return RegressionPerformance(n=sums.n, mae=sums.sum_abs_err / sums.n, rmse=math.sqrt(sums.sum_sq_err / sums.n),
                                 bias=sums.sum_err / sums.n)
