"""Reference profile: bins, categories, PSI."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kultivar.domain.profile import (
    EXACT_QUANTILE_LIMIT,
    OTHER,
    CategoricalProfile,
    NumericProfile,
    Profile,
    bin_counts,
    bin_index,
    bin_indices,
    categorical_profile,
    categorical_profile_from_counts,
    category_counts,
    category_key,
    expected_proportions,
    feature_psi,
    normalize_category,
    numeric_profile,
    psi,
)

DRIFT_THRESHOLD = 0.2  # the Deployment's default monitoring.threshold


@pytest.fixture(scope="module")
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def test_numeric_profile_has_ten_quantile_bins(rng: np.random.Generator) -> None:
    values = rng.normal(10, 2, 20_000)
    p = numeric_profile(values)
    assert p.bins == 10
    assert len(p.edges) == 11
    assert all(a < b for a, b in zip(p.edges, p.edges[1:], strict=False))
    assert sum(p.proportions) == pytest.approx(1.0)
    assert all(abs(x - 0.1) < 0.01 for x in p.proportions)
    assert p.min == pytest.approx(values.min())
    assert p.max == pytest.approx(values.max())
    assert p.mean == pytest.approx(10, abs=0.1)
    assert p.std == pytest.approx(2, abs=0.1)
    assert p.missingFraction == 0.0
    assert p.count == 20_000


def test_numeric_profile_deduplicates_edges_of_discrete_data() -> None:
    values = np.array([0.0] * 50 + [1.0] * 30 + [2.0] * 20)
    p = numeric_profile(values)
    assert len(set(p.edges)) == len(p.edges)
    assert p.bins < 10
    assert sum(p.proportions) == pytest.approx(1.0)
    # Each distinct value is counted in exactly one bin, consistently with bin_index.
    counts = bin_counts(p, values)
    assert counts.sum() == 100
    for v, share in ((0.0, 0.5), (1.0, 0.3), (2.0, 0.2)):
        assert p.proportions[bin_index(p, v)] == pytest.approx(share)


def test_outer_bins_are_open_and_missing_is_minus_one(rng: np.random.Generator) -> None:
    p = numeric_profile(rng.uniform(0, 1, 1000))
    assert bin_index(p, -1e9) == 0
    assert bin_index(p, p.edges[1] - 1e-12) == 0
    assert bin_index(p, 1e9) == p.bins - 1
    assert bin_index(p, p.edges[-2]) == p.bins - 1
    assert bin_index(p, float("inf")) == p.bins - 1
    assert bin_index(p, None) == -1
    assert bin_index(p, float("nan")) == -1
    assert bin_index(p, "not a number") == -1
    assert bin_index(p, "0.5") == bin_index(p, 0.5)


def test_vectorised_bins_match_scalar(rng: np.random.Generator) -> None:
    p = numeric_profile(rng.exponential(3, 5000))
    live = np.concatenate([rng.exponential(3, 500), [np.nan, -5, 1e6]])
    vector = bin_indices(p, live)
    assert vector.tolist() == [bin_index(p, v) for v in live]
    mixed = [1.0, None, "2.5", "x", 3]
    assert bin_indices(p, np.array(mixed, dtype=object)).tolist() == [bin_index(p, v) for v in mixed]


def test_missing_values_and_degenerate_columns() -> None:
    p = numeric_profile(np.array([1.0, np.nan, 3.0, np.nan]))
    assert p.missingFraction == 0.5
    assert p.count == 2
    empty = numeric_profile(np.array([np.nan, np.nan]))
    assert empty.missingFraction == 1.0
    assert empty.bins == 1 and empty.proportions == [1.0]
    assert empty.min is None and empty.mean is None
    assert bin_index(empty, 42) == 0
    constant = numeric_profile(np.full(100, 7.0))
    assert constant.bins == 1
    assert bin_index(constant, 7.0) == 0 and bin_index(constant, -3) == 0


def test_normalize_category_makes_types_agree() -> None:
    assert normalize_category(1) == normalize_category(1.0) == normalize_category("1") == "1"
    assert normalize_category(np.int64(3)) == "3"
    assert normalize_category(2.5) == "2.5"
    assert normalize_category(None) is None
    assert normalize_category(float("nan")) is None
    assert normalize_category(True) == "true"
    for v in (True, 1, 1.0, "true", "True", "yes", "1"):
        assert normalize_category(v, boolean=True) == "true"
    for v in (False, 0, "false", "NO", "0"):
        assert normalize_category(v, boolean=True) == "false"


def test_categorical_profile_caps_categories_and_keeps_other() -> None:
    counts = {f"c{i:03d}": 1000 - i for i in range(120)}
    p = categorical_profile_from_counts(counts, missing=10, max_categories=50)
    assert len(p.proportions) == 51
    assert OTHER in p.proportions
    assert p.distinct == 120
    assert sum(p.proportions.values()) == pytest.approx(1.0)
    kept = [k for k in p.proportions if k != OTHER]
    assert kept[0] == "c000" and "c049" in kept and "c050" not in kept
    assert p.proportions[OTHER] == pytest.approx(sum(1000 - i for i in range(50, 120)) / sum(counts.values()))
    assert p.missingFraction == pytest.approx(10 / (sum(counts.values()) + 10))
    assert category_key(p, "c003") == "c003"
    assert category_key(p, "c100") == OTHER  # seen in training but beyond the cap
    assert category_key(p, "never-seen") == OTHER
    assert category_key(p, None) is None


def test_categorical_profile_from_values_and_counts() -> None:
    p = categorical_profile(["a", "b", "a", None, 1, 1.0])
    assert p.proportions["a"] == pytest.approx(2 / 5)
    assert p.proportions["1"] == pytest.approx(2 / 5)
    assert p.proportions[OTHER] == 0.0
    assert p.missingFraction == pytest.approx(1 / 6)
    counts = category_counts(p, ["a", "z", None, "b", 1])
    assert dict(zip(p.keys(), counts.tolist(), strict=True)) == {"a": 1, "1": 1, "b": 1, OTHER: 1}
    b = categorical_profile([True, False, True, "yes"], boolean=True)
    assert b.boolean
    assert b.proportions["true"] == pytest.approx(0.75)
    assert category_key(b, 1) == "true"
    assert category_key(b, "False") == "false"


def test_psi_properties() -> None:
    e = np.array([0.25, 0.25, 0.25, 0.25])
    assert psi(e, e) == pytest.approx(0.0)
    assert psi(e, [100, 100, 100, 100]) == pytest.approx(0.0)  # counts are normalised
    assert psi(e, [0, 0, 0, 0]) != psi(e, [0, 0, 0, 0])  # NaN: no data is not "no drift"
    assert math.isnan(psi(e, [0, 0, 0, 0]))
    assert psi(e, [1, 0, 0, 0]) > 1  # an empty bucket is large but finite
    assert math.isfinite(psi(e, [1, 0, 0, 0]))
    with pytest.raises(ValueError, match="aligned"):
        psi(e, [1, 2])


def test_psi_same_distribution_is_near_zero(rng: np.random.Generator) -> None:
    p = numeric_profile(rng.normal(0, 1, 50_000))
    assert feature_psi(p, rng.normal(0, 1, 5000)) < 0.02


def test_psi_shifted_mean_exceeds_threshold(rng: np.random.Generator) -> None:
    p = numeric_profile(rng.normal(0, 1, 50_000))
    assert feature_psi(p, rng.normal(0.75, 1, 5000)) > DRIFT_THRESHOLD
    assert feature_psi(p, rng.normal(0.1, 1, 5000)) < DRIFT_THRESHOLD


def test_psi_new_category_exceeds_threshold(rng: np.random.Generator) -> None:
    train = rng.choice(["red", "green", "blue"], size=10_000, p=[0.5, 0.3, 0.2])
    p = categorical_profile(train.tolist())
    same = rng.choice(["red", "green", "blue"], size=2000, p=[0.5, 0.3, 0.2]).tolist()
    assert feature_psi(p, same) < 0.02
    # A third of live traffic is a colour never seen in training: it lands in __other__.
    shifted = same[:1400] + ["purple"] * 600
    assert feature_psi(p, shifted) > DRIFT_THRESHOLD


def test_profile_json_round_trip(rng: np.random.Generator) -> None:
    profile = Profile(
        rows=100,
        features={"x": numeric_profile(rng.normal(size=100)), "c": categorical_profile(["a", "b", "a"])},
        target=categorical_profile([0, 1, 1]),
        targetName="y",
    )
    again = Profile.model_validate_json(profile.model_dump_json())
    assert isinstance(again.features["x"], NumericProfile)
    assert isinstance(again.features["c"], CategoricalProfile)
    assert again == profile
    # Unknown fields from a newer writer are ignored rather than fatal.
    data = profile.model_dump(mode="json")
    data["futureField"] = 1
    data["features"]["x"]["futureField"] = 2
    assert Profile.model_validate(data).features["x"] == profile.features["x"]


def test_drift_check_scores_every_feature_of_100k_rows_by_20(rng: np.random.Generator) -> None:
    # Its speed is a benchmark (bench/bench_drift.py, a ratio against Evidently in the same run), not a timed test.
    train = rng.normal(size=(50_000, 20))
    profiles = [numeric_profile(train[:, j]) for j in range(20)]
    live = rng.normal(0.2, 1, size=(100_000, 20))
    scores = [psi(expected_proportions(p), bin_counts(p, live[:, j])) for j, p in enumerate(profiles)]
    assert len(scores) == 20 and all(s > 0 for s in scores)


def test_large_columns_take_inner_edges_from_a_sample_and_everything_else_exactly(rng: np.random.Generator) -> None:
    values = rng.lognormal(0, 1, EXACT_QUANTILE_LIMIT * 4)
    values[rng.random(values.size) < 0.05] = np.nan
    p = numeric_profile(values)
    present = values[~np.isnan(values)]
    # Outer edges, moments and the share of each bin are exact over every value...
    assert p.edges[0] == p.min == present.min() and p.edges[-1] == p.max == present.max()
    assert p.count == present.size and p.missingFraction == pytest.approx(np.isnan(values).mean())
    assert p.mean == pytest.approx(present.mean(), rel=1e-12) and p.std == pytest.approx(present.std(), rel=1e-12)
    assert np.array_equal(np.round(np.array(p.proportions) * p.count), bin_counts(p, values))
    # ...while the inner edges are sample quantiles, within a fraction of a percentile of the exact ones.
    ranks = np.searchsorted(np.sort(present), p.edges[1:-1]) / present.size
    assert np.abs(ranks - np.linspace(0.1, 0.9, 9)).max() < 0.005
    # The sample is drawn with a fixed seed: the same data always gives the same profile.
    assert numeric_profile(values.copy()) == p


def test_small_columns_use_exact_quantiles(rng: np.random.Generator) -> None:
    values = rng.normal(size=EXACT_QUANTILE_LIMIT)
    p = numeric_profile(values)
    assert np.array_equal(p.edges, np.unique(np.quantile(values, np.linspace(0, 1, 11))))
