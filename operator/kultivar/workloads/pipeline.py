"""The model's pipeline: preprocessing by feature type, then the estimator; and a fast path to transform inputs.

The saved model is a ``sklearn.pipeline.Pipeline`` taking a DataFrame with one column per feature, as the
manifest lists them: numeric features as float64, boolean features as float64 (1.0 true, 0.0 false), categorical
features as text with NaN for missing values. Its steps are ``preprocess`` (a ColumnTransformer) and ``model``
(the estimator); search spaces name the estimator's parameters and are prefixed with ``model__``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import pandas as pd

from kultivar.api.dataset import Feature

STEP = "model"


def build_pipeline(features: Sequence[Feature], estimator: Any) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [f.name for f in features if f.type == "numeric"]
    categorical = [f.name for f in features if f.type != "numeric"]
    transformers = []
    if numeric:
        numeric_steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median"))]
        if not splits_on_thresholds(estimator):
            numeric_steps.append(("scale", StandardScaler()))
        transformers.append(("numeric", Pipeline(numeric_steps), numeric))
    if categorical:
        transformers.append(("categorical", Pipeline([
            ("impute", SimpleImputer(strategy="most_frequent")),
            ("onehot", OneHotEncoder(handle_unknown="ignore")),
        ]), categorical))
    # Dense output: several estimators (e.g. HistGradientBoosting*) refuse sparse input.
    preprocess = ColumnTransformer(transformers, sparse_threshold=0.0)
    return Pipeline([("preprocess", preprocess), (STEP, estimator)])


# Estimators that split on feature thresholds, which scaling does not change, by the module of their class.
TREE_MODULES = ("sklearn.tree", "sklearn.ensemble._forest", "sklearn.ensemble._gb",
                "sklearn.ensemble._hist_gradient_boosting", "xgboost", "lightgbm")


def splits_on_thresholds(estimator: Any) -> bool:
    """Whether ``estimator`` is a tree or an ensemble of trees: such models are not scaled. Scaling cannot change
    their splits, and it would make the compiled model answer differently: the graph scales in float32 where
    scikit-learn scales in float64, so a value lying on a split threshold - as training values do for XGBoost,
    whose thresholds are data values - can land on the other side of it (seen on a third of the rows of data with
    integer-valued features)."""
    module = type(estimator).__module__
    return any(module == m or module.startswith(m + ".") for m in TREE_MODULES)


def _row_wise(transformer: Any) -> bool:
    """Whether a fitted transformer maps each row on its own (so equal rows give equal outputs)."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    if isinstance(transformer, Pipeline):
        return all(step == "passthrough" or _row_wise(step) for _, step in transformer.steps)
    return type(transformer) in (SimpleImputer, OneHotEncoder, StandardScaler)


def _distinct_rows(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray] | None:
    """One row index per distinct row of ``frame`` and, per row, the position of its distinct row; None when
    the columns take too many value combinations for that to pay off."""
    keys = np.zeros(len(frame), dtype=np.int64)
    span = 1
    for name in frame.columns:
        values = frame[name].to_numpy()
        if values.dtype == np.float64:
            values = values.view(np.int64)  # bit patterns: -0.0 and 0.0 stay apart, as any exact comparison would
        elif values.dtype != object:
            return None
        codes, uniques = pd.factorize(values, use_na_sentinel=True)  # NaN (the only missing value here) is -1
        span *= len(uniques) + 1
        if span > max(len(frame) // 8, 1):
            return None
        keys = keys * (len(uniques) + 1) + (codes + 1)
    slots = np.full(span, -1, dtype=np.int64)
    slots[keys] = np.arange(len(keys))  # a representative row of each key
    present = np.flatnonzero(slots >= 0)
    position = np.empty(span, dtype=np.int64)
    position[present] = np.arange(len(present))
    return slots[present], position[keys]


def transform_inputs(preprocess: Any, x: pd.DataFrame, few_values: Collection[str] = ()) -> Any:
    """``preprocess.transform(x)`` for the ``preprocess`` step of a pipeline from :func:`build_pipeline`.

    The same result, computed faster: a transformer whose columns are all in ``few_values`` (categorical
    features as text with NaN for missing, boolean features as floats) takes only a few distinct rows, so it
    transforms those once each and the result is gathered back to every row. It maps each row on its own (an
    imputer, a one-hot encoder), so that is exactly what transforming every row gives, without scikit-learn's
    per-value Python work on object columns. Anything else is transformed as usual.
    """
    from scipy import sparse
    from sklearn.compose import ColumnTransformer

    few = set(few_values)
    ct = preprocess
    while hasattr(ct, "steps") and len(ct.steps) == 1:
        ct = ct.steps[0][1]
    if not few or not isinstance(ct, ColumnTransformer) or ct.sparse_output_:
        return preprocess.transform(x)
    parts = []
    for _, transformer, columns in ct.transformers_:
        if isinstance(transformer, str) and transformer == "drop":
            continue
        if isinstance(transformer, str) or not isinstance(columns, list) \
                or not all(isinstance(c, str) for c in columns):
            return preprocess.transform(x)
        if not columns:
            continue
        inputs = x[columns]
        distinct = _distinct_rows(inputs) if set(columns) <= few and _row_wise(transformer) else None
        if distinct is None:
            part = transformer.transform(inputs)
        else:
            rows, position = distinct
            part = transformer.transform(inputs.iloc[rows])[position]
        if sparse.issparse(part):
            part = part.toarray()
        if not isinstance(part, np.ndarray):  # e.g. pandas output configured with set_output
            return preprocess.transform(x)
        parts.append(part)
    return np.hstack(parts)
