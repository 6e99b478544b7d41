"""Reference profile of a dataset version: the baseline that live inputs are compared with for drift.

The profile is computed once at validation (``kultivar.workloads.profiling.build_profile``) and stored as
``profile.json`` next to the dataset snapshot. The inference server later counts live inputs into the same
buckets with :func:`bin_indices` / :func:`category_keys` and compares the counts with :func:`psi`.

Bucketing rules (the contract between training-time profile and serving-time counting):

* Numeric features use quantile bin edges (10 bins by default). Duplicate edges are dropped, so a column with
  few distinct values has fewer bins. The outer edges are open: values below ``edges[1]`` fall into the first
  bin and values at or above ``edges[-2]`` into the last one, so unseen extremes still land in a bin. Inner
  bins are half-open ``[edges[i], edges[i+1])``. Missing values (None/NaN) are not binned; they are tracked in
  ``missingFraction`` and :func:`bin_index` returns ``-1`` for them.
* Columns with more than :data:`EXACT_QUANTILE_LIMIT` present values take their inner edges from a fixed-seed
  random sample of that many values (the usual practice for large data: the edges land within a fraction of a
  percentile of the exact ones, and the same data always gives the same profile). The outer edges (min and
  max), the proportions, the count and the moments are always computed over every value, so the proportions
  describe the training data exactly for the bins the profile defines.
* Categorical and boolean features count normalised string keys (:func:`normalize_category`). At most
  ``max_categories`` of the most frequent training categories are kept; the rest of the training mass and every
  category unseen in training go to the ``__other__`` bucket, which is always present.

Pure: numpy and pydantic only (no pandas), so the inference server can use it without the data stack.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

OTHER = "__other__"
DEFAULT_BINS = 10
DEFAULT_MAX_CATEGORIES = 50
DEFAULT_EPSILON = 1e-4
PROFILE_FORMAT = 1
# Above this many present values a numeric column's inner quantile edges come from a random sample of this size:
# a full sort of millions of values costs far more than the rest of the profile, and deciles from 131,072 values
# are within about 0.1 percentile of the exact ones.
EXACT_QUANTILE_LIMIT = 1 << 17
_SAMPLE_SEED = 0  # fixed: a profile is written once per data version and must not depend on the run

# The words of a boolean feature, lower-case and stripped: the one vocabulary of training data (the canonical form)
# and of inference requests (through normalize_category), so the server accepts exactly what training accepted.
TRUE_WORDS = frozenset({"true", "t", "yes", "y", "1", "1.0"})
FALSE_WORDS = frozenset({"false", "f", "no", "n", "0", "0.0"})


class _ProfileModel(BaseModel):
    # Profiles outlive the code that wrote them: a newer server must read an older profile and vice versa.
    model_config = ConfigDict(extra="ignore")


class NumericProfile(_ProfileModel):
    """Distribution of a numeric feature: quantile bins with their training proportions plus moments."""

    kind: Literal["numeric"] = "numeric"
    edges: list[float] = Field(description="Bin edges, strictly increasing; the outer two are open.")
    proportions: list[float] = Field(description="Share of non-missing training values per bin.")
    count: int = Field(ge=0, description="Non-missing values seen in training.")
    missingFraction: float = Field(default=0.0, ge=0.0, le=1.0)
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None

    @property
    def bins(self) -> int:
        return len(self.proportions)


class CategoricalProfile(_ProfileModel):
    """Distribution of a categorical (or boolean) feature over its most frequent categories."""

    kind: Literal["categorical"] = "categorical"
    boolean: bool = Field(default=False, description="The feature is boolean: keys are 'true' and 'false'.")
    proportions: dict[str, float] = Field(description="Share of non-missing training values per key, "
                                                      "including the always-present __other__ bucket.")
    count: int = Field(ge=0, description="Non-missing values seen in training.")
    missingFraction: float = Field(default=0.0, ge=0.0, le=1.0)
    distinct: int = Field(default=0, ge=0, description="Distinct categories in training (before the cap).")

    def keys(self) -> list[str]:
        return list(self.proportions)


FeatureProfile = Annotated[NumericProfile | CategoricalProfile, Field(discriminator="kind")]


class Profile(_ProfileModel):
    """Reference profile of one dataset version."""

    format: int = PROFILE_FORMAT
    rows: int = Field(ge=0)
    features: dict[str, FeatureProfile] = Field(default_factory=dict)
    target: FeatureProfile | None = Field(default=None, description="Profile of the target column, for "
                                                                     "prediction drift.")
    targetName: str | None = None


# ----------------------------------------------------------------------------------------------- numeric


def _finite_or_none(x: float) -> float | None:
    # JSON has no NaN/inf; an all-missing column has no moments.
    return float(x) if math.isfinite(x) else None


def _quantiles_of_sorted(ordered: np.ndarray, probs: np.ndarray) -> np.ndarray:
    # numpy's default ("linear") quantile definition, on data that is already sorted.
    pos = probs * (ordered.size - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, ordered.size - 1)
    frac = pos - lo
    return ordered[lo] + frac * (ordered[hi] - ordered[lo])


def _finite_range(present: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Min, max and the values, with +-inf replaced by the most extreme finite values (they would make the edges
    and moments meaningless)."""
    low, high = present.min(), present.max()
    if math.isfinite(low) and math.isfinite(high):
        return float(low), float(high), present
    finite = present[np.isfinite(present)]
    low, high = (finite.min(), finite.max()) if finite.size else (np.finfo(np.float64).min,
                                                                  np.finfo(np.float64).max)
    return float(low), float(high), np.clip(present, low, high)


def _inner_quantiles(present: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Quantiles of the present values, exact up to EXACT_QUANTILE_LIMIT values, else of a random sample."""
    if present.size > EXACT_QUANTILE_LIMIT:
        picks = np.random.default_rng(_SAMPLE_SEED).integers(0, present.size, EXACT_QUANTILE_LIMIT)
        present = present[picks]
    return _quantiles_of_sorted(np.sort(present), probs)


def numeric_profile(values: np.ndarray, bins: int = DEFAULT_BINS) -> NumericProfile:
    """Profile a numeric column given as an array of floats with NaN for missing values."""
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    arr = np.asarray(values, dtype=np.float64)
    total = arr.size
    missing_mask = np.isnan(arr)
    present = arr[~missing_mask] if missing_mask.any() else arr  # nothing here writes to the array
    n = present.size
    missing = (total - n) / total if total else 0.0
    if n == 0:
        # No data to place edges on: a single open bin keeps bin_index total and the profile usable.
        return NumericProfile(edges=[0.0, 0.0], proportions=[1.0], count=0, missingFraction=missing)
    low, high, present = _finite_range(present)
    inner = _inner_quantiles(present, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    # The 0 and 1 quantiles are the minimum and maximum, known exactly whether or not the inner edges are sampled.
    edges = np.unique(np.concatenate(([low], inner, [high])))
    if edges.size < 2:
        edges = np.array([edges[0], edges[0]])
    # Bin i (side="right" binning) holds values in [edges[i], edges[i+1]); counts are differences of the number
    # of values below each inner edge, counted over every value: a few vectorised comparisons per edge instead
    # of a binary search per value.
    below = [np.count_nonzero(present < edge) for edge in edges[1:-1]]
    counts = np.diff(np.array([0, *below, n]))
    with np.errstate(over="ignore", invalid="ignore"):
        mean, std = float(present.mean()), float(present.std())
    return NumericProfile(
        edges=edges.tolist(),
        proportions=(counts / n).tolist(),
        count=int(n),
        missingFraction=missing,
        min=_finite_or_none(low),
        max=_finite_or_none(high),
        mean=_finite_or_none(mean),
        std=_finite_or_none(std),
    )


def _bin_indices_present(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    # Only the inner edges decide: that is what makes the outer bins open.
    return np.searchsorted(edges[1:-1], values, side="right")


def bin_indices(profile: NumericProfile, values: Any) -> np.ndarray:
    """Bin of each value (vectorised); -1 for missing or non-numeric values."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "fiub":
        arr = np.array([_to_float(v) for v in arr.ravel()], dtype=np.float64)
    arr = arr.astype(np.float64, copy=False).ravel()
    out = _bin_indices_present(np.asarray(profile.edges, dtype=np.float64), arr)
    out[np.isnan(arr)] = -1
    return out


def bin_index(profile: NumericProfile, value: Any) -> int:
    """Bin of one value, or -1 when the value is missing or not a number."""
    x = _to_float(value)
    if math.isnan(x):
        return -1
    return int(_bin_indices_present(np.asarray(profile.edges, dtype=np.float64), np.array([x]))[0])


def bin_counts(profile: NumericProfile, values: Any) -> np.ndarray:
    """Count values per bin (missing values are not counted)."""
    idx = bin_indices(profile, values)
    return np.bincount(idx[idx >= 0], minlength=profile.bins)


def _to_float(value: Any) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


# ------------------------------------------------------------------------------------------- categorical


def normalize_category(value: Any, boolean: bool = False) -> str | None:
    """The key a value is counted under, or None when it is missing.

    Training data read from CSV and JSON requests disagree on types (1 vs 1.0 vs "1", True vs "true"); both
    sides go through this function so they agree on keys.
    """
    if value is None:
        return None
    if isinstance(value, float | np.floating) and math.isnan(value):
        return None
    if boolean:
        if isinstance(value, bool | np.bool_):
            return "true" if value else "false"
        if isinstance(value, int | float | np.integer | np.floating):
            return "true" if value else "false"
        text = str(value).strip().lower()
        if text in TRUE_WORDS:
            return "true"
        if text in FALSE_WORDS:
            return "false"
        return text
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def categorical_profile_from_counts(
    counts: Mapping[str, int],
    missing: int = 0,
    max_categories: int = DEFAULT_MAX_CATEGORIES,
    boolean: bool = False,
) -> CategoricalProfile:
    """Profile from counts per normalised key; keeps the ``max_categories`` most frequent keys."""
    total_present = int(sum(counts.values()))
    total = total_present + int(missing)
    # Ties broken by key so the profile (and its digest) does not depend on input order.
    ranked = sorted(((k, int(c)) for k, c in counts.items() if c > 0 and k != OTHER), key=lambda kc: (-kc[1], kc[0]))
    kept = ranked[:max_categories]
    other = total_present - sum(c for _, c in kept)
    proportions = {k: (c / total_present) for k, c in kept} if total_present else {}
    proportions[OTHER] = other / total_present if total_present else 0.0
    return CategoricalProfile(
        boolean=boolean,
        proportions=proportions,
        count=total_present,
        missingFraction=(missing / total) if total else 0.0,
        distinct=len(ranked),
    )


def categorical_profile(values: Iterable[Any], max_categories: int = DEFAULT_MAX_CATEGORIES,
                        boolean: bool = False) -> CategoricalProfile:
    """Profile from raw values (small inputs; large columns should count first and use the counts form)."""
    counts: dict[str, int] = {}
    missing = 0
    for v in values:
        key = normalize_category(v, boolean)
        if key is None:
            missing += 1
        else:
            counts[key] = counts.get(key, 0) + 1
    return categorical_profile_from_counts(counts, missing, max_categories, boolean)


def category_key(profile: CategoricalProfile, value: Any) -> str | None:
    """The profile bucket of one value: a known category, ``__other__``, or None when missing."""
    key = normalize_category(value, profile.boolean)
    if key is None:
        return None
    return key if key in profile.proportions and key != OTHER else OTHER


def category_keys(profile: CategoricalProfile, values: Iterable[Any]) -> list[str | None]:
    return [category_key(profile, v) for v in values]


def category_counts(profile: CategoricalProfile, values: Iterable[Any]) -> np.ndarray:
    """Counts per bucket, aligned with ``profile.keys()`` (missing values are not counted)."""
    position = {k: i for i, k in enumerate(profile.proportions)}
    counts = np.zeros(len(position), dtype=np.int64)
    for v in values:
        key = category_key(profile, v)
        if key is not None:
            counts[position[key]] += 1
    return counts


def expected_proportions(profile: NumericProfile | CategoricalProfile) -> np.ndarray:
    if isinstance(profile, NumericProfile):
        return np.asarray(profile.proportions, dtype=np.float64)
    return np.fromiter(profile.proportions.values(), dtype=np.float64, count=len(profile.proportions))


def counts_for(profile: NumericProfile | CategoricalProfile, values: Any) -> np.ndarray:
    if isinstance(profile, NumericProfile):
        return bin_counts(profile, values)
    return category_counts(profile, values)


# ------------------------------------------------------------------------------------------------- drift


def psi(expected_proportions: Sequence[float] | np.ndarray,
        actual_counts_or_proportions: Sequence[float] | np.ndarray,
        epsilon: float = DEFAULT_EPSILON) -> float:
    """Population stability index ``sum((a - e) * ln(a / e))`` over aligned buckets.

    ``actual`` may be counts or proportions; it is normalised here. Both sides are floored at ``epsilon`` so an
    empty bucket contributes a large but finite amount instead of infinity. Returns NaN when ``actual`` is
    empty (no observations: drift is undefined, not zero).
    """
    e = np.asarray(expected_proportions, dtype=np.float64)
    a = np.asarray(actual_counts_or_proportions, dtype=np.float64)
    if e.shape != a.shape:
        raise ValueError(f"psi needs aligned buckets: expected has {e.shape}, actual has {a.shape}")
    total = a.sum()
    if total <= 0:
        return math.nan
    a = a / total
    e_sum = e.sum()
    if e_sum > 0:
        e = e / e_sum
    e = np.maximum(e, epsilon)
    a = np.maximum(a, epsilon)
    return float(np.sum((a - e) * np.log(a / e)))


def feature_psi(profile: NumericProfile | CategoricalProfile, values: Any,
                epsilon: float = DEFAULT_EPSILON) -> float:
    """PSI of live values for one feature against its training profile."""
    return psi(expected_proportions(profile), counts_for(profile, values), epsilon)
