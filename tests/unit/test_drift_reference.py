"""The drift check's PSI cross-checked against a reference implementation: Evidently's PSI stat test.

Our side runs the real path: ``build_profile`` (the validation Job) -> the inference server's per-bucket
counters (``ServingMetrics``, fed in micro-batches) -> its ``/metrics`` exposition -> the operator's ``parse`` ->
``check_drift`` over one window (per-feature PSI on the profile's buckets, share of drifted features).

Evidently's PSI stat test (``evidently.legacy.calculations.stattests.psi``) bins by its own rule: a numeric
column with more than 20 distinct values gets ``np.histogram`` bins from Sturges' rule over reference + current
together, while ours uses the training profile's deciles fixed at validation time (the server cannot see the
reference data). Given raw numbers the two PSIs therefore measure different histograms and only the verdicts can
be compared (bench/bench_drift.py does that at scale). To compare the *values*, Evidently is given the same
binning: every row is replaced by the label of the profile bucket it falls in (decile index, category key,
``__other__``, or ``__missing__``) and those columns are declared categorical, for which Evidently counts one
bin per distinct value. With the same bins both compute ``sum((cur - ref) * ln(cur / ref))`` over proportions
and put an empty bucket at 1e-4 (Evidently replaces zeros with 1e-4 when every non-zero share is above 1e-4,
which the sizes here guarantee; we floor at 1e-4). Buckets empty on both sides are absent on Evidently's side
and add 0 on ours. The thresholds differ only at equality (Evidently drifts at ``psi >= t``, we at ``psi > t``),
which the cases here stay clear of; both call the dataset drifted when ``share >= driftedShare``.
"""

from __future__ import annotations

import importlib
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest


def _import_evidently() -> Any:
    # Evidently 0.7.23 (the newest release) imports pandas.core.dtypes.common.infer_dtype_from_object at import
    # time, which pandas 3 removed. Only its column-type data-integrity test calls it (not used here), so a
    # stand-in that refuses to run lets the rest import under our pinned pandas.
    common = importlib.import_module("pandas.core.dtypes.common")
    if not hasattr(common, "infer_dtype_from_object"):
        def infer_dtype_from_object(dtype: Any) -> Any:
            raise NotImplementedError("removed in pandas 3; not used by the drift stat tests")

        common.infer_dtype_from_object = infer_dtype_from_object  # type: ignore[attr-defined]
    return importlib.import_module("evidently")  # the test extra installs the drift-check extra


_import_evidently()

from evidently.legacy.metric_preset import DataDriftPreset  # noqa: E402
from evidently.legacy.pipeline.column_mapping import ColumnMapping  # noqa: E402
from evidently.legacy.report import Report  # noqa: E402

from kultivar.api.deployment import Monitoring  # noqa: E402
from kultivar.domain.drift import check_drift, feature_psi  # noqa: E402
from kultivar.domain.metrics import parse  # noqa: E402
from kultivar.domain.profile import OTHER, NumericProfile, Profile, bin_indices, category_key  # noqa: E402
from kultivar.serving.monitoring import MISSING, ServingMetrics  # noqa: E402
from kultivar.serving.payload import FeatureSpec, Rows  # noqa: E402
from kultivar.workloads.profiling import build_profile  # noqa: E402

THRESHOLD, SHARE = 0.2, 0.5
MON = Monitoring(threshold=THRESHOLD, driftedShare=SHARE, minSamples=100, window="10m")
T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
FEATURES = [FeatureSpec("income", "numeric"), FeatureSpec("age", "numeric"), FeatureSpec("score", "numeric"),
            FeatureSpec("plan", "categorical"), FeatureSpec("member", "boolean")]
PLANS = np.array(["free", "basic", "plus", "pro"], dtype=object)
BATCH = 64  # the server counts per micro-batch


def frame(rows: int, seed: int, *, income_shift: float = 0.0, age_scale: float = 1.0, score_missing: float = 0.02,
          plans: np.ndarray = PLANS, plan_p: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1), member_p: float = 0.3
          ) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    score = rng.gamma(2.0, 1.5, rows)
    score[rng.random(rows) < score_missing] = np.nan
    return pd.DataFrame({
        "income": rng.lognormal(10 + income_shift, 0.5, rows),
        "age": 40 + 12 * age_scale * rng.standard_normal(rows),
        "score": score,
        "plan": rng.choice(plans, rows, p=plan_p),
        "member": rng.random(rows) < member_p,
    })


TRAIN = frame(20_000, seed=1)
PROFILE = build_profile(TRAIN, [{"name": f.name, "type": f.type} for f in FEATURES])

CASES = {
    # name: (live data, features expected past the threshold)
    "same distribution": (frame(5_000, seed=2), set()),
    "income shifted, age wider": (frame(5_000, seed=3, income_shift=0.6, age_scale=1.8), {"income", "age"}),
    "most features moved": (frame(5_000, seed=4, income_shift=-0.5, score_missing=0.35,
                                  plans=np.array(["free", "basic", "plus", "enterprise"], dtype=object),
                                  plan_p=(0.1, 0.2, 0.3, 0.4), member_p=0.7),
                            {"income", "score", "plan", "member"}),
}


def kultivar_check(live: pd.DataFrame) -> tuple[dict[str, float], bool, float]:
    """Per-feature PSI, the dataset verdict and the drifted share, as the server and operator compute them."""
    metrics = ServingMetrics("shop", "1", "sha256:" + "0" * 64)
    metrics.bind_model(FEATURES, "classification", [0, 1], PROFILE, drift_accounting=True)
    before = parse(metrics.exposition().decode())
    columns: list[np.ndarray] = []
    for f in FEATURES:  # what payload parsing hands the server: floats (booleans as 1.0/0.0) or text/NaN objects
        col = live[f.name]
        columns.append(col.to_numpy(dtype=np.float64) if f.type != "categorical" else col.to_numpy(dtype=object))
    for start in range(0, len(live), BATCH):
        batch = Rows(tuple(c[start:start + BATCH] for c in columns), min(BATCH, len(live) - start))
        metrics.batch(batch, np.zeros(batch.count, dtype=np.int64))
    after = parse(metrics.exposition().decode())
    opened = check_drift(MON, None, 1, before.features, after.reference, T0)
    judged = check_drift(MON, opened.status, 1, after.features, after.reference, T0 + timedelta(minutes=10))
    assert judged.evaluated and judged.status["samples"] == len(live)
    return feature_psi(after.features, after.reference), judged.drifted, judged.status["driftedShare"]


def bucket_labels(profile: Profile, data: pd.DataFrame) -> pd.DataFrame:
    """Each value replaced by the name of the profile bucket it falls in: the binning handed to Evidently."""
    out = {}
    for name, ref in profile.features.items():
        if isinstance(ref, NumericProfile):
            index = bin_indices(ref, data[name].to_numpy(dtype=np.float64))
            out[name] = np.where(index < 0, MISSING, index.astype(str)).astype(object)
        else:
            out[name] = np.array([category_key(ref, v) or MISSING for v in data[name]], dtype=object)
    return pd.DataFrame(out)


def evidently_check(live: pd.DataFrame) -> tuple[dict[str, float], dict[str, bool], bool, float]:
    report = Report(metrics=[DataDriftPreset(stattest="psi", stattest_threshold=THRESHOLD, drift_share=SHARE)])
    names = [f.name for f in FEATURES]
    report.run(reference_data=bucket_labels(PROFILE, TRAIN), current_data=bucket_labels(PROFILE, live),
               column_mapping=ColumnMapping(categorical_features=names, numerical_features=[]))
    result = next(m["result"] for m in report.as_dict()["metrics"] if m["metric"] == "DataDriftTable")
    columns = result["drift_by_columns"]
    assert {c["stattest_name"] for c in columns.values()} == {"PSI"}
    return ({n: c["drift_score"] for n, c in columns.items()}, {n: c["drift_detected"] for n, c in columns.items()},
            result["dataset_drift"], result["share_of_drifted_columns"])


@pytest.mark.parametrize("case", list(CASES))
def test_psi_and_verdicts_agree_with_evidently(case: str) -> None:
    live, expected_drifted = CASES[case]
    ours, our_verdict, our_share = kultivar_check(live)
    theirs, their_flags, their_verdict, their_share = evidently_check(live)

    assert set(ours) == set(theirs) == {f.name for f in FEATURES}
    for name in ours:
        assert abs(ours[name] - THRESHOLD) > 1e-3, f"{name}: PSI {ours[name]} too close to the threshold to compare"
        assert ours[name] == pytest.approx(theirs[name], rel=1e-9, abs=1e-12), name
    our_flags = {name: score > THRESHOLD for name, score in ours.items()}
    assert our_flags == their_flags
    assert {name for name, drifted in our_flags.items() if drifted} == expected_drifted
    assert our_share == pytest.approx(their_share, abs=1e-4)
    assert our_verdict == their_verdict == (len(expected_drifted) / len(FEATURES) >= SHARE)


def test_unseen_categories_are_one_bucket_on_both_sides() -> None:
    # Categories never seen in training all land in __other__ (reference share 0, floored at 1e-4 on both sides).
    live = frame(5_000, seed=5, plans=np.array(["free", "gold", "silver", "bronze"], dtype=object))
    assert {category_key(PROFILE.features["plan"], v) for v in ("gold", "silver")} == {OTHER}  # type: ignore[arg-type]
    ours, *_ = kultivar_check(live)
    theirs, flags, *_ = evidently_check(live)
    assert ours["plan"] == pytest.approx(theirs["plan"], rel=1e-9) and ours["plan"] > 1 and flags["plan"]
