"""What a version's held-out predictions look like beyond its metrics: the confusion matrix of a classifier, the
residual histogram of a regressor. Recorded in ``status.versions[].evaluation`` and drawn by the report.

The confusion matrix is sklearn.metrics.confusion_matrix's (rows the actual class, columns the predicted one),
counted here in one pass of integer codes (numpy.bincount) rather than through sklearn, which re-derives the labels
from the values (a sort of every row's label) on every call; the tests check it against sklearn. The residual
histogram is numpy.histogram of actual - predicted with a fixed number of bins.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd

from kultivar.api.contracts import ConfusionMatrixResult, ResidualHistogramResult
from kultivar.api.trainingrun import CONFUSION_MATRIX_MAX_CLASSES, RESIDUAL_BINS

EDGE_DIGITS = 6  # significant digits of the stored bin edges: the termination message has room for 21 of them


def label_text(label: Any) -> str:
    """A class as the record shows it: the label's own value as text (numpy scalars as their Python value)."""
    return str(label.item() if isinstance(label, np.generic) else label)


def confusion_labels(y_true: Any, y_pred: Any, classes: Sequence[Any]) -> list[Any]:
    """The rows and columns: the model's classes in its order, then any other actual or predicted label (a
    holdout Dataset may hold a class the training rows did not), sorted as text, so that every row is counted."""
    known = list(classes)
    seen = set(known)
    extra = [v for v in pd.unique(np.concatenate([np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)]))
             if v not in seen]
    return known + sorted(extra, key=label_text)


def confusion(y_true: Any, y_pred: Any, classes: Sequence[Any]) -> tuple[list[Any], np.ndarray]:
    """The labels and the matrix: counts[i, j] rows of labels[i] predicted as labels[j]."""
    labels = confusion_labels(y_true, y_pred, classes)
    k = len(labels)
    index = pd.Index(labels, dtype=object)
    actual = index.get_indexer(pd.Index(np.asarray(y_true, dtype=object)))
    predicted = index.get_indexer(pd.Index(np.asarray(y_pred, dtype=object)))
    counts = np.bincount(actual * k + predicted, minlength=k * k).reshape(k, k)
    return labels, counts


def confusion_matrix(y_true: Any, y_pred: Any, classes: Sequence[Any], *, positions: bool = False
                     ) -> tuple[ConfusionMatrixResult | None, str | None]:
    """The record's confusion matrix, or None and the note saying why it is left out (too many classes).
    ``positions``: the values are already positions in ``classes`` (every label is one of them)."""
    if positions:
        labels, k = list(classes), len(classes)
        counts = np.bincount(np.asarray(y_true) * k + np.asarray(y_pred), minlength=k * k).reshape(k, k)
    else:
        labels, counts = confusion(y_true, y_pred, classes)
    if len(labels) > CONFUSION_MATRIX_MAX_CLASSES:
        return None, (f"confusion matrix: {len(labels)} classes, more than the {CONFUSION_MATRIX_MAX_CLASSES} a "
                      "version records")
    return ConfusionMatrixResult(labels=[label_text(v) for v in labels], counts=counts.tolist()), None


def residual_histogram(y_true: Any, y_pred: Any, bins: int = RESIDUAL_BINS
                       ) -> tuple[ResidualHistogramResult | None, str | None]:
    """numpy.histogram of actual - predicted in ``bins`` equal bins over their range (non-finite ones left out)."""
    residuals = np.asarray(y_true, dtype=float) - np.asarray(y_pred, dtype=float)
    finite = residuals[np.isfinite(residuals)]
    if finite.size == 0:
        return None, "residual histogram: no finite residual on the held-out rows"
    counts, edges = np.histogram(finite, bins=bins)
    shown = [float(f"{e:.{EDGE_DIGITS}g}") for e in edges]
    if any(b <= a for a, b in pairwise(shown)):  # bins narrower than the digits: keep all
        shown = [float(e) for e in edges]
    return ResidualHistogramResult(edges=shown, counts=counts.tolist()), None
