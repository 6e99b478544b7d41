"""Metrics per segment (each value of a categorical feature) and the gate's per-segment regression check."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from kultivar.domain.stats.metrics import (
    COUNT_METRICS,
    encode_labels,
    from_confusion,
    improvement,
    score,
    unique_inverse,
)


@dataclass(frozen=True)
class SegmentMetric:
    """One model's metric on the rows where ``feature`` equals ``value`` (NaN when undefined on those rows)."""

    feature: str
    value: str
    rows: int
    metric: str
    score: float

    def wire(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SegmentRegression:
    """A segment where the candidate is worse than production by more than the margin."""

    feature: str
    value: str
    rows: int
    metric: str
    candidate: float
    production: float

    @property
    def shortfall(self) -> float:
        """How much worse the candidate is, in the metric's units (positive)."""
        return -improvement(self.metric, self.candidate, self.production)

    @property
    def message(self) -> str:
        return (f"segment {self.feature}={self.value} ({self.rows} rows): {self.metric} {self.candidate:.4g} "
                f"vs production {self.production:.4g}")


def segment_metrics(y_true: npt.ArrayLike, y_pred: npt.ArrayLike, segments: Mapping[str, npt.ArrayLike],
                    metric: str, *, pos_label: Any | None = None, labels: Sequence[Any] | None = None
                    ) -> list[SegmentMetric]:
    """The metric per value of each segment feature, sorted by feature then value.

    Values are grouped by their string form (so a missing value is one segment, "nan" or "None"); integer codes
    (e.g. from ``pandas.factorize``) are grouped by value, in numeric order. Averaging and
    label arguments are those of :func:`kultivar.domain.stats.metrics.score`.
    """
    y, pred = np.asarray(y_true), np.asarray(y_pred)
    # Count metrics of integer labels (class positions): one count of (segment, true, predicted) per feature.
    counted = metric in COUNT_METRICS and y.dtype.kind in "iub" and pred.dtype.kind in "iub"
    out: list[SegmentMetric] = []
    for feature in sorted(segments):
        raw = np.asarray(segments[feature])
        # Integer codes group as they are (sorting numbers is far faster than sorting their text); the rest by text.
        column = raw if raw.dtype.kind in "iu" else raw.astype(str)
        if len(column) != len(y):
            raise ValueError(f"segment feature {feature} has {len(column)} rows, the predictions {len(y)}")
        values, inverse, sizes = unique_inverse(column)
        if counted:
            scores = _count_scores(metric, y, pred, inverse, len(values), pos_label)
        else:
            scores = [_safe_score(metric, y[inverse == i], pred[inverse == i], pos_label, labels)
                      for i in range(len(values))]
        out.extend(SegmentMetric(feature, str(value), int(size), metric, value_score)
                   for value, size, value_score in zip(values, sizes, scores, strict=True))
    return out


def _count_scores(metric: str, y: npt.NDArray[Any], pred: npt.NDArray[Any], segment: npt.NDArray[np.intp],
                  n_segments: int, pos_label: Any | None) -> list[float]:
    """The count metric of each segment, as :func:`score` of its rows gives it, from one count of (segment, true,
    predicted) cells: a "binary" F1, precision or recall is undefined (NaN) in a segment where ``pos_label`` is
    neither true nor predicted, "macro" averages over the labels seen in the segment."""
    labels, (t, p) = encode_labels(y, pred)
    k = len(labels)
    cells = np.bincount((segment * k + t) * k + p, minlength=n_segments * k * k).reshape(n_segments, k, k)
    actual, predicted = cells.sum(axis=2), cells.sum(axis=1)
    hits = cells[:, np.arange(k), np.arange(k)]
    positive = np.flatnonzero(labels == pos_label) if pos_label is not None else None
    scores = []
    for s in range(n_segments):
        seen = np.flatnonzero(actual[s] + predicted[s])
        if positive is None or metric == "accuracy":
            average = seen
        elif positive.size and np.isin(positive, seen).all():
            average = positive
        else:
            scores.append(float("nan"))
            continue
        scores.append(float(from_confusion(metric, hits[s], predicted[s], actual[s], average)))
    return scores


def _safe_score(metric: str, y: npt.NDArray[Any], pred: npt.NDArray[Any], pos_label: Any | None,
                labels: Sequence[Any] | None) -> float:
    try:
        return score(metric, y, pred, pos_label=pos_label, labels=labels)
    except ValueError:  # e.g. roc_auc on a segment with one class (or without pos_label among its labels)
        return float("nan")


def worst_segment_regression(candidate: Iterable[SegmentMetric], production: Iterable[SegmentMetric],
                             margin: float, min_rows: int) -> list[SegmentRegression]:
    """Segments (with at least ``min_rows`` rows) where the candidate is worse than production by more than
    ``margin`` (in the metric's units, either direction of better), worst first. Segments with an undefined
    score on either side, or only on one side, are not judged."""
    if margin < 0:
        raise ValueError(f"margin must not be negative, got {margin}")
    prod = {(s.feature, s.value): s for s in production}
    found = []
    for c in candidate:
        p = prod.get((c.feature, c.value))
        if p is None or p.metric != c.metric or min(c.rows, p.rows) < min_rows:
            continue
        if not (math.isfinite(c.score) and math.isfinite(p.score)):
            continue
        shortfall = -improvement(c.metric, c.score, p.score)
        # "More than the margin": a shortfall equal to it up to float rounding (0.8 - 0.7 vs 0.1) is not.
        if shortfall > margin and not math.isclose(shortfall, margin, rel_tol=1e-9, abs_tol=1e-12):
            found.append(SegmentRegression(c.feature, c.value, c.rows, c.metric, c.score, p.score))
    return sorted(found, key=lambda r: (-r.shortfall, r.feature, r.value))

