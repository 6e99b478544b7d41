"""Dataset validation: schema and quality checks, the canonical content digest, the reference profile, and the
immutable snapshot that training reads.

Canonical form. Validation converts the data to one representation that does not depend on the file format:
the feature columns sorted by name, then the target; numeric and boolean features as float64 (booleans as
0.0/1.0, missing as NaN); categorical features as text (numbers normalised as in
:func:`kultivar.domain.profile.normalize_category`, so 1, 1.0 and "1" agree; missing as None); a regression
target as float64; a classification target as int64 when its values are whole numbers, else as text. The
snapshot stores this form, training reads it back, and the digest is computed over it.

Digest. ``sha256`` over a versioned header line (row count, column names and kinds) followed by the sha256 of
each column in canonical order; a numeric column hashes as little-endian float64 (one NaN bit pattern, -0.0 as
0.0; integers hash like the equal float), a text column as its int64 byte lengths (-1 for missing) followed by its
UTF-8 bytes. The same data
read from CSV, Parquet or JSON lines, or with the columns in another order, gives the same digest. Row order
DOES matter: reordering rows is a new version (it changes the train/test split, so it changes the model).
Columns that are not features or the target do not enter the digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import posixpath
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pandas.api import types as ptypes

from kultivar.api.contracts import FailureResult, FeatureRef, FeatureSummary, ValidationResult
from kultivar.api.dataset import DatasetChecks, DatasetSchema, DatasetSpec, Feature
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
from kultivar.workloads.data import SourceUnreadable, load_source
from kultivar.workloads.storage import ArtifactExists, ArtifactStore, Staged, dataset_prefix

log = logging.getLogger("kultivar.workloads")

DIGEST_FORMAT = b"kultivar-canonical-v1\n"
SNAPSHOT_NAME = "snapshot.arrow"  # Arrow IPC file (Feather v2): pyarrow.ipc.open_file or pandas.read_feather
LEGACY_SNAPSHOT_SUFFIX = ".parquet"  # snapshots written before the switch to Arrow IPC; training still reads them
SNAPSHOT_FORMAT_KEY = b"kultivar.io/snapshot"
SNAPSHOT_FORMAT = b"canonical-v1"
PROFILE_NAME = "profile.json"
MAX_REPORTED_FAILURES = 20

_TRUE = frozenset({"true", "t", "yes", "y", "1", "1.0"})
_FALSE = frozenset({"false", "f", "no", "n", "0", "0.0"})


# ---------------------------------------------------------------------------------------------- features


def as_features(items: Iterable[Feature | FeatureRef | Mapping[str, Any]]) -> list[Feature]:
    """Features from API objects, the training pod's inputs, or plain ``{name, type}`` dicts."""
    out = []
    for item in items:
        if isinstance(item, Feature):
            out.append(item)
        elif isinstance(item, FeatureRef):
            out.append(Feature(name=item.name, type=item.type, nullable=True))
        else:
            out.append(Feature(name=str(item["name"]), type=item["type"], nullable=True))
    return out


def infer_type(series: pd.Series) -> str:
    if ptypes.is_bool_dtype(series):
        return "boolean"
    if ptypes.is_numeric_dtype(series):
        return "numeric"
    return "categorical"


def resolve_features(df: pd.DataFrame, schema: DatasetSchema) -> list[Feature]:
    """The declared features, or when none are declared every column but the target with inferred types.

    Inferred features are nullable: a user who declared nothing has not asked for non-null columns; the
    ``maxMissingFraction`` check still applies.
    """
    if schema.features:
        return list(schema.features)
    return [Feature(name=str(c), type=infer_type(df[c]), nullable=True) for c in df.columns if c != schema.target]


def canonical_columns(features: Sequence[Feature], target: str) -> list[str]:
    return [*sorted(f.name for f in features), target]


# --------------------------------------------------------------------------------------------- reporting


@dataclass
class Failure:
    check: str
    message: str
    column: str | None = None
    count: int | None = None
    example: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class ValidationReport:
    rows: int
    features: list[Feature]
    failures: list[Failure] = field(default_factory=list)
    frame: pd.DataFrame | None = None  # canonical form; set when every check passed
    missing: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures

    def message(self) -> str:
        shown = self.failures[:MAX_REPORTED_FAILURES]
        text = "; ".join(f"{f.check}: {f.message}" for f in shown)
        if len(self.failures) > len(shown):
            text += f"; and {len(self.failures) - len(shown)} more failures"
        return text


def _example(value: Any) -> str:
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= 60 else text[:57] + "..."


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _pct(count: int, rows: int) -> str:
    return f"{100.0 * count / rows:.1f}%" if rows else "0%"


# -------------------------------------------------------------------------------------------- coercion


def float_values(s: pd.Series) -> np.ndarray:
    """float64 values of a numeric column with NaN for missing; its own buffer when it is float64 already.

    No copy for the common case: the canonical frame and the training inputs share the loaded column's memory
    instead of copying every numeric column (nothing writes to these arrays).
    """
    if s.dtype == np.float64:
        return s.to_numpy()
    return s.to_numpy(dtype=np.float64, na_value=np.nan)


def _numeric(s: pd.Series) -> tuple[np.ndarray, np.ndarray | None]:
    """float64 values and the mask of present values that are not numbers (None when there are none)."""
    if ptypes.is_bool_dtype(s) or ptypes.is_numeric_dtype(s):
        return float_values(s), None
    conv = pd.to_numeric(s, errors="coerce")
    values = conv.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isnan(values) & s.notna().to_numpy()
    return values, (bad if bad.any() else None)


def _boolean(s: pd.Series) -> tuple[np.ndarray, np.ndarray | None]:
    if ptypes.is_bool_dtype(s):
        return s.to_numpy(dtype=np.float64, na_value=np.nan), None
    if ptypes.is_numeric_dtype(s):
        values = s.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isnan(values) & (values != 0.0) & (values != 1.0)
        return values, (bad if bad.any() else None)
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    mapped = np.empty(len(uniques) + 1, dtype=np.float64)
    for i, u in enumerate(uniques):
        text = str(u).strip().lower()
        mapped[i] = 1.0 if text in _TRUE else 0.0 if text in _FALSE else np.nan
    mapped[-1] = np.nan  # code -1 (missing) indexes the last slot
    values = mapped[codes]
    bad = np.isnan(values) & (codes >= 0)
    return values, (bad if bad.any() else None)


# Canonical text: Arrow-backed strings. Counting, hashing and snapshot writing work on the Arrow buffers directly;
# a column of Python str objects would cost a conversion at each of those steps.
STRING = pd.StringDtype("pyarrow")


def _is_text(s: pd.Series) -> bool:
    if ptypes.is_string_dtype(s) and not ptypes.is_object_dtype(s):
        return True
    return ptypes.is_object_dtype(s) and pd.api.types.infer_dtype(s, skipna=True) in ("string", "empty")


def _categorical(s: pd.Series) -> pd.Series:
    """Normalised category strings (Arrow-backed), missing as NA."""
    if _is_text(s):
        return s.astype(STRING)
    # Map each distinct value once: normalisation is per value, the column may have millions of rows.
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    keys = pa.array([normalize_category(u) for u in uniques], type=pa.large_string())
    indices = pa.array(codes, mask=codes < 0, type=pa.int64())
    decoded = pa.DictionaryArray.from_arrays(indices, keys).dictionary_decode()
    return pd.Series(pd.arrays.ArrowStringArray(decoded), index=s.index).astype(STRING)


def _target(s: pd.Series, task: str) -> tuple[Any, np.ndarray | None]:
    if task == "regression":
        return _numeric(s)
    if ptypes.is_bool_dtype(s) and not s.isna().any():
        return s.to_numpy(dtype=np.int64), None
    if isinstance(s.dtype, np.dtype) and s.dtype.kind in "iu":
        # Integer labels as they are (no float round trip, no copy when already int64), unless some are too large
        # to be exact as floats, which the general path below turns into text.
        values = s.to_numpy()
        if not len(values) or (values.min() > -2**53 and values.max() < 2**53):
            return values.astype(np.int64, copy=False), None
    if ptypes.is_numeric_dtype(s):
        values = s.to_numpy(dtype=np.float64, na_value=np.nan)
        present = values[~np.isnan(values)]
        if present.size == values.size and np.all(present == np.floor(present)) and np.all(np.abs(present) < 2**53):
            return values.astype(np.int64), None
    return _categorical(s), None


def coerce_frame(df: pd.DataFrame, features: Sequence[Feature], target: str, task: str
                 ) -> tuple[pd.DataFrame, list[Failure]]:
    """The canonical form of the feature and target columns present in ``df``, and type mismatches found."""
    failures: list[Failure] = []
    columns: dict[str, Any] = {}
    by_name = {f.name: f for f in features}
    rows = len(df)
    for name in canonical_columns(features, target):
        if name not in df.columns:
            continue
        s = df[name].reset_index(drop=True)
        if name == target and name not in by_name:
            values, bad = _target(s, task)
            kind = "numeric (regression target)"
            fix = "clean the target column or change spec.schema.task"
        else:
            ftype = by_name[name].type
            if ftype == "numeric":
                values, bad = _numeric(s)
                fix = f"fix those values or declare {name!r} as categorical in spec.schema.features"
            elif ftype == "boolean":
                values, bad = _boolean(s)
                fix = (f"use true/false, yes/no or 1/0, or declare {name!r} as categorical in "
                       "spec.schema.features")
            else:
                values, bad = _categorical(s), None
                fix = ""
            kind = ftype
        if bad is not None:
            count = int(bad.sum())
            row = _first(bad)
            example = _example(s.iloc[row])
            failures.append(Failure(
                "TypeMismatch",
                f"column {name!r} should be {kind} but {count} of {rows} values are not "
                f"(e.g. {example} at row {row}, counting from 0); {fix}",
                column=name, count=count, example=example,
            ))
        columns[name] = values.array if isinstance(values, pd.Series) else values
    return pd.DataFrame(columns, index=pd.RangeIndex(rows), copy=False), failures


# ------------------------------------------------------------------------------------------- validation


def validate(df: pd.DataFrame, schema: DatasetSchema, checks: DatasetChecks) -> ValidationReport:
    """Run every check; the report lists all failures (not just the first) so one fix round is enough."""
    rows = len(df)
    features = resolve_features(df, schema)
    report = ValidationReport(rows=rows, features=features)
    fail = report.failures.append
    target = schema.target
    names = [f.name for f in features]

    if target in names:
        fail(Failure("TargetListedAsFeature",
                     f"the target {target!r} is also listed in spec.schema.features; remove it from the features",
                     column=target))
    if rows < checks.minRows:
        fail(Failure("TooFewRows",
                     f"the data has {rows} rows but spec.checks.minRows is {checks.minRows}; add data or lower "
                     "minRows", count=rows))
    if target not in df.columns:
        fail(Failure("MissingTarget",
                     f"the target column {target!r} is not in the data (columns: {_cols(df.columns)}); fix "
                     "spec.schema.target or the data", column=target))
    for name in names:
        if name not in df.columns:
            fail(Failure("MissingColumn",
                         f"feature column {name!r} is not in the data (columns: {_cols(df.columns)}); fix the "
                         "name in spec.schema.features or add the column", column=name))
    if schema.features and not checks.allowExtraColumns:
        extra = [c for c in df.columns if c not in set(names) | {target}]
        if extra:
            fail(Failure("UnexpectedColumns",
                         f"{len(extra)} columns are not declared in spec.schema.features: {_cols(extra)}; declare "
                         "them, drop them from the data, or set spec.checks.allowExtraColumns: true",
                         count=len(extra), example=extra[0]))
    if not [n for n in names if n != target]:
        fail(Failure("NoFeatures", "there are no feature columns besides the target; add columns to the data "
                                   "or list them in spec.schema.features"))

    present_features = [f for f in features if f.name in df.columns and f.name != target]
    frame, mismatches = coerce_frame(df, present_features, target, schema.task)
    report.failures.extend(mismatches)
    mismatched = {f.column for f in mismatches}

    for feat in present_features:
        name = feat.name
        raw_missing = df[name].isna().to_numpy()
        n_missing = int(raw_missing.sum())
        report.missing[name] = n_missing / rows if rows else 0.0
        if n_missing and not feat.nullable:
            row = _first(raw_missing)
            fail(Failure("NullsNotAllowed",
                         f"column {name!r} has {n_missing} missing values ({_pct(n_missing, rows)} of {rows} rows, "
                         f"first at row {row}, counting from 0) but is not nullable; fill or drop those rows, or "
                         f"set nullable: true for {name!r} in spec.schema.features", column=name, count=n_missing))
        if report.missing[name] > checks.maxMissingFraction:
            fail(Failure("TooManyMissing",
                         f"column {name!r} is {_pct(n_missing, rows)} missing ({n_missing} of {rows} rows), above "
                         f"spec.checks.maxMissingFraction {checks.maxMissingFraction}; fill the gaps, drop the "
                         "column, or raise maxMissingFraction", column=name, count=n_missing))
        if name in mismatched:
            continue
        if feat.type == "numeric":
            _check_range(report, feat, frame[name].to_numpy(), df[name], rows)
        if feat.type == "categorical" and feat.allowed is not None:
            _check_allowed(report, feat, frame[name], df[name], rows)

    if target in df.columns:
        _check_target(report, schema, frame[target] if target in frame else df[target], df[target], rows)

    if checks.maxDuplicateFraction < 1.0 and rows and target in frame.columns:
        # Hash rows instead of comparing them: one uint64 per row keeps this linear and cheap on wide data.
        hashed = pd.util.hash_pandas_object(frame, index=False)
        dup = hashed.duplicated().to_numpy()
        n_dup = int(dup.sum())
        if n_dup / rows > checks.maxDuplicateFraction:
            row = _first(dup)
            fail(Failure("TooManyDuplicates",
                         f"{n_dup} of {rows} rows ({_pct(n_dup, rows)}) repeat an earlier row (first at row {row}, "
                         f"counting from 0), above spec.checks.maxDuplicateFraction {checks.maxDuplicateFraction}; "
                         "deduplicate the data or raise maxDuplicateFraction", count=n_dup))

    if report.ok:
        report.frame = frame
    return report


def _cols(columns: Iterable[Any], limit: int = 12) -> str:
    cols = [str(c) for c in columns]
    shown = ", ".join(repr(c) for c in cols[:limit])
    return shown + (f", ... ({len(cols)} in all)" if len(cols) > limit else "")


def _check_range(report: ValidationReport, feat: Feature, values: np.ndarray, raw: pd.Series, rows: int) -> None:
    infinite = np.isinf(values)
    if infinite.any():
        # No bound admits infinity and no estimator can fit it: refuse it here rather than fail in training.
        count, row = int(infinite.sum()), _first(infinite)
        report.failures.append(Failure(
            "ValueOutOfRange",
            f"column {feat.name!r} has {count} of {rows} infinite values (e.g. {_example(raw.iloc[row])} at row "
            f"{row}, counting from 0); replace them with finite numbers or leave them empty (missing)",
            column=feat.name, count=count, example=_example(raw.iloc[row]),
        ))
        return
    if feat.minimum is None and feat.maximum is None:
        return
    with np.errstate(invalid="ignore"):
        low = values < feat.minimum if feat.minimum is not None else np.zeros(len(values), bool)
        high = values > feat.maximum if feat.maximum is not None else np.zeros(len(values), bool)
    bad = low | high
    count = int(bad.sum())
    if not count:
        return
    row = _first(bad)
    bounds = (f"[{feat.minimum if feat.minimum is not None else '-inf'}, "
              f"{feat.maximum if feat.maximum is not None else 'inf'}]")
    example = _example(raw.iloc[row])
    report.failures.append(Failure(
        "ValueOutOfRange",
        f"column {feat.name!r} has {count} of {rows} values outside {bounds} (e.g. {example} at row {row}, "
        f"counting from 0); fix the data or widen minimum/maximum for {feat.name!r} in spec.schema.features",
        column=feat.name, count=count, example=example,
    ))


def _check_allowed(report: ValidationReport, feat: Feature, values: pd.Series, raw: pd.Series, rows: int) -> None:
    allowed = {normalize_category(a) for a in feat.allowed or []}
    present = values.notna().to_numpy()
    bad = present & ~values.isin(allowed).to_numpy()
    count = int(bad.sum())
    if not count:
        return
    unknown = pd.unique(values[bad])
    row = _first(bad)
    example = _example(raw.iloc[row])
    shown = ", ".join(repr(u) for u in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
    report.failures.append(Failure(
        "UnknownCategory",
        f"column {feat.name!r} has {count} of {rows} values not in its allowed list ({len(unknown)} distinct: "
        f"{shown}; e.g. {example} at row {row}, counting from 0); fix the data or add them to allowed for "
        f"{feat.name!r} in spec.schema.features",
        column=feat.name, count=count, example=example,
    ))


def _check_target(report: ValidationReport, schema: DatasetSchema, values: pd.Series, raw: pd.Series,
                  rows: int) -> None:
    name = schema.target
    missing = raw.isna().to_numpy()
    n_missing = int(missing.sum())
    if n_missing:
        report.failures.append(Failure(
            "NullsNotAllowed",
            f"the target column {name!r} has {n_missing} missing values ({_pct(n_missing, rows)} of {rows} rows, "
            f"first at row {_first(missing)}, counting from 0); drop those rows: a model cannot learn from rows "
            "without a target", column=name, count=n_missing))
    if schema.task == "classification" and rows:
        classes = pd.unique(values.dropna())
        if len(classes) < 2:
            report.failures.append(Failure(
                "TooFewClasses",
                f"the target column {name!r} has {len(classes)} distinct value(s) "
                f"({', '.join(_example(c) for c in classes[:3])}); classification needs at least 2 classes: add "
                "data of other classes or use task: regression", column=name, count=len(classes)))


# ----------------------------------------------------------------------------------------------- digest


def _digest_kind(values: np.ndarray | pd.Series) -> str:
    dtype = values.dtype
    return "f8" if dtype.kind in "fiub" else "str"


# Columns are hashed in steps of this many values through a buffer each hashing thread keeps: normalising a whole
# column first would allocate a copy of it, and fresh memory costs a page fault per 4 KiB (on some virtual machines
# more than the hashing itself). A step's values also stay in the CPU cache between normalising and hashing.
HASH_STEP = 1 << 16
_hash_buffers = threading.local()


def _hash_buffer(dtype: str) -> np.ndarray:
    buffers: dict[str, np.ndarray] | None = getattr(_hash_buffers, "buffers", None)
    if buffers is None:
        buffers = _hash_buffers.buffers = {}
    if dtype not in buffers:
        buffers[dtype] = np.empty(HASH_STEP, dtype=dtype)
    return buffers[dtype]


def _hash_float(values: np.ndarray) -> bytes:
    """sha256 of the values as little-endian float64, -0.0 as 0.0 and every NaN as the same NaN."""
    h = hashlib.sha256()
    buf = _hash_buffer("<f8")
    for start in range(0, len(values), HASH_STEP):
        part = values[start:start + HASH_STEP]
        step = buf[:len(part)]
        np.add(part, 0.0, out=step)  # to float64 (integers as the equal float) and -0.0 to 0.0, in the buffer
        step[np.isnan(step)] = np.nan  # one NaN bit pattern whatever produced the NaN
        h.update(step.data)
    return h.digest()


def _hash_text(values: pd.Series) -> bytes:
    h = hashlib.sha256()
    arr = pa.array(values, type=pa.large_string(), from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype="<i8")[arr.offset: arr.offset + n + 1]
    missing = arr.is_null().to_numpy(zero_copy_only=False) if arr.null_count else None
    buf = _hash_buffer("<i8")
    for start in range(0, n, HASH_STEP):
        stop = min(start + HASH_STEP, n)
        lengths = buf[:stop - start]
        np.subtract(offsets[start + 1:stop + 1], offsets[start:stop], out=lengths)
        if missing is not None:
            lengths[missing[start:stop]] = -1
        h.update(lengths.data)
    data = arr.buffers()[2]
    if data is not None and n:
        h.update(memoryview(data)[int(offsets[0]): int(offsets[-1])])
    return h.digest()


def _column_digest(column: pd.Series, kind: str) -> bytes:
    if kind == "f8":
        # Plain numpy columns (floats, integers, booleans) are converted step by step while hashing; others
        # (nullable extension types) need their missing values turned into NaN first.
        values = column.to_numpy() if isinstance(column.dtype, np.dtype) else float_values(column)
        return _hash_float(values)
    return _hash_text(column)


def digest_canonical(frame: pd.DataFrame, features: Sequence[Feature], target: str) -> str:
    """Digest of a frame already in canonical form (as :func:`coerce_frame` returns it)."""
    order = canonical_columns(features, target)
    kinds = [_digest_kind(frame[c]) for c in order]
    header = {"rows": len(frame), "columns": [[c, k] for c, k in zip(order, kinds, strict=True)]}
    # One sha256 per column, combined: the columns hash in parallel (hashlib releases the GIL), and a later
    # version can tell which columns changed between two versions of a dataset.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="digest") as pool:
        parts = list(pool.map(_column_digest, (frame[c] for c in order), kinds))
    h = hashlib.sha256(DIGEST_FORMAT)
    h.update(json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode() + b"\n")
    for part in parts:
        h.update(part)
    return "sha256:" + h.hexdigest()


def canonical_digest(df: pd.DataFrame, features: Iterable[Feature | Mapping[str, Any]], target: str,
                     task: str | None = None) -> str:
    """Content digest of the features and target of ``df`` in any representation (see the module docstring)."""
    feats = as_features(features)
    if task is None:
        task = "regression" if ptypes.is_numeric_dtype(df[target]) else "classification"
    frame, failures = coerce_frame(df, feats, target, task)
    if failures:
        raise ValueError("cannot digest data that does not match its schema: " + failures[0].message)
    missing = [c for c in canonical_columns(feats, target) if c not in frame.columns]
    if missing:
        raise ValueError(f"cannot digest: columns {missing} are not in the data")
    return digest_canonical(frame, feats, target)


# ---------------------------------------------------------------------------------------------- profile


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


# ------------------------------------------------------------------------------------------- the workload


def read_snapshot(store: ArtifactStore, uri: str) -> pd.DataFrame:
    """A snapshot as written by :func:`write_snapshot`, text columns Arrow-backed as in the canonical form.

    Arrow IPC snapshots load without decoding: the numeric columns are read-only views of the file's buffers
    (copy the frame to modify it). Snapshots written as Parquet by earlier versions (``snapshot.parquet``) are
    still read.
    """
    mapping = {pa.string(): STRING, pa.large_string(): STRING}
    if uri.split("?", 1)[0].endswith(LEGACY_SNAPSHOT_SUFFIX):
        with store.open(uri) as f:
            table = pq.read_table(f)
    else:
        local = store.local_path(uri)
        if local is not None:
            # Read into memory rather than memory-mapped: training verifies the digest of exactly the bytes it
            # then uses, which a mapping of a file that someone rewrites in place would not guarantee. Reading
            # costs about as much as the page faults of a mapping, since every byte is hashed anyway.
            with pa.OSFile(local) as f:
                table = pa.ipc.open_file(f).read_all()
        else:
            table = pa.ipc.open_file(pa.py_buffer(store.read_bytes(uri))).read_all()
    # One block per column: numeric columns are used as Arrow holds them instead of being copied into a 2-D
    # block first (a copy of the whole snapshot).
    return table.to_pandas(types_mapper=mapping.get, split_blocks=True)


def snapshot_table(frame: pd.DataFrame) -> pa.Table:
    """The canonical frame as an Arrow table: one chunk per column, missing numbers as NaN, not as nulls."""
    columns: dict[str, Any] = {}
    for name in frame.columns:
        values = frame[name].array
        if isinstance(values, pd.arrays.NumpyExtensionArray):
            # NaN stays a value (from_pandas=False): no validity bitmap, so the reader gets a float column back
            # without converting nulls to NaN, which would copy it.
            columns[str(name)] = pa.array(values.to_numpy(), from_pandas=False)
        else:
            columns[str(name)] = pa.array(values, type=pa.large_string(), from_pandas=True)
    # One record batch: a column in several chunks would be concatenated (copied) again when it is read.
    table = pa.table(columns).combine_chunks()
    return table.replace_schema_metadata({SNAPSHOT_FORMAT_KEY: SNAPSHOT_FORMAT})


def _snapshot_writer(frame: pd.DataFrame) -> Callable[[Any], None]:
    def produce(f: Any) -> None:
        # Converted here rather than up front, so that it runs on the writer's thread too (it is cheap: the
        # columns are shared with the frame, not copied).
        table = snapshot_table(frame)
        # Arrow IPC (the Feather v2 file format), uncompressed: writing is a copy of the buffers and reading needs
        # no decoding, where Parquet cost about 0.5 CPU-s to encode and 0.25 CPU-s to decode per million rows of
        # twenty features. The price is size: random floats shrink little either way, but text, booleans and
        # integer labels are stored plainly (1.3x the Parquet file for bench/bench_training.py's data).
        with pa.ipc.new_file(pa.PythonFile(f, mode="w"), table.schema) as writer:
            writer.write_table(table)

    return produce


def _stage_snapshot(store: ArtifactStore, directory: str, frame: pd.DataFrame) -> Staged:
    # Not hashed: the snapshot's name is the digest of its data (see _commit_snapshot), and hashing its bytes as
    # well would cost as much as a second content digest.
    return store.stage_stream(directory, _snapshot_writer(frame), hashed=False)


def _commit_snapshot(store: ArtifactStore, staged: Staged, relpath: str) -> str:
    """Move the staged snapshot to its content address; returns its URI."""
    if not store.commit_addressed(staged, relpath):
        # The path is keyed by the canonical digest, so the existing file holds the same data; its bytes can
        # differ only when another pyarrow/pandas version wrote it. Keep the first one.
        log.info("snapshot %s already exists (written by an earlier run); reusing it", store.uri_for(relpath))
    return store.uri_for(relpath)


def _discard_staging(store: ArtifactStore, staging: Future[Staged]) -> None:
    # When the write itself failed, it already removed its temporary file.
    with contextlib.suppress(Exception):
        store.discard_staged(staging.result())


def write_snapshot(store: ArtifactStore, relpath: str, frame: pd.DataFrame) -> str:
    """Write the canonical frame as an Arrow IPC file at ``relpath``, a path named by the frame's canonical
    digest; an existing snapshot there is reused. Returns the snapshot's URI."""
    return _commit_snapshot(store, _stage_snapshot(store, posixpath.dirname(relpath), frame), relpath)


def run_validation(spec: DatasetSpec, namespace: str, name: str, store: ArtifactStore) -> dict[str, Any]:
    """Load, validate, digest, profile and snapshot the source; the result goes to the termination message."""
    schema = spec.schema_
    timings: dict[str, float] = {}
    t = time.perf_counter()
    log.info("reading %s", spec.source.uri)
    try:
        df = load_source(spec.source, schema)
    except SourceUnreadable as e:
        return FailureResult(reason="SourceUnreadable", message=str(e), retryable=e.transient).wire()
    timings["load"] = time.perf_counter() - t
    log.info("read %d rows x %d columns in %.2fs", len(df), df.shape[1], timings["load"])

    t = time.perf_counter()
    report = validate(df, schema, spec.checks)
    timings["validate"] = time.perf_counter() - t
    if not report.ok:
        log.info("validation failed: %s", report.message())
        return FailureResult(reason="DataValidationFailed", check=report.failures[0].check, message=report.message(),
                             failures=[f.to_dict() for f in report.failures[:MAX_REPORTED_FAILURES]]).wire()
    assert report.frame is not None
    frame = report.frame
    del df  # the canonical frame is all we need from here; free the raw copy for big data
    features = [f for f in report.features if f.name != schema.target]
    log.info("all checks passed in %.2fs", timings["validate"])

    # The snapshot's path contains the digest, but writing it (I/O and compression in pyarrow) need not wait for
    # the digest and profile (hashing and sorting in C): stage it under a hidden name in the dataset's directory
    # while they are computed, then move it into place. All three release the GIL, so they use both cores.
    t = time.perf_counter()
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot")
    staging = writer.submit(_stage_snapshot, store, f"{namespace}/datasets/{name}", frame)
    try:
        t0 = time.perf_counter()
        digest = digest_canonical(frame, features, schema.target)
        timings["digest"] = time.perf_counter() - t0
        log.info("content digest %s (%.2fs)", digest, timings["digest"])
        t0 = time.perf_counter()
        profile = build_profile(frame, features, schema.target, schema.task)
        timings["profile"] = time.perf_counter() - t0
        staged = staging.result()
    except BaseException:
        _discard_staging(store, staging)
        raise
    finally:
        writer.shutdown(wait=False)

    prefix = dataset_prefix(namespace, name, digest)
    snapshot_uri = _commit_snapshot(store, staged, prefix + SNAPSHOT_NAME)
    profile_bytes = profile.model_dump_json(exclude_none=True).encode()
    try:
        profile_ref = dict(store.write_once(prefix + PROFILE_NAME, profile_bytes))
    except ArtifactExists as e:
        # Same data, profile written by another Kultivar version: the first profile stays the baseline.
        log.info("profile %s already exists; keeping it", e.uri)
        profile_ref = {"uri": e.uri}
    # Only the part of the write that did not overlap the digest and profile.
    timings["write"] = time.perf_counter() - t - timings["digest"] - timings["profile"]
    log.info("wrote snapshot %s and profile %s", snapshot_uri, profile_ref["uri"])

    return ValidationResult(
        digest=digest,
        rows=len(frame),
        columns=frame.shape[1],
        snapshotUri=snapshot_uri,
        profileUri=profile_ref["uri"],
        features=[FeatureSummary(name=f.name, type=f.type, missingFraction=round(report.missing.get(f.name, 0.0), 6))
                  for f in features],
        timings={k: round(v, 3) for k, v in timings.items()},
    ).wire()
