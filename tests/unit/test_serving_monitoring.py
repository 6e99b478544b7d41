"""Input accounting: a micro-batch of a few rows (counted per value) lands in the same buckets as a large one
(counted with numpy)."""

from __future__ import annotations

import numpy as np

from kultivar.domain.profile import Profile, categorical_profile, numeric_profile
from kultivar.serving.monitoring import ServingMetrics
from kultivar.serving.payload import FeatureSpec, Rows

FEATURES = [FeatureSpec("x", "numeric"), FeatureSpec("plan", "categorical"), FeatureSpec("member", "boolean")]


def profile() -> Profile:
    rng = np.random.default_rng(3)
    return Profile(rows=500, features={
        "x": numeric_profile(rng.normal(0, 1, 500)),
        "plan": categorical_profile(rng.choice(["basic", "pro", "plus"], 500).tolist()),
        "member": categorical_profile(rng.choice([True, False], 500).tolist(), boolean=True),
    })


def rows(n: int) -> Rows:
    rng = np.random.default_rng(4)
    x = rng.normal(0, 1.5, n)
    x[::7] = np.nan
    x[1] = np.inf
    x[2] = -np.inf
    plan = rng.choice(np.array(["basic", "pro", "enterprise", "2"], dtype=object), n)
    plan[::5] = np.nan
    member = rng.choice(np.array([0.0, 1.0, np.nan]), n)
    return Rows((x, plan, member), n)


def test_small_batches_count_like_large_ones() -> None:
    whole, singles = (ServingMetrics("m", "1", "sha256:x") for _ in range(2))
    for metrics in (whole, singles):
        metrics.bind_model(FEATURES, "classification", ["no", "yes"], profile(), drift_accounting=True)
    data = rows(400)
    labels = np.array(["yes", "no"] * 200, dtype=object)
    whole.batch(data, labels)
    for i in range(data.count):
        singles.batch(Rows(tuple(c[i:i + 1] for c in data.columns), 1), labels[i:i + 1])

    def buckets(metrics: ServingMetrics) -> dict[tuple[str, ...], float]:
        text = metrics.exposition().decode()
        return {tuple(line.split(" ")[:-1]): float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith(("kultivar_feature_bucket_total", "kultivar_predictions_total"))}

    counted = buckets(whole)
    assert counted == buckets(singles)
    assert sum(v for k, v in counted.items() if k[0].startswith("kultivar_predictions_total")) == 400


def test_numeric_matrix_rows_count_like_columns() -> None:
    """Rows parsed as one numeric matrix take the per-row path for a few rows and numpy for many: same buckets."""
    features = [FeatureSpec("x", "numeric"), FeatureSpec("member", "boolean")]
    rng = np.random.default_rng(5)
    reference = Profile(rows=500, features={
        "x": numeric_profile(rng.normal(0, 1, 500)),
        "member": categorical_profile(rng.choice([True, False], 500).tolist(), boolean=True),
    })
    data = rows(400)
    matrix = np.column_stack([data.columns[0], data.columns[2]])
    labels = np.array([0, 1, 2, 1] * 100)
    by_columns, by_matrix, in_threes = (ServingMetrics("m", "1", "sha256:x") for _ in range(3))
    for metrics in (by_columns, by_matrix, in_threes):
        metrics.bind_model(features, "classification", [0, 1, 2], reference, drift_accounting=True)
    by_columns.batch(Rows((matrix[:, 0].copy(), matrix[:, 1].copy()), 400), labels)
    by_matrix.batch(Rows.of_matrix(matrix), labels)
    for start in range(0, 400, 3):
        in_threes.batch(Rows.of_matrix(matrix[start:start + 3]), labels[start:start + 3])

    def buckets(metrics: ServingMetrics) -> dict[tuple[str, ...], float]:
        text = metrics.exposition().decode()
        return {tuple(line.split(" ")[:-1]): float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith(("kultivar_feature_bucket_total", "kultivar_predictions_total"))}

    counted = buckets(by_columns)
    assert counted == buckets(by_matrix) == buckets(in_threes)
    assert sum(v for k, v in counted.items() if k[0].startswith("kultivar_feature_bucket_total")) == 800


def test_batches_past_the_pending_bound_are_all_counted() -> None:
    """Batches are counted many at a time (PENDING_ROWS at most wait): whether counted on the way or at the scrape,
    every row lands once."""
    from kultivar.serving.monitoring import PENDING_ROWS

    features = [FeatureSpec("x", "numeric")]
    reference = Profile(rows=500, features={"x": numeric_profile(np.random.default_rng(6).normal(0, 1, 500))})
    values = np.random.default_rng(7).normal(0, 1.2, PENDING_ROWS * 2 + 37).reshape(-1, 1)
    labels = np.arange(len(values)) % 2
    whole, singles = (ServingMetrics("m", "1", "sha256:x") for _ in range(2))
    for metrics in (whole, singles):
        metrics.bind_model(features, "classification", [0, 1], reference, drift_accounting=True)
    whole.batch(Rows.of_matrix(values), labels)
    for i in range(len(values)):
        singles.batch(Rows.of_matrix(values[i:i + 1]), labels[i:i + 1])

    def samples(metrics: ServingMetrics) -> list[str]:
        return [line for line in metrics.exposition().decode().splitlines()
                if line.startswith(("kultivar_feature_bucket_total", "kultivar_predictions_total"))]

    assert samples(whole) == samples(singles)
    assert sum(float(line.rsplit(" ", 1)[1]) for line in samples(singles)
               if line.startswith("kultivar_predictions_total")) == len(values)
