"""The training and held-out splits, and the inputs the pipeline is fitted and evaluated on."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from kultivar.api.dataset import Feature
from kultivar.api.trainingrun import TrainingRunSpec
from kultivar.workloads.canonical import float_values
from kultivar.workloads.failure import TrainingFailure

log = logging.getLogger("kultivar.workloads")


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


def prepare_inputs(frame: pd.DataFrame, features: Sequence[Feature], target: str, task: str,
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
    if task == "regression" and len(y_train) and bool(np.all(y_train == y_train[0])):
        # Nothing to learn, and R2 is undefined on such rows (scikit-learn would report a perfect 1.0).
        raise TrainingFailure("DataValidationFailed",
                              f"the target {target!r} has the same value ({y_train[0]:g}) in every training row, so "
                              "there is nothing to learn; add data where it varies")
    return x_train, x_test, y_train, y_test, classes


def _labels(values: pd.Series, task: str) -> np.ndarray:
    if task == "regression":
        return values.to_numpy(dtype=np.float64)
    if values.dtype.kind in "iub":
        return values.to_numpy()
    return values.to_numpy(dtype=object)


def all_inputs(frame: pd.DataFrame, features: Sequence[Feature], target: str, task: str
               ) -> tuple[pd.DataFrame, np.ndarray]:
    """Every row's inputs and labels (a fixed holdout set: nothing is split off)."""
    return _take_inputs(_input_sources(frame, features), np.arange(len(frame))), _labels(frame[target], task)
