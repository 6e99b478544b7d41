"""Metric arithmetic shared by the bootstrap, the segment table and live performance. Pure numpy.

Names are the TrainingRun's (spec.evaluation.metric). Classification metrics other than ROC AUC are computed from
confusion counts, vectorised over any leading axes (one row per bootstrap resample), with sklearn's conventions:
precision, recall and F1 of a class with a zero denominator are 0 (``zero_division=0``); "macro" is the unweighted
mean over the labels seen in the true or predicted values; "binary" is the one class ``pos_label``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

CLASSIFICATION_METRICS = ("accuracy", "f1", "precision", "recall", "roc_auc")
REGRESSION_METRICS = ("r2", "rmse", "mae")
COUNT_METRICS = ("accuracy", "f1", "precision", "recall")  # depend only on the confusion counts
LOWER_IS_BETTER = frozenset({"mae", "rmse"})


def check_metric(metric: str) -> None:
    if metric not in CLASSIFICATION_METRICS + REGRESSION_METRICS:
        known = ", ".join(CLASSIFICATION_METRICS + REGRESSION_METRICS)
        raise ValueError(f"unknown metric {metric!r}; use one of {known}")


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of metric is better (False for the error metrics mae and rmse)."""
    check_metric(metric)
    return metric not in LOWER_IS_BETTER


def improvement(metric: str, a: float, b: float) -> float:
    """How much a beats b on metric, in the metric's units: a - b, or b - a for error metrics."""
    return a - b if higher_is_better(metric) else b - a


def from_confusion(metric: str, tp: npt.NDArray[Any], predicted: npt.NDArray[Any], actual: npt.NDArray[Any],
                   average_over: Sequence[int] | npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
    """A count metric from per-label counts with shape (..., labels): true positives, predicted and actual counts.

    ``average_over`` are the label positions to average over (all labels seen for "macro", one for "binary").
    """
    tp, predicted, actual = (np.asarray(x, dtype=np.float64) for x in (tp, predicted, actual))
    if metric == "accuracy":
        total = actual.sum(axis=-1)
        return _ratio(tp.sum(axis=-1), total, np.nan)
    cols = np.asarray(average_over, dtype=np.intp)
    tp, predicted, actual = tp[..., cols], predicted[..., cols], actual[..., cols]
    if metric == "precision":
        per_label = _ratio(tp, predicted, 0.0)
    elif metric == "recall":
        per_label = _ratio(tp, actual, 0.0)
    elif metric == "f1":  # 2PR/(P+R) = 2tp/(2tp+fp+fn) = 2tp/(predicted+actual)
        per_label = _ratio(2.0 * tp, predicted + actual, 0.0)
    else:
        raise ValueError(f"{metric} is not a confusion-count metric")
    return np.asarray(per_label.mean(axis=-1), dtype=np.float64)


def _ratio(num: npt.NDArray[Any], den: npt.NDArray[Any], empty: float) -> npt.NDArray[np.float64]:
    out = np.full(np.broadcast(num, den).shape, empty, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


# Integers spanning at most this many values (or the array's length, if larger) are grouped by counting.
_DENSE_SPAN = 1 << 16


def unique_inverse(values: npt.ArrayLike) -> tuple[npt.NDArray[Any], npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """``np.unique(values, return_inverse=True, return_counts=True)``, in linear time for integers in a small range.

    Labels, class codes, segment codes and the bootstrap's (true, a, b) cells are small integers; counting them
    with ``bincount`` gives the same sorted values, positions and counts without sorting every row (the sort is
    most of a large held-out split's scoring time). Anything else goes to ``np.unique``.
    """
    a = np.asarray(values)
    if a.ndim == 1 and a.size and a.dtype.kind in "iub":
        low, high = int(a.min()), int(a.max())
        if high - low <= max(_DENSE_SPAN, a.size):
            shifted = a.astype(np.intp) - low
            counts = np.bincount(shifted, minlength=high - low + 1)
            present = np.flatnonzero(counts)
            position = np.zeros(high - low + 1, dtype=np.intp)
            position[present] = np.arange(len(present), dtype=np.intp)
            return (present + low).astype(a.dtype), position[shifted], counts[present]
    found, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    return found, inverse.reshape(-1).astype(np.intp), counts.astype(np.intp)


def encode_labels(*columns: npt.ArrayLike) -> tuple[npt.NDArray[Any], list[npt.NDArray[np.intp]]]:
    """The sorted labels seen in any column and each column as positions in them."""
    arrays = [np.asarray(c) for c in columns]
    labels, inverse, _ = unique_inverse(np.concatenate(arrays))
    out, start = [], 0
    for a in arrays:
        out.append(inverse[start:start + len(a)].astype(np.intp))
        start += len(a)
    return labels, out


def averaged_labels(labels: npt.NDArray[Any], seen: npt.NDArray[np.intp], pos_label: Any | None
                    ) -> npt.NDArray[np.intp]:
    """Positions to average over: ``pos_label`` alone ("binary"), else every label in ``seen`` ("macro")."""
    if pos_label is None:
        return unique_inverse(seen)[0]
    hit = np.flatnonzero(labels == pos_label)
    if hit.size == 0:
        raise ValueError(f"pos_label {pos_label!r} is not among the labels {labels.tolist()}")
    return hit


def classification_score(metric: str, y_true: npt.ArrayLike, y_pred: npt.ArrayLike, pos_label: Any | None = None
                         ) -> float:
    """accuracy, f1, precision or recall of predicted labels (see the module docstring for averaging)."""
    labels, (t, p) = encode_labels(y_true, y_pred)
    k = len(labels)
    actual = np.bincount(t, minlength=k)
    predicted = np.bincount(p, minlength=k)
    tp = np.bincount(t[t == p], minlength=k)
    # Accuracy averages nothing: it is defined even where pos_label is neither true nor predicted.
    avg: Any = [] if metric == "accuracy" else averaged_labels(labels, np.concatenate([t, p]), pos_label)
    return float(from_confusion(metric, tp, predicted, actual, avg))


def auc_from_counts(negatives: npt.NDArray[Any], positives: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """ROC AUC (Mann-Whitney, ties count half) from counts per distinct score level, ascending, shape (..., levels).

    AUC = sum over levels of positives * (negatives at or below - half the negatives at that level) / (P * N).
    """
    at_or_below = np.cumsum(negatives, axis=-1)
    wins = (np.einsum("...l,...l->...", positives, at_or_below, dtype=np.float64)
            - 0.5 * np.einsum("...l,...l->...", positives, negatives, dtype=np.float64))
    pairs = np.asarray(np.sum(positives, axis=-1, dtype=np.float64) * np.sum(negatives, axis=-1, dtype=np.float64))
    return _ratio(wins, pairs, np.nan)


def roc_auc(y_true: npt.ArrayLike, scores: npt.ArrayLike, pos_label: Any | None = None,
            labels: Sequence[Any] | None = None) -> float:
    """ROC AUC: binary from 1-D scores of ``pos_label`` (default: the larger of two labels); one-vs-rest macro
    from 2-D scores whose columns are ``labels`` (as sklearn's ``roc_auc_score(multi_class="ovr")``)."""
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    values = []
    for positive, column in binary_problems(y, s, pos_label, labels):
        levels, inv = np.unique(column, return_inverse=True)
        counts = np.bincount(positive * len(levels) + inv, minlength=2 * len(levels)).reshape(2, len(levels))
        values.append(float(auc_from_counts(counts[0], counts[1])))
    return float(np.mean(values))


def binary_problems(y: npt.NDArray[Any], scores: npt.NDArray[np.float64], pos_label: Any | None,
                    labels: Sequence[Any] | None) -> list[tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]]:
    """(is-positive as 0/1, scores) per one-vs-rest problem."""
    if scores.ndim == 1:
        if pos_label is None:
            seen = unique_inverse(y)[0]
            if len(seen) != 2:
                raise ValueError(f"roc_auc from 1-D scores needs two classes or pos_label; got {len(seen)} classes")
            pos_label = seen[1]
        return [((y == pos_label).astype(np.intp), scores)]
    if labels is None or len(labels) != scores.shape[1]:
        raise ValueError("roc_auc from 2-D scores needs labels naming each score column")
    return [((y == label).astype(np.intp), scores[:, k]) for k, label in enumerate(labels)]


def regression_score(metric: str, y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    """mae, rmse or r2 (r2 is NaN when the true values are constant: undefined, rather than sklearn's 0 or 1)."""
    y = np.asarray(y_true, dtype=np.float64)
    err = np.asarray(y_pred, dtype=np.float64) - y
    if len(y) == 0:
        return float("nan")
    if metric == "mae":
        return float(np.abs(err).mean())
    if metric == "rmse":
        return float(np.sqrt((err * err).mean()))
    if metric == "r2":
        sst = float(((y - y.mean()) ** 2).sum())
        return 1.0 - float((err * err).sum()) / sst if sst > 0 else float("nan")
    raise ValueError(f"{metric} is not a regression metric")


def score(metric: str, y_true: npt.ArrayLike, y_pred: npt.ArrayLike, *, pos_label: Any | None = None,
          labels: Sequence[Any] | None = None) -> float:
    """The metric of predictions (scores for roc_auc) against the true values."""
    check_metric(metric)
    if metric in REGRESSION_METRICS:
        return regression_score(metric, y_true, y_pred)
    if metric == "roc_auc":
        return roc_auc(y_true, y_pred, pos_label, labels)
    if len(np.asarray(y_true)) == 0:
        return float("nan")
    return classification_score(metric, y_true, y_pred, pos_label)
