"""The estimator of a TrainingRun: importing it from a permitted package, checking its parameters, the search."""

from __future__ import annotations

import contextlib
import importlib
import inspect
import math
from collections.abc import Iterable, Sequence
from difflib import get_close_matches
from typing import Any

from kultivar.api.contracts import DEFAULT_ESTIMATOR_PACKAGES, estimator_not_allowed
from kultivar.api.trainingrun import TrainingRunSpec
from kultivar.workloads.failure import TrainingFailure
from kultivar.workloads.pipeline import STEP

# Packages of the `boosting` extra, whose classifiers and regressors follow scikit-learn's API.
BOOSTING_PACKAGES = ("xgboost", "lightgbm")


def needs_encoded_labels(estimator: Any) -> bool:
    """Whether the classifier must be fitted on class indexes 0..k-1: XGBoost's refuses any other labels (strings,
    or integers that are not 0..k-1), and predicts indexes."""
    return type(estimator).__module__.split(".", 1)[0] == "xgboost"


def import_estimator(class_name: str, estimator_packages: Sequence[str] = DEFAULT_ESTIMATOR_PACKAGES) -> type:
    """The estimator class named by ``spec.estimator.className``; raises EstimatorNotAllowed or
    EstimatorImportFailed."""
    module_name, _, attr = class_name.rpartition(".")
    not_allowed = estimator_not_allowed(class_name, estimator_packages)
    if not_allowed:
        raise TrainingFailure("EstimatorNotAllowed", not_allowed)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        package = module_name.split(".", 1)[0]
        extra = (f" ({package} comes with Kultivar's `boosting` extra, which the runtime image installs; a custom "
                 "image needs it too)" if package in BOOSTING_PACKAGES else "")
        raise TrainingFailure("EstimatorImportFailed",
                              f"cannot import module {module_name!r} for estimator {class_name}: {e}; check "
                              f"spec.estimator.className{extra}") from e
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
    names = [p.name for p in sig.parameters.values()
             if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        # XGBoost's estimators take their parameters as **kwargs; get_params() of a default instance lists them.
        # (An estimator that cannot be built without arguments: the signature is all we know.)
        with contextlib.suppress(Exception):
            names += [n for n in cls().get_params(deep=False) if n not in names]
    return names


def _takes_any_param(cls: type) -> bool:
    """Whether the estimator forwards parameters it does not name to its library (XGBoost's and LightGBM's
    ``**kwargs`` go to the booster, which knows many more, and aliases, and logs the ones it does not use)."""
    sig = inspect.signature(cls.__init__)  # type: ignore[misc]
    return any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())


def _check_param_names(cls: type, names: Iterable[str], where: str) -> None:
    if _takes_any_param(cls):
        return
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
    if check is None or not hasattr(estimator, "_parameter_constraints"):
        return  # not scikit-learn's own (XGBoost and LightGBM check their parameters when fitting)
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
