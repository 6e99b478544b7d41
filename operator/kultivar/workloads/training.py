"""Training: fit a scikit-learn pipeline on a validated dataset snapshot, evaluate it, and save it with skops.

The saved model is a ``sklearn.pipeline.Pipeline`` taking a DataFrame with one column per feature, as the
manifest lists them: numeric features as float64, boolean features as float64 (1.0 true, 0.0 false), categorical
features as text with NaN for missing values. Its steps are ``preprocess`` (a ColumnTransformer) and ``model``
(the estimator); search spaces name the estimator's parameters and are prefixed with ``model__`` here.

Models are stored with ``skops.io`` only, never pickle or joblib: :func:`load_model` checks the file's sha256
before deserialising anything and trusts only types from scikit-learn, numpy and scipy.

Retries: the run's artifacts live under ``run_prefix`` (one per TrainingRun UID). ``manifest.json`` is written
last and marks a finished attempt; a retried pod that finds it returns that attempt's result instead of training
again, and a ``model.skops`` without a manifest is the orphan of a crashed attempt (nothing refers to it, since
the operator learns URIs only from the termination message) and is replaced.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import math
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from difflib import get_close_matches
from typing import Any

import numpy as np
import pandas as pd

from kultivar.api.contracts import (
    DEFAULT_ESTIMATOR_PACKAGES,
    ArtifactRef,
    FailureResult,
    FeatureRef,
    ManifestFeature,
    ModelManifest,
)
from kultivar.api.dataset import Feature
from kultivar.api.trainingrun import CLASSIFICATION_METRICS, REGRESSION_METRICS, TrainingRunSpec
from kultivar.workloads.storage import ArtifactStore, digest_of, run_prefix
from kultivar.workloads.validation import as_features, coerce_frame, digest_canonical, float_values, read_snapshot

log = logging.getLogger("kultivar.workloads")

MODEL_NAME = "model.skops"
MANIFEST_NAME = "manifest.json"
STEP = "model"
TRUSTED_MODULES = ("sklearn", "numpy", "scipy")


class TrainingFailure(Exception):
    """A failure with a CamelCase reason for the TrainingRun's condition."""

    def __init__(self, reason: str, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.reason, self.message, self.retryable = reason, message, retryable


class ModelIntegrityError(Exception):
    """The model file does not have the digest it was registered with."""


class UntrustedModelError(Exception):
    """The model file contains types outside the scikit-learn/numpy/scipy allow-list."""


# ------------------------------------------------------------------------------------------- estimator


def import_estimator(class_name: str, estimator_packages: Sequence[str] = DEFAULT_ESTIMATOR_PACKAGES) -> type:
    """The estimator class named by ``spec.estimator.className``; raises EstimatorImportFailed."""
    module_name, _, attr = class_name.rpartition(".")
    if class_name.split(".", 1)[0] not in estimator_packages:
        raise TrainingFailure(
            "EstimatorImportFailed",
            f"{class_name} is not a scikit-learn estimator: only classes from sklearn.* can be used, because the "
            "model server loads models with skops and trusts only scikit-learn, numpy and scipy types; use e.g. "
            "sklearn.ensemble.RandomForestClassifier",
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise TrainingFailure("EstimatorImportFailed",
                              f"cannot import module {module_name!r} for estimator {class_name}: {e}; check "
                              "spec.estimator.className") from e
    cls = getattr(module, attr, None)
    if cls is None:
        close = get_close_matches(attr, [n for n in dir(module) if not n.startswith("_")], n=3)
        hint = f" (did you mean {', '.join(module_name + '.' + c for c in close)}?)" if close else ""
        raise TrainingFailure("EstimatorImportFailed",
                              f"module {module_name!r} has no class {attr!r}{hint}; check spec.estimator.className")
    from sklearn.base import BaseEstimator

    if not (isinstance(cls, type) and issubclass(cls, BaseEstimator) and hasattr(cls, "fit")):
        raise TrainingFailure("EstimatorImportFailed",
                              f"{class_name} is not a scikit-learn estimator (a class with fit); use e.g. "
                              "sklearn.linear_model.LogisticRegression")
    return cls


def _param_names(cls: type) -> list[str]:
    sig = inspect.signature(cls.__init__)  # type: ignore[misc]
    return [p.name for p in sig.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _check_param_names(cls: type, names: Iterable[str], where: str) -> None:
    valid = _param_names(cls)
    unknown = [n for n in names if n not in valid]
    if unknown:
        hints = []
        for n in unknown:
            close = get_close_matches(n, valid, n=1)
            hints.append(f"{n!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise TrainingFailure("InvalidParameters",
                              f"{where} names parameters that {cls.__name__} does not have: {', '.join(hints)}; "
                              f"valid parameters are {', '.join(valid)}")


def _validate_params(estimator: Any, where: str) -> None:
    """Let scikit-learn check the values now, before a long fit, where it supports that."""
    from sklearn.utils._param_validation import InvalidParameterError

    check = getattr(estimator, "_validate_params", None)
    if check is None:
        return
    try:
        check()
    except InvalidParameterError as e:
        raise TrainingFailure("InvalidParameters", f"{where}: {e}") from e


def build_estimator(spec: TrainingRunSpec, task: str,
                    estimator_packages: Sequence[str] = DEFAULT_ESTIMATOR_PACKAGES) -> Any:
    from sklearn.base import is_classifier, is_regressor

    cls = import_estimator(spec.estimator.className, estimator_packages)
    params = dict(spec.estimator.params)
    _check_param_names(cls, params, "spec.estimator.params")
    if "random_state" in _param_names(cls) and "random_state" not in params:
        # Reproducible by default: the same spec on the same data gives the same model.
        params["random_state"] = spec.evaluation.seed
    try:
        estimator = cls(**params)
    except (TypeError, ValueError) as e:
        raise TrainingFailure("InvalidParameters",
                              f"cannot create {spec.estimator.className} with spec.estimator.params: {e}") from e
    _validate_params(estimator, "spec.estimator.params")
    if task == "classification" and not is_classifier(estimator):
        raise TrainingFailure("EstimatorTaskMismatch",
                              f"{spec.estimator.className} is not a classifier but the dataset's task is "
                              "classification; use a classifier such as sklearn.linear_model.LogisticRegression")
    if task == "regression" and not is_regressor(estimator):
        raise TrainingFailure("EstimatorTaskMismatch",
                              f"{spec.estimator.className} is not a regressor but the dataset's task is "
                              "regression; use a regressor such as sklearn.linear_model.Ridge")
    return estimator


def build_pipeline(features: Sequence[Feature], estimator: Any) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [f.name for f in features if f.type == "numeric"]
    categorical = [f.name for f in features if f.type != "numeric"]
    transformers = []
    if numeric:
        transformers.append(("numeric", Pipeline([("impute", SimpleImputer(strategy="median")),
                                                  ("scale", StandardScaler())]), numeric))
    if categorical:
        transformers.append(("categorical", Pipeline([
            ("impute", SimpleImputer(strategy="most_frequent")),
            ("onehot", OneHotEncoder(handle_unknown="ignore")),
        ]), categorical))
    # Dense output: several estimators (e.g. HistGradientBoosting*) refuse sparse input.
    preprocess = ColumnTransformer(transformers, sparse_threshold=0.0)
    return Pipeline([("preprocess", preprocess), (STEP, estimator)])


# --------------------------------------------------------------------------------------------- metrics


def headline_metric(spec: TrainingRunSpec, task: str) -> str:
    metric = spec.evaluation.metric or ("accuracy" if task == "classification" else "r2")
    allowed = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    if metric not in allowed:
        raise TrainingFailure("InvalidParameters",
                              f"spec.evaluation.metric {metric} does not apply to {task}; use one of "
                              f"{', '.join(allowed)}")
    return metric


def _scorer(metric: str, classes: Sequence[Any]) -> Any:
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


# ---------------------------------------------------------------------------------------------- search


def build_search(spec: TrainingRunSpec, pipeline: Any, estimator: Any, scoring: Any, n_train: int) -> Any:
    from sklearn.model_selection import GridSearchCV, RandomizedSearchCV

    search = spec.search
    assert search is not None
    space = dict(search.space)
    if not space:
        raise TrainingFailure("InvalidParameters", "spec.search.space is empty; name at least one parameter")
    _check_param_names(type(estimator), space, "spec.search.space")
    grid: dict[str, list[Any]] = {}
    for name, values in space.items():
        if not isinstance(values, list) or not values:
            raise TrainingFailure("InvalidParameters",
                                  f"spec.search.space.{name} must be a non-empty list of candidate values, "
                                  f"got {values!r}")
        for v in values:  # check each candidate now rather than after hours of cross-validation
            probe = estimator.__class__(**{**estimator.get_params(deep=False), name: v})
            _validate_params(probe, f"spec.search.space.{name} candidate {v!r}")
        grid[f"{STEP}__{name}"] = values
    if n_train < search.cv:
        raise TrainingFailure("DataValidationFailed",
                              f"the training split has {n_train} rows, fewer than spec.search.cv={search.cv} folds; "
                              "lower cv or use more data")
    common = {"scoring": scoring, "cv": search.cv, "refit": True, "error_score": "raise"}
    if search.method == "grid":
        return GridSearchCV(pipeline, grid, **common)
    combos = math.prod(len(v) for v in grid.values())
    return RandomizedSearchCV(pipeline, grid, n_iter=min(search.iterations, combos),
                              random_state=spec.evaluation.seed, **common)


# --------------------------------------------------------------------------------------------- helpers


def _json_safe(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


def split_rows(y: np.ndarray, spec: TrainingRunSpec, task: str) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the training and held-out splits, each in ascending order.

    The rows are exactly those ``train_test_split(X, y, test_size, random_state=seed, stratify=y)`` picks, kept in
    their order in the data: gathering columns in ascending row order is several times faster than in shuffled
    order, and most estimators do not depend on row order (those that do, like SGD, shuffle with their own
    random_state).
    """
    from sklearn.model_selection import train_test_split

    n = len(y)
    frac = spec.evaluation.testFraction
    n_test = math.ceil(frac * n)
    if n < 2 or n_test < 1 or n - n_test < 1:
        raise TrainingFailure("DataValidationFailed",
                              f"the dataset has {n} rows, too few to hold out {frac:.0%} for evaluation; add data")
    stratify = None
    if task == "classification" and spec.evaluation.stratify:
        # Sorted integer codes split exactly like the labels themselves, and much faster than text labels.
        codes, classes = pd.factorize(y, sort=True)
        counts = np.bincount(codes)
        # Stratification needs every class at least twice and room for one row of each class on both sides.
        if counts.min() >= 2 and n_test >= len(classes) and n - n_test >= len(classes):
            split = _stratified_split(codes, counts, n - n_test, n_test, spec.evaluation.seed)
            if split is not None:
                return split
            stratify = codes
        else:
            log.info("not stratifying the split: the smallest class has %d rows", int(counts.min()))
    train, test = train_test_split(np.arange(n), test_size=frac, random_state=spec.evaluation.seed,
                                   stratify=stratify)
    return np.sort(train), np.sort(test)


def _stratified_split(codes: np.ndarray, counts: np.ndarray, n_train: int, n_test: int, seed: int
                      ) -> tuple[np.ndarray, np.ndarray] | None:
    """The rows ``StratifiedShuffleSplit(test_size=n_test, train_size=n_train, random_state=seed)`` picks.

    The same steps drawing the same random numbers, vectorised: scikit-learn collects the picked rows into Python
    lists one number at a time, which costs a third of a second per million rows. Its final shuffle of each split
    is skipped because the rows are returned sorted (it comes after every draw that decides the rows).
    The unit tests compare the result with train_test_split. None when this scikit-learn lacks the helper it uses.
    """
    from sklearn.utils import check_random_state

    try:
        from sklearn.utils.extmath import _approximate_mode
    except ImportError:
        return None
    rng = check_random_state(seed)
    train_per_class = _approximate_mode(counts, n_train, rng)
    test_per_class = _approximate_mode(counts - train_per_class, n_test, rng)
    # The rows of each class in ascending order, classes one after another (a stable sort; radix sort for the
    # small integer type the codes fit in).
    small = codes.astype(np.int16) if len(counts) <= np.iinfo(np.int16).max else codes
    by_class = np.argsort(small, kind="stable")
    side = np.zeros(len(codes), dtype=np.int8)  # 1: train, 2: test, 0: neither (when the sizes leave rows out)
    start = 0
    for count, n_tr, n_te in zip(counts, train_per_class, test_per_class, strict=True):
        picked = by_class[start:start + count].take(rng.permutation(count), mode="clip")
        side[picked[:n_tr]] = 1
        side[picked[n_tr:n_tr + n_te]] = 2
        start += count
    return np.flatnonzero(side == 1), np.flatnonzero(side == 2)


def _input_sources(frame: pd.DataFrame, features: Sequence[Feature]) -> list[tuple[str, np.ndarray, Any]]:
    """Per feature: name, values (floats, or category codes), and the lookup table of the codes (None: floats)."""
    sources: list[tuple[str, np.ndarray, Any]] = []
    for f in features:
        values = frame[f.name]
        if f.type == "categorical":
            # Codes into a small table of Python strings: building an object column is then a gather from a few
            # hot objects instead of millions of scattered ones.
            codes, uniques = pd.factorize(values, use_na_sentinel=True)
            table = np.empty(len(uniques) + 1, dtype=object)
            table[:-1] = np.asarray(uniques, dtype=object)
            table[-1] = np.nan  # code -1 (missing): SimpleImputer recognises NaN, not None or NA
            sources.append((f.name, codes, table))
        else:
            sources.append((f.name, float_values(values), None))
    return sources


def _take_inputs(sources: list[tuple[str, np.ndarray, Any]], rows: np.ndarray | None) -> pd.DataFrame:
    cols: dict[str, Any] = {}
    # The float columns are gathered into the rows of one block: one large allocation instead of one per column,
    # which the kernel can back with huge pages (fresh memory otherwise costs a page fault per 4 KiB).
    floats = sum(1 for _, _, table in sources if table is None)
    block = np.empty((floats, len(rows) if rows is not None else 0))
    for name, values, table in sources:
        if rows is None:
            picked = values
        elif table is None:
            floats -= 1
            picked = np.take(values, rows, out=block[floats])
        else:
            picked = values[rows]
        cols[name] = picked if table is None else pd.Series(table[picked], dtype=object, copy=False)
    return pd.DataFrame(cols, copy=False)


def _prepare_inputs(frame: pd.DataFrame, features: Sequence[Feature], target: str, task: str,
                    spec: TrainingRunSpec) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray, list[Any]]:
    """The training and held-out inputs and labels, and the classes (empty for regression)."""
    y = _labels(frame[target], task)
    train_rows, test_rows = split_rows(y, spec, task)
    sources = _input_sources(frame, features)
    x_train, x_test = _take_inputs(sources, train_rows), _take_inputs(sources, test_rows)
    y_train, y_test = y[train_rows], y[test_rows]
    classes: list[Any] = sorted(pd.unique(y_train)) if task == "classification" else []
    if task == "classification" and len(classes) < 2:
        raise TrainingFailure("DataValidationFailed",
                              "the training split has a single class; add data of other classes")
    return x_train, x_test, y_train, y_test, classes


def _timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    return fn(*args), time.perf_counter() - t


def _verify_snapshot(verifying: Future[tuple[str, float]], snapshot_uri: str, expected: str) -> float:
    """Wait for the snapshot's digest; raises unless it is the validated one. Returns the seconds it took."""
    actual, seconds = verifying.result()
    if actual != expected:
        raise TrainingFailure("DataValidationFailed",
                              f"the snapshot {snapshot_uri} has digest {actual}, not the validated {expected}: "
                              "it changed after validation; re-validate the Dataset and retrain")
    return float(seconds)


def _labels(values: pd.Series, task: str) -> np.ndarray:
    if task == "regression":
        return values.to_numpy(dtype=np.float64)
    if values.dtype.kind in "iub":
        return values.to_numpy()
    return values.to_numpy(dtype=object)


def _dump_model(model: Any, path: str) -> list[str]:
    """Save the model with skops; returns the non-default types it contains, refusing any outside the allow-list."""
    import skops.io as sio

    sio.dump(model, path)
    untrusted: list[str] = sio.get_untrusted_types(file=path)
    refused = [u for u in untrusted if not _trusted(u)]
    if refused:
        raise TrainingFailure("EstimatorImportFailed",
                              f"the fitted model contains types the model server will not load: "
                              f"{', '.join(refused)}; use scikit-learn's own estimators")
    return untrusted


def _trusted(type_name: str) -> bool:
    return type_name.split(".", 1)[0] in TRUSTED_MODULES


def _failure(e: TrainingFailure) -> dict[str, Any]:
    return FailureResult(reason=e.reason, message=e.message, retryable=e.retryable).wire()


# -------------------------------------------------------------------------------------------- workload


def run_training(spec: TrainingRunSpec, dataset_snapshot_uri: str, dataset_digest: str, profile_uri: str | None,
                 task: str, target: str, features: Iterable[Feature | FeatureRef | Mapping[str, Any]],
                 namespace: str,
                 run_name: str, run_uid: str, store: ArtifactStore,
                 estimator_packages: Sequence[str] = DEFAULT_ESTIMATOR_PACKAGES) -> dict[str, Any]:
    """Train, evaluate and save one model; the result goes to the termination message.

    Permanent problems (bad estimator, bad parameters, data that does not match its digest) come back as
    ``{"ok": False, ...}``; storage and other unexpected errors are raised for the caller to report as transient.
    """
    try:
        return _run_training(spec, dataset_snapshot_uri, dataset_digest, profile_uri, task, target,
                             as_features(features), namespace, run_name, run_uid, store, tuple(estimator_packages))
    except TrainingFailure as e:
        log.info("training failed: %s: %s", e.reason, e.message)
        return _failure(e)


def _run_training(spec: TrainingRunSpec, snapshot_uri: str, dataset_digest: str, profile_uri: str | None,
                  task: str, target: str, features: list[Feature], namespace: str, run_name: str, run_uid: str,
                  store: ArtifactStore, estimator_packages: tuple[str, ...]) -> dict[str, Any]:
    import sklearn
    import skops

    timings: dict[str, float] = {}
    prefix = run_prefix(namespace, run_name, run_uid)
    manifest_uri = store.uri_for(prefix + MANIFEST_NAME)
    if store.exists(manifest_uri):
        previous = ModelManifest.from_json(store.read_bytes(manifest_uri))
        if previous.datasetDigest != dataset_digest:
            raise TrainingFailure("DataValidationFailed",
                                  f"{manifest_uri} was written for dataset {previous.datasetDigest}, not "
                                  f"{dataset_digest}; this run's artifacts belong to another dataset version")
        log.info("a previous attempt already finished this run (%s); reporting its result", manifest_uri)
        adopted = previous.training_result(manifest_uri)
        adopted.adopted = True
        return adopted.wire()

    # Fail fast on the spec before reading a possibly large snapshot.
    metric = headline_metric(spec, task)
    estimator = build_estimator(spec, task, estimator_packages)
    if metric == "roc_auc" and not hasattr(estimator, "predict_proba"):
        raise TrainingFailure("InvalidParameters",
                              f"spec.evaluation.metric roc_auc needs predicted probabilities, which "
                              f"{spec.estimator.className} with these params does not provide; pick another "
                              "metric or an estimator with predict_proba (for SVC set probability: true)")

    t = time.perf_counter()
    log.info("reading snapshot %s", snapshot_uri)
    try:
        raw = read_snapshot(store, snapshot_uri)
    except FileNotFoundError as e:
        raise TrainingFailure("DataValidationFailed",
                              f"the dataset snapshot {snapshot_uri} does not exist (deleted by retention?); "
                              "re-validate the Dataset and create a new TrainingRun") from e
    frame, mismatches = coerce_frame(raw, features, target, task)
    del raw
    missing = [c for c in [*(f.name for f in features), target] if c not in frame.columns]
    if missing or mismatches:
        problem = f"columns {missing} are missing" if missing else mismatches[0].message
        raise TrainingFailure("DataValidationFailed",
                              f"the snapshot {snapshot_uri} does not match the dataset schema: {problem}")
    timings["load"] = time.perf_counter() - t

    # Verify the snapshot while the split is prepared: hashing runs in C without the GIL, so it takes the other
    # core instead of adding to the wall time. Nothing is fitted before the digest has been checked, and a
    # mismatch wins over any other failure, since a changed snapshot explains whatever else looks wrong.
    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="verify") as pool:
        verifying = pool.submit(_timed, digest_canonical, frame, features, target)
        try:
            x_train, x_test, y_train, y_test, classes = _prepare_inputs(frame, features, target, task, spec)
            del frame
            pipeline = build_pipeline(features, estimator)
            fit_target: Any = pipeline
            if spec.search is not None:
                fit_target = build_search(spec, pipeline, estimator, _scorer(metric, classes), len(y_train))
        except TrainingFailure:
            _verify_snapshot(verifying, snapshot_uri, dataset_digest)
            raise
        timings["prepare"] = time.perf_counter() - t
        t = time.perf_counter()
        seconds = _verify_snapshot(verifying, snapshot_uri, dataset_digest)
    # Only the part of the digest that did not overlap the preparation (as validation reports its write).
    timings["digest"] = time.perf_counter() - t
    log.info("snapshot verified: %d rows, digest %s (%.2fs)", len(y_train) + len(y_test), dataset_digest, seconds)

    log.info("fitting %s on %d rows (%d held out)%s", spec.estimator.className, len(y_train), len(y_test),
             f" with {spec.search.method} search" if spec.search else "")
    t = time.perf_counter()
    from sklearn.utils._param_validation import InvalidParameterError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit_target.fit(x_train, y_train)
        except InvalidParameterError as e:
            raise TrainingFailure("InvalidParameters", f"{spec.estimator.className}: {e}") from e
        except (ValueError, TypeError) as e:
            # Parameter combinations (e.g. solver lbfgs with penalty l1) are only checked by fit, as ValueError.
            given = {**spec.estimator.params, **(spec.search.space if spec.search else {})}
            named = [p for p, v in given.items()
                     if p in str(e) or (isinstance(v, str) and len(v) >= 3 and v in str(e))]
            if named:
                raise TrainingFailure("InvalidParameters",
                                      f"{spec.estimator.className} rejected the parameters {', '.join(named)}: "
                                      f"{e}; change spec.estimator.params or spec.search.space") from e
            raise TrainingFailure("TrainingFailed",
                                  f"fitting {spec.estimator.className} failed: {type(e).__name__}: {e}; check the "
                                  "parameters (some combinations are invalid) and the data") from e
        except MemoryError as e:
            raise TrainingFailure("TrainingFailed",
                                  "training ran out of memory; give the pod more memory in spec.resources or "
                                  "use fewer rows/features") from e
    timings["fit"] = time.perf_counter() - t
    notes = sorted({f"{w.category.__name__}: {str(w.message).strip().splitlines()[0][:200]}" for w in caught})
    for note in notes[:5]:
        log.info("warning during fit: %s", note)
    log.info("fit done in %.2fs", timings["fit"])

    best_params = None
    model = fit_target
    if spec.search is not None:
        model = fit_target.best_estimator_
        best_params = {k.removeprefix(f"{STEP}__"): _json_safe(v) for k, v in fit_target.best_params_.items()}
        log.info("best parameters: %s (cv score %.4f)", best_params, fit_target.best_score_)

    # Serialise the model while it is evaluated: both only read the fitted model, so skops' work overlaps the
    # evaluation's. Nothing is stored before the evaluation has succeeded.
    t = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kultivar-model-") as tmp, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="dump") as pool:
        local = os.path.join(tmp, MODEL_NAME)
        dumping = pool.submit(_dump_model, model, local)
        metrics = evaluate(model, x_test, y_test, task, [f.name for f in features if f.type != "numeric"])
        timings["evaluate"] = time.perf_counter() - t
        if metric not in metrics:
            raise TrainingFailure("EvaluationFailed",
                                  f"the headline metric {metric} could not be computed on the held-out split "
                                  f"(computed: {', '.join(metrics) or 'none'}); use more data or another metric")
        log.info("held-out metrics: %s", ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))

        t = time.perf_counter()
        trusted_types = dumping.result()
        model_rel = prefix + MODEL_NAME
        model_uri = store.uri_for(model_rel)
        if store.exists(model_uri):
            log.info("replacing %s left by an attempt that did not finish (no manifest)", model_uri)
            store.delete(model_rel)
        artifact = store.write_file_once(model_rel, local)

    manifest = ModelManifest(
        createdAt=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        artifact=ArtifactRef.model_validate(artifact),
        sha256=artifact["digest"].removeprefix("sha256:"),
        estimator=spec.estimator.className,
        params=_json_safe(dict(spec.estimator.params)),
        bestParams=best_params,
        task=task,
        target=target,
        features=[ManifestFeature(name=f.name, type=f.type, dtype="float64" if f.type != "categorical" else "string")
                  for f in features],
        classes=_json_safe(list(classes)) if task == "classification" else None,
        metric=metric,
        score=metrics[metric],
        metrics=metrics,
        datasetDigest=dataset_digest,
        datasetSnapshotUri=snapshot_uri,
        profileUri=profile_uri,
        trainRows=len(y_train),
        testRows=len(y_test),
        seed=spec.evaluation.seed,
        sklearnVersion=sklearn.__version__,
        skopsVersion=skops.__version__,
        numpyVersion=np.__version__,
        pythonVersion=platform.python_version(),
        trustedTypes=trusted_types,
    )
    store.write_once(prefix + MANIFEST_NAME, manifest.to_json())
    timings["save"] = time.perf_counter() - t
    log.info("saved %s (%s, %d bytes) and %s", artifact["uri"], artifact["digest"], artifact["sizeBytes"],
             manifest_uri)

    result = manifest.training_result(manifest_uri)
    result.timings = {k: round(v, 3) for k, v in timings.items()}
    result.warnings = notes[:3] or None
    return result.wire()


# ----------------------------------------------------------------------------------------------- loading


def load_model(uri: str, expected_digest: str, store: ArtifactStore) -> Any:
    """Load a model saved by :func:`run_training`, refusing a file whose digest or types are not as expected."""
    import skops.io as sio

    data = store.read_bytes(uri)
    actual = digest_of(data)
    if actual != expected_digest:
        raise ModelIntegrityError(
            f"model {uri} has digest {actual} but {expected_digest} was registered: the file changed after "
            "training; refusing to load it (retrain, or restore the original file)"
        )
    untrusted = sio.get_untrusted_types(data=data)
    refused = [t for t in untrusted if not _trusted(t)]
    if refused:
        raise UntrustedModelError(
            f"model {uri} contains types outside the allow-list ({', '.join(TRUSTED_MODULES)}): "
            f"{', '.join(refused)}; refusing to load it"
        )
    return sio.loads(data, trusted=untrusted)
