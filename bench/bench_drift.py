"""Benchmark: Kultivar's drift check against Evidently's data-drift computation, on the same data in one run.

Generates a reference (training) set and a live window, by default 100k rows x 20 features each (17 numeric, three
with a few gaps; 2 categorical; 1 boolean). In the live window 5 numeric features are shifted by one standard
deviation, 1 numeric feature has twice the spread and 1 categorical feature has another mix: 7 of 20 features
drifted, past the default ``driftedShare`` 0.3. Both sides judge it with PSI, a per-feature threshold of 0.2 and a
dataset share of 0.3, and the verdicts (per feature and for the dataset) are compared.

What each side's clock includes:

* Kultivar, per check: the inference server's accounting of every live row into the training profile's buckets
  (``ServingMetrics.batch``, the call the server makes per predict batch; it also keeps the batch-size histogram
  and the class counts), the ``/metrics`` exposition, the operator's parse of that scrape, and ``check_drift``
  (window delta against the previous scrape, PSI per feature, drifted share, verdict). The whole window is
  counted in one call by default; ``--batch-rows`` counts it in server-sized micro-batches instead, and the run
  always reports that variant (32 rows) too. Not counted: the training profile, built once per data version by
  the validation Job (its time is printed).
* Evidently 0.7 (``evidently.Report`` with ``DataDriftPreset(method="psi")`` and its tests, which carry the
  per-column and dataset verdicts): everything it does per report on the two raw DataFrames (reference and
  current): column handling, Sturges binning over both samples, PSI per column, drifted share, the tests.
  The legacy ``evidently.legacy`` preset and the bare PSI stat test per column (binning + PSI only, no report)
  are timed too; the goal ratio is taken against the fastest *preset*, the bare stat test is shown for scale.
  Not counted: importing Evidently and one warm-up report on a small slice.

The PSI values differ between the sides by design (training-profile deciles vs Sturges bins over both samples;
tests/unit/test_drift_reference.py shows they agree exactly given the same bins); the verdicts must not.

    python bench/bench_drift.py                 # 100k rows x 20 features, median of 3 runs
    python bench/bench_drift.py --rows 1000000 --repeat 1
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from kultivar.api.deployment import Monitoring
from kultivar.domain.drift import check_drift, feature_psi
from kultivar.domain.metrics import parse
from kultivar.domain.profile import Profile
from kultivar.serving.monitoring import ServingMetrics
from kultivar.serving.payload import FeatureSpec, Rows
from kultivar.workloads.profiling import build_profile

GOAL = 20.0
NUMERIC = 17
THRESHOLD, SHARE = 0.2, 0.3
SHIFTED = [f"x{i:02d}" for i in range(3, 8)]  # mean + 1 sd
WIDER = "x08"  # twice the standard deviation
MIXED = "tier"  # another category mix
DRIFTED = {*SHIFTED, WIDER, MIXED}
SERVER_BATCH = 32
FEATURES = [FeatureSpec(f"x{i:02d}", "numeric") for i in range(NUMERIC)] + [
    FeatureSpec("region", "categorical"), FeatureSpec("tier", "categorical"), FeatureSpec("member", "boolean")]
MONITORING = Monitoring(threshold=THRESHOLD, driftedShare=SHARE, minSamples=200, window="10m")


def generate(rows: int, seed: int, drift: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, NUMERIC))
    if drift:
        for name in SHIFTED:
            x[:, int(name[1:])] += 1.0
        x[:, int(WIDER[1:])] *= 2.0
    x[:, :3][rng.random((rows, 3)) < 0.02] = np.nan  # a few features with gaps, as real data has
    tier_p = [0.1, 0.2, 0.3, 0.4] if drift else [0.4, 0.3, 0.2, 0.1]
    data: dict[str, Any] = {f"x{i:02d}": x[:, i] for i in range(NUMERIC)}
    data.update(
        region=rng.choice(np.array(["north", "south", "east", "west", "centre", "islands"], dtype=object), rows),
        tier=rng.choice(np.array(["free", "basic", "plus", "pro"], dtype=object), rows, p=tier_p),
        member=rng.random(rows) < 0.3,
    )
    return pd.DataFrame(data)


def server_columns(frame: pd.DataFrame) -> list[np.ndarray]:
    """The columns as the server's payload parsing hands them over: floats (booleans 1.0/0.0), or text objects."""
    return [frame[f.name].to_numpy(dtype=object if f.type == "categorical" else np.float64) for f in FEATURES]


# ------------------------------------------------------------------------------------------------- Kultivar


def kultivar_check(profile: Profile, columns: list[np.ndarray], rows: int, batch_rows: int
                   ) -> tuple[float, dict[str, float], bool, dict[str, float]]:
    """One drift check over a window of ``rows`` rows: seconds, per-feature PSI, the verdict, seconds per step."""
    metrics = ServingMetrics("bench", "1", "sha256:" + "0" * 64)
    metrics.bind_model(FEATURES, "classification", [0, 1], profile, drift_accounting=True)
    # The previous check's scrape: the window's baseline (the operator keeps it in status.drift).
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    baseline = parse(metrics.exposition().decode())
    opened = check_drift(MONITORING, None, 1, baseline.features, baseline.reference, now)
    predictions = np.zeros(min(batch_rows, rows), dtype=np.int64)

    t0 = time.perf_counter()
    for start in range(0, rows, batch_rows):  # the server, as the window's requests arrive
        stop = min(start + batch_rows, rows)
        metrics.batch(Rows(tuple(c[start:stop] for c in columns), stop - start), predictions[:stop - start])
    t1 = time.perf_counter()
    text = metrics.exposition().decode()  # the operator's scrape of /metrics
    t2 = time.perf_counter()
    scraped = parse(text)
    judged = check_drift(MONITORING, opened.status, 1, scraped.features, scraped.reference,
                         now + timedelta(minutes=10))
    t3 = time.perf_counter()

    assert judged.evaluated and judged.status["samples"] == rows, judged.message
    # The per-feature scores check_drift judged (its status keeps only the top ten, rounded).
    scores = feature_psi(check_window(scraped.features, baseline.features), scraped.reference)
    steps = {"count rows into profile buckets (server)": t1 - t0, "/metrics exposition (server)": t2 - t1,
             "parse the scrape + check_drift (operator)": t3 - t2}
    return t3 - t0, scores, judged.drifted, steps


def check_window(current: dict[str, dict[str, float]], base: dict[str, dict[str, float]]
                 ) -> dict[str, dict[str, float]]:
    """The window's counts: the scrape at its end minus the one at its start."""
    return {f: {k: v - base.get(f, {}).get(k, 0.0) for k, v in b.items()} for f, b in current.items()}


# ------------------------------------------------------------------------------------------------- Evidently


def import_evidently() -> float:
    """Import Evidently under pandas 3; returns the seconds it took (not counted)."""
    # Evidently 0.7.23 imports pandas.core.dtypes.common.infer_dtype_from_object, which pandas 3 removed; only its
    # column-type data-integrity test calls it (not used here). See tests/unit/test_drift_reference.py.
    common = importlib.import_module("pandas.core.dtypes.common")
    if not hasattr(common, "infer_dtype_from_object"):
        def infer_dtype_from_object(dtype: Any) -> Any:
            raise NotImplementedError("removed in pandas 3; not used by the drift stat tests")

        common.infer_dtype_from_object = infer_dtype_from_object
    os.environ.setdefault("DO_NOT_TRACK", "1")
    t = time.perf_counter()
    try:
        importlib.import_module("evidently")
    except ModuleNotFoundError:
        sys.exit("Evidently is missing: pip install -c constraints.txt -e '.[bench]'")
    return time.perf_counter() - t


def _names() -> tuple[list[str], list[str]]:
    numeric = [f.name for f in FEATURES if f.type == "numeric"]
    return numeric, [f.name for f in FEATURES if f.type != "numeric"]


def evidently_preset(reference: pd.DataFrame, current: pd.DataFrame) -> tuple[dict[str, bool], bool]:
    """evidently.Report + DataDriftPreset(method="psi"): per-column and dataset verdicts from its tests."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    numeric, categorical = _names()
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    report = Report([DataDriftPreset(method="psi", threshold=THRESHOLD, drift_share=SHARE)], include_tests=True)
    result = report.run(Dataset.from_pandas(current, data_definition=definition),
                        Dataset.from_pandas(reference, data_definition=definition)).dict()
    flags, dataset = {}, None
    for test in result["tests"]:
        failed = str(test["status"]).endswith("FAIL")  # a failed drift test is a detected drift
        if test["name"].startswith("Value Drift for column "):
            flags[test["name"].removeprefix("Value Drift for column ")] = failed
        elif test["name"].startswith("Share of Drifted Columns"):
            dataset = failed
    assert dataset is not None and len(flags) == len(FEATURES), result["tests"]
    return flags, dataset


def evidently_legacy_preset(reference: pd.DataFrame, current: pd.DataFrame) -> tuple[dict[str, bool], bool]:
    """evidently.legacy Report + DataDriftPreset(stattest="psi"): drift_detected per column, dataset_drift."""
    from evidently.legacy.metric_preset import DataDriftPreset
    from evidently.legacy.pipeline.column_mapping import ColumnMapping
    from evidently.legacy.report import Report

    numeric, categorical = _names()
    report = Report(metrics=[DataDriftPreset(stattest="psi", stattest_threshold=THRESHOLD, drift_share=SHARE)])
    report.run(reference_data=reference, current_data=current,
               column_mapping=ColumnMapping(numerical_features=numeric, categorical_features=categorical))
    results = {m["metric"]: m["result"] for m in report.as_dict()["metrics"]}
    # DatasetDriftMetric carries the preset's drift_share (DataDriftTable's own dataset_drift uses 0.5).
    return ({n: c["drift_detected"] for n, c in results["DataDriftTable"]["drift_by_columns"].items()},
            results["DatasetDriftMetric"]["dataset_drift"])


def evidently_stattest(reference: pd.DataFrame, current: pd.DataFrame) -> tuple[dict[str, bool], bool,
                                                                                  dict[str, float]]:
    """Evidently's PSI stat test per column on the non-missing values (what its presets call per column)."""
    from evidently.legacy.calculations.stattests.psi import psi_stat_test
    from evidently.legacy.core import ColumnType

    flags, scores = {}, {}
    for f in FEATURES:
        kind = ColumnType.Numerical if f.type == "numeric" else ColumnType.Categorical
        result = psi_stat_test(reference[f.name].dropna(), current[f.name].dropna(), kind, THRESHOLD)
        flags[f.name], scores[f.name] = bool(result.drifted), float(result.drift_score)
    return flags, sum(flags.values()) / len(flags) >= SHARE, scores


# ------------------------------------------------------------------------------------------------------ run


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000, help="rows in the reference and in the live window "
                                                              "(default 100,000)")
    ap.add_argument("--repeat", type=int, default=3, help="runs on the same data; medians are reported")
    ap.add_argument("--batch-rows", type=int, default=0,
                    help="rows per server accounting call for the goal ratio (default 0: the whole window at once)")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")  # Evidently's deprecation and pandas warnings would bury the numbers

    t_import = import_evidently()
    print(f"generating {args.rows:,} reference rows and {args.rows:,} live rows x {len(FEATURES)} features "
          f"({len(DRIFTED)} drifted) ...", flush=True)
    reference = generate(args.rows, seed=1, drift=False)
    current = generate(args.rows, seed=2, drift=True)
    t_profile, profile = timed(lambda: build_profile(reference, [{"name": f.name, "type": f.type}
                                                                 for f in FEATURES]))
    columns = server_columns(current)
    batch_rows = args.batch_rows or args.rows

    # Warm-up (not timed): Evidently registers its metrics and stat tests lazily on first use.
    small = slice(0, min(2000, args.rows))
    evidently_preset(reference[small], current[small])
    evidently_legacy_preset(reference[small], current[small])
    kultivar_check(profile, [c[small] for c in columns], len(current[small]), batch_rows)

    ours_t: list[float] = []
    ours_batched_t: list[float] = []
    steps: dict[str, list[float]] = {}
    preset_t: list[float] = []
    legacy_t: list[float] = []
    bare_t: list[float] = []
    for attempt in range(1, args.repeat + 1):
        seconds, scores, drifted, step_times = kultivar_check(profile, columns, args.rows, batch_rows)
        ours_t.append(seconds)
        for step, s in step_times.items():
            steps.setdefault(step, []).append(s)
        seconds_batched, *_ = kultivar_check(profile, columns, args.rows, SERVER_BATCH)
        ours_batched_t.append(seconds_batched)
        seconds, (preset_flags, preset_drift) = timed(lambda: evidently_preset(reference, current))
        preset_t.append(seconds)
        seconds, (legacy_flags, legacy_drift) = timed(lambda: evidently_legacy_preset(reference, current))
        legacy_t.append(seconds)
        seconds, (bare_flags, bare_drift, bare_scores) = timed(lambda: evidently_stattest(reference, current))
        bare_t.append(seconds)
        print(f"run {attempt}/{args.repeat}: kultivar {ours_t[-1]:.4f}s ({SERVER_BATCH}-row batches "
              f"{ours_batched_t[-1]:.4f}s), evidently preset {preset_t[-1]:.3f}s, legacy preset "
              f"{legacy_t[-1]:.3f}s, stat test {bare_t[-1]:.3f}s", flush=True)

    ours_flags = {name: score > THRESHOLD for name, score in scores.items()}
    print()
    print(f"{'feature':<8} {'kultivar PSI':>12} {'evidently PSI':>14}   drifted: kultivar / evidently preset / "
          "legacy preset / stat test")
    for f in FEATURES:
        n = f.name
        marks = " / ".join("yes" if flags[n] else "no" for flags in (ours_flags, preset_flags, legacy_flags,
                                                                     bare_flags))
        print(f"{n:<8} {scores[n]:>12.4f} {bare_scores[n]:>14.4f}   {marks}")
    print("(PSI on training-profile deciles vs Evidently's Sturges bins over both samples: values differ by design)")

    agree = ours_flags == preset_flags == legacy_flags == bare_flags and \
        drifted == preset_drift == legacy_drift == bare_drift
    expected = {name for name, flag in ours_flags.items() if flag} == DRIFTED
    ours, ours_batched = statistics.median(ours_t), statistics.median(ours_batched_t)
    preset, legacy, bare = (statistics.median(x) for x in (preset_t, legacy_t, bare_t))
    fastest = min(preset, legacy)
    ratio = fastest / ours
    counted = "whole window in one call" if batch_rows >= args.rows else f"{batch_rows}-row batches"
    print()
    print("median seconds per check:")
    print(f"  kultivar, {counted:<38} {ours:>9.4f}")
    for step, seconds in steps.items():
        print(f"    {step:<44} {statistics.median(seconds):>9.4f}")
    print(f"  kultivar, {f'{SERVER_BATCH}-row server batches':<38} {ours_batched:>9.4f}")
    print(f"  {'evidently DataDriftPreset (evidently.Report)':<48} {preset:>9.4f}")
    print(f"  {'evidently legacy DataDriftPreset':<48} {legacy:>9.4f}")
    print(f"  {'evidently PSI stat test alone (no report)':<48} {bare:>9.4f}")
    print(f"rows                 {args.rows:>9,} reference + {args.rows:,} live, {len(FEATURES)} features")
    print(f"training profile     {t_profile:>9.3f} s   once per data version, not counted")
    print(f"evidently import     {t_import:>9.3f} s   not counted")
    print(f"dataset verdict      kultivar {'drifted' if drifted else 'no drift'}; evidently preset "
          f"{'drifted' if preset_drift else 'no drift'}, legacy {'drifted' if legacy_drift else 'no drift'}, "
          f"stat test {'drifted' if bare_drift else 'no drift'}")
    print(f"verdicts agree       {'yes' if agree else 'NO'} (20 features and the dataset; Kultivar "
          f"{'found' if expected else 'did NOT find'} exactly the {len(DRIFTED)} drifted features)")
    print(f"vs stat test alone   {bare / ours:>9.1f}x   ({SERVER_BATCH}-row batches {bare / ours_batched:.1f}x; "
          "for scale: binning + PSI only)")
    print(f"vs fastest preset    {ratio:>9.1f}x   ({SERVER_BATCH}-row batches {fastest / ours_batched:.1f}x)")
    verdict = "meets" if ratio >= GOAL and agree else "MISSES"
    print(f"speed-up             {ratio:>9.1f}x   fastest Evidently preset / Kultivar ({counted}); {verdict} the "
          f"goal >= {GOAL:.0f}x with the same verdicts")
    return 0 if ratio >= GOAL and agree else 2


if __name__ == "__main__":
    sys.exit(main())
