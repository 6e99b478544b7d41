"""A paired bootstrap interval for metric(a) - metric(b) when two models are scored on the same held-out rows.

Why paired: both models predict the same rows, so their errors are correlated (the hard rows are hard for both).
Resampling rows and recomputing both metrics on each resample keeps that correlation, and the interval of the
difference is much narrower than one built from two independent intervals. Method: the nonparametric bootstrap
with the percentile interval (Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 6 and 13), the
same as ``scipy.stats.bootstrap(..., paired=True, method="percentile")``.

How it is drawn. For accuracy, precision, recall and F1 the statistic depends only on how many times each
distinct (true, a, b) triple is drawn, and under uniform resampling of n rows those counts are exactly
Multinomial(n, observed triple proportions): drawing the counts directly is the same bootstrap distribution at a
cost independent of n. For MAE, RMSE, R2 and ROC AUC, row indices are drawn (blocks of resamples, bounded memory).
:func:`bootstrap_differences` evaluates the same statistic for given index rows, so it can be checked against a
direct per-resample computation.

Sign convention: the difference is always metric(a) - metric(b) in the metric's units. For error metrics (mae,
rmse) a NEGATIVE difference means a is better; :attr:`BootstrapInterval.a_better` reads it either way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import sparse

from kultivar.domain.stats.metrics import (
    COUNT_METRICS,
    REGRESSION_METRICS,
    auc_from_counts,
    averaged_labels,
    binary_problems,
    check_metric,
    encode_labels,
    from_confusion,
    higher_is_better,
    score,
    unique_inverse,
)

METHOD = "percentile paired bootstrap"
_BLOCK_ELEMENTS = 1 << 23  # resamples x rows held in memory at once (64 MiB of indices)

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class BootstrapInterval:
    """The difference metric(a) - metric(b) on the same rows and its bootstrap confidence interval."""

    metric: str
    value_a: float
    value_b: float
    estimate: float  # value_a - value_b on all rows
    low: float
    high: float
    confidence: float
    n_rows: int
    n_resamples: int
    seed: int
    method: str = METHOD

    @property
    def a_better(self) -> bool:
        """Whether a beats b significantly: the whole interval lies on a's better side of zero."""
        return self.low > 0 if higher_is_better(self.metric) else self.high < 0

    def wire(self) -> dict[str, Any]:
        return asdict(self)


def bootstrap_indices(n_rows: int, n_resamples: int, seed: int) -> Iterator[npt.NDArray[np.intp]]:
    """Row indices of each resample, in blocks of shape (resamples, n_rows); the same for the same arguments."""
    rng = np.random.default_rng(seed)
    per_block = max(1, _BLOCK_ELEMENTS // max(n_rows, 1))
    for start in range(0, n_resamples, per_block):
        yield rng.integers(0, n_rows, size=(min(per_block, n_resamples - start), n_rows), dtype=np.intp)


def paired_bootstrap_difference(y_true: npt.ArrayLike, pred_a: npt.ArrayLike, pred_b: npt.ArrayLike, metric: str,
                                *, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0,
                                pos_label: Any | None = None, labels: Sequence[Any] | None = None
                                ) -> BootstrapInterval:
    """Percentile paired-bootstrap interval of metric(a) - metric(b) over the rows (reproducible for a seed).

    ``pred_a``/``pred_b`` are predicted labels or values, or scores for roc_auc (1-D for ``pos_label``, 2-D with
    columns ``labels`` for one-vs-rest). ``pos_label`` makes precision/recall/F1 binary; otherwise they are macro
    averages over the labels seen in the true values or that model's predictions. Resamples on which the metric is
    undefined (e.g. R2 with constant true values) are left out of the quantiles.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    stat = _statistic(y_true, pred_a, pred_b, metric, pos_label, labels)
    value_a = score(metric, y_true, pred_a, pos_label=pos_label, labels=labels)
    value_b = score(metric, y_true, pred_b, pos_label=pos_label, labels=labels)
    if isinstance(stat, _CountDifference):
        diffs = stat.draw(n_resamples, seed)
    else:
        diffs = np.concatenate([stat.from_indices(idx) for idx in bootstrap_indices(stat.n, n_resamples, seed)])
    tail = (1 - confidence) / 2
    finite = diffs[np.isfinite(diffs)]
    low, high = (float(q) for q in np.quantile(finite, [tail, 1 - tail])) if finite.size else (np.nan, np.nan)
    return BootstrapInterval(metric=metric, value_a=value_a, value_b=value_b, estimate=value_a - value_b,
                             low=low, high=high, confidence=confidence, n_rows=stat.n, n_resamples=n_resamples,
                             seed=seed)


def bootstrap_differences(y_true: npt.ArrayLike, pred_a: npt.ArrayLike, pred_b: npt.ArrayLike, metric: str,
                          indices: npt.ArrayLike, *, pos_label: Any | None = None,
                          labels: Sequence[Any] | None = None) -> FloatArray:
    """metric(a) - metric(b) on each resample given by a row of ``indices`` (shape (resamples, n_rows)).

    Label sets for averaging are those of all rows, so every resample averages over the same labels.
    """
    stat = _statistic(y_true, pred_a, pred_b, metric, pos_label, labels)
    return stat.from_indices(np.atleast_2d(np.asarray(indices, dtype=np.intp)))


def _statistic(y_true: npt.ArrayLike, pred_a: npt.ArrayLike, pred_b: npt.ArrayLike, metric: str,
               pos_label: Any | None, labels: Sequence[Any] | None
               ) -> _CountDifference | _RegressionDifference | _AucDifference:
    check_metric(metric)
    y, a, b = np.asarray(y_true), np.asarray(pred_a), np.asarray(pred_b)
    if not len(y) == len(a) == len(b):
        raise ValueError(f"y_true, pred_a and pred_b need the same rows; got {len(y)}, {len(a)} and {len(b)}")
    if len(y) == 0:
        raise ValueError("no rows to compare on")
    if metric in COUNT_METRICS:
        return _CountDifference(metric, y, a, b, pos_label)
    if metric in REGRESSION_METRICS:
        return _RegressionDifference(metric, y, a, b)
    return _AucDifference(y, a, b, pos_label, labels)


def _rows_per_block(width: int) -> int:
    return max(1, _BLOCK_ELEMENTS // max(width, 1))


def _counts_per_resample(cells: npt.NDArray[np.intp], n_cells: int, idx: npt.NDArray[np.intp]
                         ) -> npt.NDArray[np.int64]:
    """How often each cell (a per-row category) is drawn in each resample: shape (resamples, n_cells)."""
    k = idx.shape[0]
    flat = (np.arange(k, dtype=np.intp)[:, None] * n_cells + cells[idx]).ravel()
    return np.bincount(flat, minlength=k * n_cells).reshape(k, n_cells)


class _CountDifference:
    """Accuracy/precision/recall/F1 difference from counts of distinct (true, a, b) triples."""

    def __init__(self, metric: str, y: npt.NDArray[Any], a: npt.NDArray[Any], b: npt.NDArray[Any],
                 pos_label: Any | None) -> None:
        labels, (t, pa, pb) = encode_labels(y, a, b)
        k = len(labels)
        triples, cells, counts = unique_inverse((t * k + pa) * k + pb)
        self.cells = cells.astype(np.intp)  # each row's triple
        self.metric, self.n, self.proportions = metric, len(y), counts / len(y)
        ct, ca, cb = triples // (k * k), (triples // k) % k, triples % k

        def one_hot(positions: npt.NDArray[Any], keep: npt.NDArray[np.bool_] | None = None) -> sparse.csr_array:
            data = np.ones(len(positions)) if keep is None else keep.astype(np.float64)
            return sparse.csr_array((data, (np.arange(len(positions)), positions)), shape=(len(positions), k))

        self.actual = one_hot(ct)
        self.predicted = (one_hot(ca), one_hot(cb))
        self.hits = (one_hot(ca, ct == ca), one_hot(cb, ct == cb))
        self.average = (averaged_labels(labels, np.concatenate([t, pa]), pos_label),
                        averaged_labels(labels, np.concatenate([t, pb]), pos_label))

    def from_counts(self, m: npt.NDArray[Any]) -> FloatArray:
        m = np.asarray(m, dtype=np.float64)
        actual = m @ self.actual
        a, b = (from_confusion(self.metric, m @ hits, m @ predicted, actual, average)
                for hits, predicted, average in zip(self.hits, self.predicted, self.average, strict=True))
        return np.asarray(a - b, dtype=np.float64)

    def from_indices(self, idx: npt.NDArray[np.intp]) -> FloatArray:
        return self.from_counts(_counts_per_resample(self.cells, len(self.proportions), idx))

    def draw(self, n_resamples: int, seed: int) -> FloatArray:
        rng = np.random.default_rng(seed)
        step = _rows_per_block(len(self.proportions))
        return np.concatenate([
            self.from_counts(rng.multinomial(self.n, self.proportions, size=min(step, n_resamples - start)))
            for start in range(0, n_resamples, step)])


class _RegressionDifference:
    """MAE/RMSE/R2 difference from per-row errors gathered by index."""

    def __init__(self, metric: str, y: npt.NDArray[Any], a: npt.NDArray[Any], b: npt.NDArray[Any]) -> None:
        self.metric, self.n = metric, len(y)
        self.y = y.astype(np.float64)
        err_a, err_b = a.astype(np.float64) - self.y, b.astype(np.float64) - self.y
        self.abs_diff = np.abs(err_a) - np.abs(err_b)  # MAE(a) - MAE(b) is its mean: one gather
        self.sq_a, self.sq_b = err_a * err_a, err_b * err_b

    def from_indices(self, idx: npt.NDArray[np.intp]) -> FloatArray:
        if self.metric == "mae":
            return np.asarray(self.abs_diff[idx].mean(axis=1), dtype=np.float64)
        if self.metric == "rmse":
            return np.asarray(np.sqrt(self.sq_a[idx].mean(axis=1)) - np.sqrt(self.sq_b[idx].mean(axis=1)),
                              dtype=np.float64)
        sst = self.y[idx].var(axis=1) * idx.shape[1]
        sse_diff = self.sq_b[idx].sum(axis=1) - self.sq_a[idx].sum(axis=1)  # R2(a) - R2(b) = (SSE_b - SSE_a)/SST
        out = np.full(idx.shape[0], np.nan)
        np.divide(sse_diff, sst, out=out, where=sst > 0)
        return out


class _AucDifference:
    """ROC AUC difference (binary, or one-vs-rest macro) from per-resample counts per score level."""

    def __init__(self, y: npt.NDArray[Any], a: npt.NDArray[Any], b: npt.NDArray[Any], pos_label: Any | None,
                 labels: Sequence[Any] | None) -> None:
        self.n = len(y)
        self.models = [self._problems(y, np.asarray(s, dtype=np.float64), pos_label, labels) for s in (a, b)]

    @staticmethod
    def _problems(y: npt.NDArray[Any], scores: FloatArray, pos_label: Any | None, labels: Sequence[Any] | None
                  ) -> list[tuple[npt.NDArray[np.intp], int]]:
        """Per one-vs-rest problem: each row's cell (is-positive * levels + score level) and the number of levels."""
        out = []
        for positive, column in binary_problems(y, scores, pos_label, labels):
            levels, inverse = np.unique(column, return_inverse=True)
            out.append(((positive * len(levels) + inverse).astype(np.intp), len(levels)))
        return out

    def from_indices(self, idx: npt.NDArray[np.intp]) -> FloatArray:
        a, b = (np.mean([self._auc(cells, n, idx) for cells, n in problems], axis=0) for problems in self.models)
        return np.asarray(a - b, dtype=np.float64)

    @staticmethod
    def _auc(cells: npt.NDArray[np.intp], n_levels: int, idx: npt.NDArray[np.intp]) -> FloatArray:
        # One resample at a time: its counts (2 x levels) stay in cache, unlike one bincount over the whole block.
        out = np.empty(idx.shape[0])
        for r, rows in enumerate(idx):
            counts = np.bincount(cells[rows], minlength=2 * n_levels).astype(np.float64)
            out[r] = auc_from_counts(counts[:n_levels], counts[n_levels:])
        return out
