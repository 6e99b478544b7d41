"""The paired bootstrap: point values against sklearn, per-resample values against a direct loop over the same
indices, intervals against scipy.stats.bootstrap(paired=True, method="percentile")."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps
from sklearn import metrics as skm

from kultivar.domain.stats import bootstrap_differences, bootstrap_indices, paired_bootstrap_difference, score


def _classification(n: int = 400, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.choice(np.array(["setosa", "versicolor", "virginica"]), size=n, p=[0.5, 0.3, 0.2])
    noise = rng.choice(np.array(["setosa", "versicolor", "virginica"]), size=n)
    a = np.where(rng.random(n) < 0.85, y, noise)
    b = np.where(rng.random(n) < 0.7, y, noise)
    return y, a, b


def _regression(n: int = 400, seed: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.normal(10, 3, n)
    return y, y + rng.normal(0, 1.0, n), y + rng.normal(0.3, 1.3, n)


def _binary_scores(n: int = 400, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    # Rounded so that ties occur: AUC counts them half, as sklearn does.
    return y, np.round(y + rng.normal(0, 1, n), 1), np.round(y + rng.normal(0, 1.5, n), 1)


def _sklearn(metric: str, y: np.ndarray, p: np.ndarray, labels: list | None = None, pos_label=None) -> float:
    if metric == "accuracy":
        return float(skm.accuracy_score(y, p))
    if metric in ("f1", "precision", "recall"):
        fn = {"f1": skm.f1_score, "precision": skm.precision_score, "recall": skm.recall_score}[metric]
        if pos_label is not None:
            return float(fn(y, p, pos_label=pos_label, average="binary", zero_division=0))
        return float(fn(y, p, labels=labels, average="macro", zero_division=0))
    if metric == "roc_auc":
        return float(skm.roc_auc_score(y, p))
    if metric == "mae":
        return float(skm.mean_absolute_error(y, p))
    if metric == "rmse":
        return float(np.sqrt(skm.mean_squared_error(y, p)))
    return float(skm.r2_score(y, p))


@pytest.mark.parametrize("metric", ["accuracy", "f1", "precision", "recall", "roc_auc", "mae", "rmse", "r2"])
def test_point_values_match_sklearn(metric: str) -> None:
    if metric in ("mae", "rmse", "r2"):
        y, a, b = _regression()
    elif metric == "roc_auc":
        y, a, b = _binary_scores()
    else:
        y, a, b = _classification()
    result = paired_bootstrap_difference(y, a, b, metric, n_resamples=50)
    assert result.value_a == pytest.approx(_sklearn(metric, y, a), abs=1e-12)
    assert result.value_b == pytest.approx(_sklearn(metric, y, b), abs=1e-12)
    assert result.estimate == pytest.approx(result.value_a - result.value_b, abs=1e-15)


def test_binary_pos_label_and_multiclass_roc_auc_match_sklearn() -> None:
    y, a, _ = _binary_scores()
    ya = (a > 0.5).astype(int)
    for metric in ("f1", "precision", "recall"):
        assert score(metric, y, ya, pos_label=1) == pytest.approx(_sklearn(metric, y, ya, pos_label=1), abs=1e-12)
    rng = np.random.default_rng(4)
    y3 = rng.integers(0, 3, 300)
    proba = rng.dirichlet([1, 1, 1], 300) + np.eye(3)[y3] * 0.5
    proba /= proba.sum(axis=1, keepdims=True)
    expected = skm.roc_auc_score(y3, proba, multi_class="ovr", average="macro")
    assert score("roc_auc", y3, proba, labels=[0, 1, 2]) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("metric", ["accuracy", "f1", "precision", "recall", "roc_auc", "mae", "rmse", "r2"])
def test_each_resample_equals_a_direct_computation_on_the_same_indices(metric: str) -> None:
    if metric in ("mae", "rmse", "r2"):
        y, a, b = _regression(n=150)
    elif metric == "roc_auc":
        y, a, b = _binary_scores(n=150)
    else:
        y, a, b = _classification(n=150)
    indices = np.vstack(list(bootstrap_indices(len(y), 40, seed=7)))
    # Label sets for macro averages are fixed on all rows, so every resample averages over the same labels.
    labels_a, labels_b = sorted(set(y) | set(a)), sorted(set(y) | set(b))
    direct = np.array([_sklearn(metric, y[i], a[i], labels_a) - _sklearn(metric, y[i], b[i], labels_b)
                       for i in indices])
    vectorised = bootstrap_differences(y, a, b, metric, indices)
    # The same quantity summed in another order: equal up to floating-point rounding.
    np.testing.assert_allclose(vectorised, direct, rtol=0, atol=1e-12)


def test_binary_and_ovr_resamples_match_direct_computation() -> None:
    y, a, b = _binary_scores(n=120)
    ya, yb = (a > 0.5).astype(int), (b > 0.5).astype(int)
    indices = np.vstack(list(bootstrap_indices(len(y), 40, seed=8)))
    direct = [_sklearn("f1", y[i], ya[i], pos_label=1) - _sklearn("f1", y[i], yb[i], pos_label=1) for i in indices]
    np.testing.assert_allclose(bootstrap_differences(y, ya, yb, "f1", indices, pos_label=1), direct, atol=1e-12)
    rng = np.random.default_rng(9)
    y3 = rng.integers(0, 3, 200)
    pa, pb = (rng.dirichlet([1, 1, 1], 200) + np.eye(3)[y3] * w for w in (0.6, 0.2))
    pa, pb = pa / pa.sum(axis=1, keepdims=True), pb / pb.sum(axis=1, keepdims=True)  # sklearn wants probabilities
    indices = np.vstack(list(bootstrap_indices(200, 30, seed=10)))
    direct = [skm.roc_auc_score(y3[i], pa[i], multi_class="ovr") - skm.roc_auc_score(y3[i], pb[i], multi_class="ovr")
              for i in indices]
    got = bootstrap_differences(y3, pa, pb, "roc_auc", indices, labels=[0, 1, 2])
    np.testing.assert_allclose(got, direct, atol=1e-12)


def _vectorised_reference(metric: str, labels_a: list, labels_b: list):
    """The statistic written independently of Kultivar's code, vectorised over scipy's resample axis."""

    def macro_f1(yy: np.ndarray, pp: np.ndarray, labels: list, axis: int) -> np.ndarray:
        per_label = []
        for label in labels:
            tp = ((yy == label) & (pp == label)).sum(axis=axis)
            den = (pp == label).sum(axis=axis) + (yy == label).sum(axis=axis)
            per_label.append(np.where(den > 0, 2 * tp / np.maximum(den, 1), 0.0))
        return np.mean(per_label, axis=0)

    def auc(yy: np.ndarray, ss: np.ndarray, axis: int) -> np.ndarray:  # Mann-Whitney U with mid-ranks
        ranks = sps.rankdata(ss, axis=axis)
        n_pos = (yy == 1).sum(axis=axis)
        n_neg = yy.shape[axis] - n_pos
        return ((ranks * (yy == 1)).sum(axis=axis) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)

    def statistic(yy: np.ndarray, aa: np.ndarray, bb: np.ndarray, axis: int = -1) -> np.ndarray:
        if metric == "accuracy":
            return (yy == aa).mean(axis=axis) - (yy == bb).mean(axis=axis)
        if metric == "mae":
            return np.abs(aa - yy).mean(axis=axis) - np.abs(bb - yy).mean(axis=axis)
        if metric == "f1":
            return macro_f1(yy, aa, labels_a, axis) - macro_f1(yy, bb, labels_b, axis)
        return auc(yy, aa, axis) - auc(yy, bb, axis)

    return statistic


@pytest.mark.parametrize("metric", ["accuracy", "f1", "mae", "roc_auc"])
def test_interval_agrees_with_scipy_bootstrap(metric: str) -> None:
    if metric == "mae":
        y, a, b = _regression(n=300)
    elif metric == "roc_auc":
        y, a, b = _binary_scores(n=300)
    else:
        y, a, b = _classification(n=300)
    ours = paired_bootstrap_difference(y, a, b, metric, n_resamples=4000, seed=5)
    # scipy resamples the rows; our count metrics draw the equivalent multinomial counts, so equal in distribution.
    reference = _vectorised_reference(metric, sorted(set(y) | set(a)), sorted(set(y) | set(b)))
    res = sps.bootstrap((y, a, b), reference, paired=True, vectorized=True, method="percentile", n_resamples=4000,
                        confidence_level=0.95, rng=np.random.default_rng(123))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    assert reference(y, a, b) == pytest.approx(ours.estimate, abs=1e-12)
    # Monte-Carlo error of a 2.5 % quantile from 4000 resamples is about 1.3 % of the width, per side.
    width = high - low
    assert ours.low == pytest.approx(low, abs=0.08 * width), (ours, low, high)
    assert ours.high == pytest.approx(high, abs=0.08 * width), (ours, low, high)


def test_reproducible_for_a_seed_and_records_what_it_did() -> None:
    y, a, b = _regression()
    first = paired_bootstrap_difference(y, a, b, "rmse", n_resamples=500, seed=11, confidence=0.9)
    assert first == paired_bootstrap_difference(y, a, b, "rmse", n_resamples=500, seed=11, confidence=0.9)
    assert first != paired_bootstrap_difference(y, a, b, "rmse", n_resamples=500, seed=12, confidence=0.9)
    assert (first.n_rows, first.n_resamples, first.seed, first.confidence) == (400, 500, 11, 0.9)
    assert first.method == "percentile paired bootstrap"
    assert first.wire()["metric"] == "rmse"
    yc, ac, bc = _classification()
    assert (paired_bootstrap_difference(yc, ac, bc, "f1", n_resamples=300, seed=3)
            == paired_bootstrap_difference(yc, ac, bc, "f1", n_resamples=300, seed=3))


def test_sign_convention_for_error_metrics() -> None:
    y, a, b = _regression()  # a has the smaller errors
    mae = paired_bootstrap_difference(y, a, b, "mae")
    assert mae.estimate < 0 and mae.high < 0 and mae.a_better
    assert not paired_bootstrap_difference(y, b, a, "mae").a_better
    r2 = paired_bootstrap_difference(y, a, b, "r2")
    assert r2.estimate > 0 and r2.low > 0 and r2.a_better


def test_identical_models_never_significant() -> None:
    y, a, _ = _classification()
    tie = paired_bootstrap_difference(y, a, a, "accuracy")
    assert (tie.estimate, tie.low, tie.high) == (0.0, 0.0, 0.0)
    assert not tie.a_better


def test_bad_input_is_refused_with_a_message() -> None:
    y, a, b = _classification()
    with pytest.raises(ValueError, match="same rows"):
        paired_bootstrap_difference(y, a[:-1], b, "accuracy")
    with pytest.raises(ValueError, match="unknown metric"):
        paired_bootstrap_difference(y, a, b, "auc")
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap_difference(y, a, b, "accuracy", confidence=95)
    with pytest.raises(ValueError, match="pos_label"):
        paired_bootstrap_difference(y, a, b, "f1", pos_label="daisy")


@pytest.mark.parametrize("values", [
    np.array([5, 3, 3, -2, 9, 5]),                 # small integers: counted
    np.array([True, False, True]),                 # booleans: counted
    np.array([0, 10**12, 7]),                      # a wide range: sorted by np.unique
    np.array(["b", "a", "b"], dtype=object),       # text: sorted by np.unique
    np.array([2.5, 1.0, 2.5]),                     # floats: sorted by np.unique
])
def test_unique_inverse_is_numpys_unique(values: np.ndarray) -> None:
    from kultivar.domain.stats.metrics import unique_inverse

    found, inverse, counts = unique_inverse(values)
    expected, expected_inverse, expected_counts = np.unique(values, return_inverse=True, return_counts=True)
    assert found.tolist() == expected.tolist() and found.dtype == expected.dtype
    assert inverse.tolist() == expected_inverse.tolist() and counts.tolist() == expected_counts.tolist()
