"""Held-out metrics of a fitted pipeline, and the scorer a search optimises."""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from kultivar.api.trainingrun import CLASSIFICATION_METRICS, REGRESSION_METRICS, TrainingRunSpec
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


def evaluate(model: Any, x_test: pd.DataFrame, y_test: Any, task: str, few_values: Collection[str] = ()
             ) -> dict[str, float]:
    """Held-out metrics of a fitted pipeline; ``few_values`` names inputs with few distinct values (see
    :func:`transform_inputs`)."""
    from sklearn import metrics as m

    # Preprocess the held-out rows once and reuse them for predict and predict_proba: exactly what
    # Pipeline.predict/predict_proba do, without repeating the imputation and one-hot encoding.
    features = transform_inputs(model[:-1], x_test, few_values)
    final = model[-1]
    out: dict[str, float] = {}
    if task == "regression":
        pred = final.predict(features)
        out["r2"] = float(m.r2_score(y_test, pred))
        out["rmse"] = float(math.sqrt(m.mean_squared_error(y_test, pred)))
        out["mae"] = float(m.mean_absolute_error(y_test, pred))
        return {k: v for k, v in out.items() if math.isfinite(v)}
    classes = list(model.classes_)
    binary = len(classes) == 2
    avg: dict[str, Any] = {"average": "binary", "pos_label": classes[1]} if binary else {"average": "macro"}
    # ROC AUC needs predict_proba, the other metrics need predict: two independent chains of mostly numpy work
    # (sorting, counting), so they run side by side.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="roc-auc") as pool:
        roc_auc = pool.submit(_roc_auc, final, features, y_test, classes) if hasattr(final, "predict_proba") else None
        pred = final.predict(features)
        out["accuracy"] = float(m.accuracy_score(y_test, pred))
        # One pass over the confusion matrix for all three (each *_score call would redo it).
        precision, recall, f1, _ = m.precision_recall_fscore_support(y_test, pred, zero_division=0, **avg)
        out["f1"], out["precision"], out["recall"] = float(f1), float(precision), float(recall)
        auc = roc_auc.result() if roc_auc is not None else None
    if auc is not None:
        out["roc_auc"] = auc
    return {k: v for k, v in out.items() if math.isfinite(v)}


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


def _roc_auc(final: Any, features: Any, y_test: Any, classes: list[Any]) -> float | None:
    from sklearn import metrics as m

    try:
        proba = final.predict_proba(features)
        if len(classes) == 2:
            return binary_roc_auc(y_test == classes[1], proba[:, 1])
        return float(m.roc_auc_score(y_test, proba, multi_class="ovr", labels=classes))
    except ValueError as e:  # e.g. a class missing from the held-out split
        log.info("roc_auc not computed: %s", e)
        return None
