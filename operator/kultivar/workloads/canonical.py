"""The canonical form of a dataset, and its content digest.

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

import hashlib
import json
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pandas.api import types as ptypes

from kultivar.api.contracts import FeatureRef
from kultivar.api.dataset import Feature
from kultivar.domain.profile import FALSE_WORDS, TRUE_WORDS, normalize_category

DIGEST_FORMAT = b"kultivar-canonical-v1\n"

# Canonical text: Arrow-backed strings. Counting, hashing and snapshot writing work on the Arrow buffers directly;
# a column of Python str objects would cost a conversion at each of those steps.
STRING = pd.StringDtype("pyarrow")


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


def canonical_columns(features: Sequence[Feature], target: str) -> list[str]:
    return [*sorted(f.name for f in features), target]


@dataclass
class Failure:
    check: str
    message: str
    column: str | None = None
    count: int | None = None
    example: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def example_text(value: Any) -> str:
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= 60 else text[:57] + "..."


def first_index(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


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
        mapped[i] = 1.0 if text in TRUE_WORDS else 0.0 if text in FALSE_WORDS else np.nan
    mapped[-1] = np.nan  # code -1 (missing) indexes the last slot
    values = mapped[codes]
    bad = np.isnan(values) & (codes >= 0)
    return values, (bad if bad.any() else None)


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
            row = first_index(bad)
            example = example_text(s.iloc[row])
            failures.append(Failure(
                "TypeMismatch",
                f"column {name!r} should be {kind} but {count} of {rows} values are not "
                f"(e.g. {example} at row {row}, counting from 0); {fix}",
                column=name, count=count, example=example,
            ))
        columns[name] = values.array if isinstance(values, pd.Series) else values
    return pd.DataFrame(columns, index=pd.RangeIndex(rows), copy=False), failures


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


def canonical_frame_digest(frame: pd.DataFrame, features: Sequence[Feature], target: str) -> str:
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
