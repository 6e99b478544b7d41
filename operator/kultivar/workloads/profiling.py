"""The reference profile of a dataset version: per-feature histograms and category shares (see
:mod:`kultivar.domain.profile`), the baseline of drift detection."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from kultivar.api.dataset import Feature
from kultivar.domain.profile import (
    DEFAULT_BINS,
    DEFAULT_MAX_CATEGORIES,
    CategoricalProfile,
    NumericProfile,
    Profile,
    categorical_profile_from_counts,
    normalize_category,
    numeric_profile,
)
from kultivar.workloads.canonical import as_features, float_values


def _distinct_counts(series: pd.Series) -> tuple[Iterable[tuple[Any, int]], int]:
    """(value, count) of each distinct present value, and the number of missing values."""
    if series.dtype == np.float64:
        # The canonical form of a boolean feature: 0.0, 1.0 and NaN only, three counts instead of a hash table.
        floats = series.to_numpy()
        missing = int(np.count_nonzero(np.isnan(floats)))
        ones, zeros = int(np.count_nonzero(floats == 1.0)), int(np.count_nonzero(floats == 0.0))
        if ones + zeros + missing == len(floats):
            return [(np.float64(1.0), ones), (np.float64(0.0), zeros)], missing
    return series.value_counts(dropna=True).items(), int(series.isna().sum())


def _categorical_counts(series: pd.Series, boolean: bool) -> tuple[dict[str, int], int]:
    counts: dict[str, int] = {}
    distinct, missing = _distinct_counts(series)
    for value, count in distinct:
        key = normalize_category(value, boolean)
        if key is not None and count:
            counts[key] = counts.get(key, 0) + int(count)
    return counts, missing


def feature_profile(series: pd.Series, ftype: str, bins: int = DEFAULT_BINS,
                    max_categories: int = DEFAULT_MAX_CATEGORIES) -> NumericProfile | CategoricalProfile:
    if ftype == "numeric":
        if not ptypes.is_numeric_dtype(series):
            series = pd.to_numeric(series, errors="coerce")
        return numeric_profile(float_values(series), bins)
    counts, missing = _categorical_counts(series, ftype == "boolean")
    return categorical_profile_from_counts(counts, missing, max_categories, boolean=ftype == "boolean")


def build_profile(df: pd.DataFrame, features: Iterable[Feature | Mapping[str, Any]], target: str | None = None,
                  task: str | None = None, bins: int = DEFAULT_BINS,
                  max_categories: int = DEFAULT_MAX_CATEGORIES) -> Profile:
    """Reference profile of the feature columns (and of the target when given)."""
    feats = as_features(features)
    columns: list[tuple[str, str]] = [(f.name, f.type) for f in feats]
    if target is not None and target in df.columns:
        ttype = "numeric" if (task == "regression" or (task is None and ptypes.is_float_dtype(df[target]))) \
            else "categorical"
        columns.append((target, ttype))
    # Columns are profiled in parallel: the work is sorting, comparing and counting in numpy and pandas, which
    # run without the GIL.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="profile") as pool:
        profiles = list(pool.map(lambda col: feature_profile(df[col[0]], col[1], bins, max_categories), columns))
    profile = Profile(rows=len(df), features={f.name: p for f, p in zip(feats, profiles, strict=False)})
    if len(profiles) > len(feats):
        profile.target, profile.targetName = profiles[-1], target
    return profile
