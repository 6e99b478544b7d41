"""Held-out metrics of a fitted pipeline, and the scorer a search optimises."""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from kultivar.api.trainingrun import CLASSIFICATION_METRICS, REGRESSION_METRICS, TrainingRunSpec
from kultivar.domain.stats.metrics import classification_score, from_confusion
from kultivar.workloads.failure import TrainingFailure
from kultivar.workloads.pipeline import transform_inputs

log = logging.getLogger("kultivar.workloads")


def headline_metric(spec: TrainingRunSpec, task: str) -> str:
    metric = spec.evaluation.metric or ("accuracy" if task == "classification" else "r2")
    allowed = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    if metric not in allowed:
        raise TrainingFailure("InvalidParameters",
                              f"spec.evaluation.metric {metric} does not apply to {task}; use one of "
                              f"{', '.join(allowed)}")
    return metric


def scorer(metric: str, classes: Sequence[Any]) -> Any:
    from sklearn.metrics import f1_score, make_scorer, precision_score, recall_score

    binary = len(classes) == 2
    fn = {"f1": f1_score, "precision": precision_score, "recall": recall_score}.get(metric)
    if fn is not None:
        if binary:
            return make_scorer(fn, pos_label=classes[1], zero_division=0)
        return make_scorer(fn, average="macro", zero_division=0)
    return {
        "accuracy": "accuracy", "roc_auc": "roc_auc" if binary else "roc_auc_ovr", "r2": "r2",
        "rmse": "neg_root_mean_squared_error", "mae": "neg_mean_absolute_error",
    }[metric]


@dataclass(frozen=True)
class Predictions:
    """A model's predictions on the held-out rows: labels or values, and class probabilities (columns in the order
    of ``classes``; None without predict_proba or for regression)."""

    pred: np.ndarray
    proba: np.ndarray | None = None
    classes: tuple[Any, ...] = ()


def evaluate(model: Any, x_test: pd.DataFrame, y_test: Any, task: str, few_values: Collection[str] = ()
             ) -> dict[str, float]:
    """Held-out metrics of a fitted pipeline; ``few_values`` names inputs with few distinct values (see
    :func:`transform_inputs`)."""
    return evaluate_predictions(model, x_test, y_test, task, few_values)[0]


def evaluate_predictions(model: Any, x_test: pd.DataFrame, y_test: Any, task: str, few_values: Collection[str] = ()
                         ) -> tuple[dict[str, float], Predictions]:
    """The held-out metrics of a fitted pipeline and the predictions they were computed from."""
    predictions = predict_held_out(model, x_test, task, few_values)
    return metrics_of(y_test, predictions, task), predictions


def predict_held_out(model: Any, x_test: pd.DataFrame, task: str, few_values: Collection[str] = ()) -> Predictions:
    """A fitted pipeline's predictions (and class probabilities) on the held-out rows."""
    # Preprocess the held-out rows once and reuse them for predict and predict_proba: exactly what
    # Pipeline.predict/predict_proba do, without repeating the imputation and one-hot encoding.
    features = transform_inputs(model[:-1], x_test, few_values)
    final = model[-1]
    if task == "regression":
        return Predictions(np.asarray(final.predict(features)))
    classes = tuple(model.classes_)
    # predict and predict_proba are two independent chains of mostly numpy work, so they run side by side.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="proba") as pool:
        proba = pool.submit(_proba, final, features) if hasattr(final, "predict_proba") else None
        pred = np.asarray(final.predict(features))
        return Predictions(pred, proba.result() if proba is not None else None, classes)


def metrics_of(y_test: Any, predictions: Predictions, task: str) -> dict[str, float]:
    """Every metric of the task for these predictions (ROC AUC only with probabilities); undefined ones left out."""
    from sklearn import metrics as m

    pred = predictions.pred
    out: dict[str, float] = {}
    if task == "regression":
        out["r2"] = float(m.r2_score(y_test, pred)) if len(y_test) > 1 else math.nan
        out["rmse"] = float(math.sqrt(m.mean_squared_error(y_test, pred)))
        out["mae"] = float(m.mean_absolute_error(y_test, pred))
        return {k: v for k, v in out.items() if math.isfinite(v)}
    classes = list(predictions.classes)
    binary = len(classes) == 2
    truth, predicted = label_codes(y_test, classes), label_codes(pred, classes)
    if truth is not None and predicted is not None:
        out.update(count_metrics(truth, predicted, len(classes)))
    else:
        # A true label the model does not know: a class only the held-out split (or a holdout Dataset) has. It is
        # a miss wherever it occurs; two known classes are still scored as binary for the second one, with the
        # unknown label on the negative side (sklearn's "binary" average refuses a third label outright).
        pos_label = classes[1] if binary else None
        for name in ("accuracy", "f1", "precision", "recall"):
            out[name] = classification_score(name, y_test, pred, pos_label)
    if predictions.proba is not None:
        auc = _roc_auc(predictions.proba, y_test, classes)
        if auc is not None:
            out["roc_auc"] = auc
    return {k: v for k, v in out.items() if math.isfinite(v)}


def label_codes(values: Any, classes: Sequence[Any]) -> np.ndarray | None:
    """Each value's position in ``classes``, or None when a value is not among them. Numbers are looked up in
    sorted classes (as a fitted estimator's ``classes_`` are) by bisection, anything else by hashing; neither
    sorts the values."""
    found = np.asarray(values)
    known = np.asarray(list(classes))
    if (found.dtype.kind in "iufb" and known.dtype.kind in "iufb" and known.size
            and bool(np.all(known[:-1] < known[1:]))):
        positions = np.minimum(np.searchsorted(known, found), known.size - 1)
        return positions.astype(np.intp) if bool(np.all(known[positions] == found)) else None
    codes = pd.Index(list(classes)).get_indexer(found)
    return None if (codes < 0).any() else codes.astype(np.intp)


def count_metrics(truth: np.ndarray, predicted: np.ndarray, k: int) -> dict[str, float]:
    """Accuracy, F1, precision and recall of class positions in ``range(k)``, from one confusion count.

    sklearn's conventions (``precision_recall_fscore_support(zero_division=0)``; the unit tests compare them):
    two classes are scored as "binary" for the second class, more as the "macro" mean over the classes seen in
    the true or predicted values. Counting positions takes linear time; sklearn sorts the labels for every call,
    which was most of the evaluation time of a large held-out split.
    """
    actual = np.bincount(truth, minlength=k)
    guessed = np.bincount(predicted, minlength=k)
    hits = np.bincount(truth[truth == predicted], minlength=k)
    average = [1] if k == 2 else np.flatnonzero(actual + guessed)
    return {name: float(from_confusion(name, hits, guessed, actual, average))
            for name in ("accuracy", "f1", "precision", "recall")}


def _proba(final: Any, features: Any) -> np.ndarray | None:
    try:
        return np.asarray(final.predict_proba(features))
    except (AttributeError, ValueError) as e:  # e.g. SVC without probability=True
        log.info("no class probabilities: %s", e)
        return None


def binary_roc_auc(positive: np.ndarray, score: np.ndarray) -> float | None:
    """``roc_auc_score(positive, score)`` for a boolean truth, None when it is undefined (a single class).

    The same computation (the area under ``roc_curve``) without roc_auc_score's repeated checks and binarising of
    the labels, which take a third of its time on a large held-out split.
    """
    from sklearn import metrics as m

    if positive.all() or not positive.any():
        return None
    fpr, tpr, _ = m.roc_curve(positive, score)
    return float(m.auc(fpr, tpr))


def _roc_auc(proba: np.ndarray, y_test: Any, classes: list[Any]) -> float | None:
    from sklearn import metrics as m

    try:
        if len(classes) == 2:
            return binary_roc_auc(np.asarray(y_test) == classes[1], proba[:, 1])
        return float(m.roc_auc_score(y_test, proba, multi_class="ovr", labels=classes))
    except ValueError as e:  # e.g. a class missing from the held-out split
        log.info("roc_auc not computed: %s", e)
        return None
